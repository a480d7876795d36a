"""The training loop: precision schedule, loss scaling, non-finite steps, evaluation, exact resume."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint, distributed, losses, profiling
from .config import RunConfig
from .data import OperatorDataset, UnitGaussianNormalizer
from .precision import SAFER, Precision, PrecisionSchedule, at_least
from .reporting import MetricsLog


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite values in full precision, say)."""


class NormalizedOperator(nn.Module):
    """A neural operator between normalised fields: ``decode(operator(encode(x)))``.

    The normalisers are fitted on the training split and saved with the weights.
    """

    def __init__(self, operator: nn.Module, inputs: UnitGaussianNormalizer, outputs: UnitGaussianNormalizer):
        super().__init__()
        self.operator, self.inputs, self.outputs = operator, inputs, outputs

    @property
    def precision(self) -> Precision:
        return self.operator.precision

    def set_precision(self, precision) -> Precision:
        return self.operator.set_precision(precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs.decode(self.operator(self.inputs.encode(x)))


class Batches:
    """Mini-batches of a dataset held in memory; this process's share of each global batch."""

    def __init__(self, dataset: OperatorDataset, batch_size: int, device: torch.device, desc: str = "",
                 context: distributed.Context = distributed.SINGLE_PROCESS):
        pairs = [dataset[i] for i in tqdm(range(len(dataset)), desc=f"loading {desc}", unit="sample",
                                          leave=False, disable=None if context.main else True)]
        self.x = torch.stack([x for x, _ in pairs]).to(device)
        self.y = torch.stack([y for _, y in pairs]).to(device)
        self.batch_size, self.context = batch_size, context

    def __len__(self) -> int:
        return len(distributed.rank_batches(len(self.x), self.batch_size, None, self.context))

    def iterate(self, seed: int | None = None):
        """``(x, y, global batch size)``, shuffled by ``seed`` (``None``: in order)."""
        for index, total in distributed.rank_batches(len(self.x), self.batch_size, seed, self.context):
            index = index.to(self.x.device)
            yield self.x[index], self.y[index], total


class LazyBatches:
    """The same batches read from disk by DataLoader workers (data sets larger than the memory limit)."""

    def __init__(self, dataset: OperatorDataset, batch_size: int, device: torch.device,
                 context: distributed.Context = distributed.SINGLE_PROCESS, workers: int = 2):
        self.dataset, self.batch_size, self.device, self.context, self.workers = \
            dataset, batch_size, device, context, workers

    def __len__(self) -> int:
        return len(distributed.rank_batches(len(self.dataset), self.batch_size, None, self.context))

    def iterate(self, seed: int | None = None):
        shares = distributed.rank_batches(len(self.dataset), self.batch_size, seed, self.context)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=[i.tolist() for i, _ in shares],
                                             num_workers=self.workers)
        for (x, y), (_, total) in zip(loader, shares):
            yield x.to(self.device), y.to(self.device), total


def batches_for(dataset: OperatorDataset, batch_size: int, device: torch.device, limit_gb: float, desc: str,
                context: distributed.Context = distributed.SINGLE_PROCESS):
    x_shape, y_shape = dataset.shapes
    size_gb = len(dataset) * (math.prod(x_shape) + math.prod(y_shape)) * 4 / 2**30
    if size_gb <= limit_gb:
        return Batches(dataset, batch_size, device, desc, context)
    return LazyBatches(dataset, batch_size, device, context)


@torch.no_grad()
def evaluate(model: nn.Module, test_batches: dict, eval_losses: dict) -> dict[str, dict[str, float]]:
    """``{test set: {loss name: mean over samples}}`` of ``model`` in its current precision.

    With several processes, each evaluates its share and the sums are all-reduced.
    """
    model.eval()
    device = next(model.parameters()).device
    results = {}
    for name, batches in test_batches.items():
        sums, count = [0.0] * len(eval_losses), 0
        for x, y, _ in batches.iterate():
            prediction = model(x)
            for i, loss in enumerate(eval_losses.values()):
                sums[i] += loss(prediction, y).item() * len(x)
            count += len(x)
        *sums, count = distributed.sum_everywhere([*sums, float(count)], device)
        results[name] = {loss_name: value / count for loss_name, value in zip(eval_losses, sums)}
    return results


class Trainer:
    """Trains a :class:`NormalizedOperator` following a :class:`RunConfig`.

    * the precision follows the schedule (``config.precision``), raised to a floor
      after ``config.nonfinite_patience`` consecutive non-finite steps
      (half → mixed → full); every change is logged in :attr:`history`;
    * float16 phases use ``torch.amp.GradScaler``; bfloat16 and full do not;
    * a step whose loss (or, without a scaler, whose gradients) is not finite is
      skipped; the scaler handles overflowing scaled gradients itself;
    * after every epoch: evaluation on each test set with each eval loss, metrics,
      ``checkpoint.pt`` (atomic), and ``best.pt`` by the first test set's first loss.
    """

    def __init__(self, model: NormalizedOperator, train: OperatorDataset, tests: dict[str, OperatorDataset],
                 config: RunConfig, device: torch.device, run_dir: Path | None = None,
                 log: Callable[[str], None] = print):
        self.model, self.config, self.device, self.run_dir = model, config, device, run_dir
        self.context = distributed.current()
        self.log = log if self.context.main else (lambda message: None)
        self.train_batches = batches_for(train, config.batch_size, device, config.in_memory_limit_gb, "train",
                                         self.context)
        self.test_batches = {name: batches_for(ds, config.batch_size, device, config.in_memory_limit_gb, name,
                                               self.context) for name, ds in tests.items()}
        self.parallel = model
        if self.context.world > 1:  # gradients are all-reduced in the parameters' dtype: float32
            self.parallel = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
            self.parallel.register_comm_hook(None, distributed.sum_gradients)
        self.schedule = PrecisionSchedule.parse(config.precision, config.dtype)
        self.loss = losses.build(config.loss, config.periodic)
        self.eval_losses = {name: losses.build(name, config.periodic) for name in config.eval_losses}
        optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if config.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)
        elif config.scheduler == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.step_size, config.gamma)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: 1.0)
        self.scaler = torch.amp.GradScaler(device.type)
        self.epoch = 0
        self.floor: str | None = None  # the least precise mode allowed after escalations
        self.nonfinite_run = 0
        self.history: list[dict] = []
        self.best = {"value": math.inf, "epoch": -1}
        self.metrics = MetricsLog(run_dir, config.tensorboard) if run_dir is not None and self.context.main else None

    # -- one step -------------------------------------------------------------------------
    def _uses_scaler(self, policy: Precision) -> bool:
        return policy.mode != "full" and policy.dtype == "float16"

    def step(self, x: torch.Tensor, y: torch.Tensor, policy: Precision, global_batch: int | None = None) -> float | None:
        """One optimisation step; the loss, or ``None`` if the step was skipped as non-finite.

        With several processes, each loss is weighted by its share of the global
        batch and the gradients are summed, which gives the gradient of the global
        batch's mean loss; a step is skipped everywhere if its loss is not finite
        anywhere.
        """
        self.optimizer.zero_grad(set_to_none=True)
        local = self.loss(self.parallel(x), y)
        if not distributed.everywhere_true(bool(torch.isfinite(local)), self.device):
            return None
        loss = local * (len(x) / (global_batch or len(x)))
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.config.grad_clip or math.inf
        if self._uses_scaler(policy):
            self.scaler.scale(loss).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, max_norm)
            self.scaler.step(self.optimizer)  # skipped by the scaler if the gradients overflowed
            self.scaler.update()
        else:
            loss.backward()
            if not torch.isfinite(torch.nn.utils.clip_grad_norm_(params, max_norm)):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.optimizer.step()
        return local.item()

    def _record(self, epoch: int, step: int, policy: Precision, reason: str) -> None:
        self.history.append({"epoch": epoch, "step": step, "precision": str(policy),
                             "policy": dataclasses.asdict(policy), "reason": reason})

    def _escalate(self, epoch: int, step: int, policy: Precision) -> Precision:
        safer = SAFER[policy.mode]
        if safer is None:
            raise TrainingError(f"{self.nonfinite_run} consecutive non-finite steps in full precision at "
                                f"epoch {epoch}: check the data and lower the learning rate")
        self.floor = safer
        raised = at_least(policy, safer)
        self.model.set_precision(raised)
        self._record(epoch, step, raised, f"{self.nonfinite_run} consecutive non-finite steps")
        self.log(f"epoch {epoch}: {self.nonfinite_run} consecutive non-finite steps in {policy}; "
                 f"raising precision to {raised}")
        self.nonfinite_run = 0
        return raised

    # -- epochs ---------------------------------------------------------------------------
    def policy_for(self, epoch: int) -> Precision:
        return at_least(self.schedule.at(epoch, self.config.epochs), self.floor)

    def train_epoch(self, epoch: int) -> dict:
        policy = self.policy_for(epoch)
        self.model.set_precision(policy)
        if not self.history or self.history[-1]["precision"] != str(policy):
            self._record(epoch, 0, policy, "schedule")
        self.model.train()
        total, count, skipped = 0.0, 0, 0
        bar = tqdm(self.train_batches.iterate(seed=self.config.seed * 100_003 + epoch), total=len(self.train_batches),
                   desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch", leave=False,
                   disable=None if self.context.main else True)
        for step, (x, y, global_batch) in enumerate(bar):
            value = self.step(x, y, policy, global_batch)
            if value is None:
                skipped += 1
                self.nonfinite_run += 1
                if self.nonfinite_run >= self.config.nonfinite_patience:
                    policy = self._escalate(epoch, step, policy)
                continue
            self.nonfinite_run = 0
            total += value * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{value:.4f}", precision=str(policy))
        self.scheduler.step()
        return {"precision": str(policy), "train_loss": total / count if count else math.nan, "skipped_steps": skipped}

    def evaluate(self) -> dict[str, dict[str, float]]:
        """``{test set: {loss name: mean over samples}}`` in the model's current precision."""
        return evaluate(self.model, self.test_batches, self.eval_losses)

    def fit(self) -> dict:
        """Train from :attr:`epoch` to ``config.epochs``; returns the last epoch's evaluation."""
        results = {}
        epochs = range(self.epoch, self.config.epochs)
        for epoch in tqdm(epochs, desc="training", unit="epoch", disable=None if self.context.main else True,
                          initial=self.epoch, total=self.config.epochs):
            start = time.perf_counter()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            results = self.evaluate()
            row["seconds"] = time.perf_counter() - start
            for name, values in results.items():
                for loss_name, value in values.items():
                    row[f"{name}/{loss_name}"] = value
            self.epoch = epoch + 1
            if results:
                first = next(iter(results.values()))
                value = next(iter(first.values()))
                if value < self.best["value"]:
                    self.best = {"value": value, "epoch": epoch + 1}
                    self.save("best.pt")
            self.save("checkpoint.pt")
            if self.metrics is not None:
                self.metrics.append(row)
        return results

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "floor": self.floor,
            "nonfinite_run": self.nonfinite_run,
            "history": self.history,
            "best": self.best,
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "config": self.config.to_dict(),
            "operator": {"in_channels": self.model.operator.in_channels,
                         "out_channels": self.model.operator.out_channels,
                         "n_modes": list(self.model.operator.n_modes)},
        }

    def save(self, name: str) -> None:
        """Write a checkpoint atomically (process 0 only)."""
        if self.run_dir is None or not self.context.main:
            return
        state = self.state()
        if not checkpoint.all_finite(state["model"]):
            raise TrainingError("the weights hold NaN or inf; refusing to save them")
        checkpoint.save(state, self.run_dir / name)

    def load_state(self, state: dict) -> None:
        """Continue exactly where ``state`` (from :meth:`state`) left off."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.floor, self.nonfinite_run = state["epoch"], state["floor"], state["nonfinite_run"]
        self.history, self.best = list(state["history"]), dict(state["best"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.metrics is not None:
            self.metrics.truncate(self.epoch)

    def peak_memory_bytes(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return profiling.peak_rss_bytes()
