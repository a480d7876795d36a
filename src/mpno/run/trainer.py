"""The training loop: precision schedule, loss scaling, non-finite steps, evaluation, exact resume."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..nn.normalized import NormalizedOperator
from ..precision import SAFER, Precision, PrecisionSchedule, at_least, compiled
from . import checkpoint, distributed, profiling
from .step import Objective, TrainStep
from .evaluation import evaluate
from .reporting import MetricsLog, epoch_line


#: A switch between precision phases that changes the output by more than this (relative) is warned about.
SWITCH_WARNING = 1e-2


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite values in full precision, say)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says what was kept and how to resume."""


class Trainer:
    """Trains a :class:`~mpno.nn.normalized.NormalizedOperator` from the parts it is given.

    * the precision follows ``schedule``, raised to a floor after
      ``nonfinite_patience`` consecutive non-finite steps (half → mixed → full);
      every change is logged in :attr:`history`;
    * phases that compute in float16 use ``torch.amp.GradScaler`` (:attr:`mpno.Precision.uses_grad_scaler`);
    * a step whose loss (or, without a scaler, whose gradients) is not finite is
      skipped; the scaler handles overflowing scaled gradients itself;
    * after every epoch: evaluation on each test set with each eval loss, and, with
      a ``run_dir``, a row of ``metrics.csv``, ``checkpoint.pt`` (atomic) and
      ``best.pt`` by the first test set's first loss.

    Args:
        model: the model, already on its device.
        optimizer: over ``model``'s parameters.
        train_batches: :class:`~mpno.run.batches.Batches` (or anything with
            ``iterate(seed)`` yielding ``(x, y, global batch size)`` and ``len``).
        epochs: the number of epochs :meth:`fit` trains to.
        loss: the training loss ``loss(prediction, target)``.
        schedule: a :class:`~mpno.precision.PrecisionSchedule`, a policy or a mode name.
        scheduler: a learning-rate scheduler stepped once per epoch (``None``: constant).
        test_batches, eval_losses: ``{name: batches}`` and ``{name: loss}`` for evaluation.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        nonfinite_patience: consecutive non-finite steps before the precision is raised.
        seed: shuffles the training batches (epoch ``e`` uses ``seed · 100003 + e``).
        run_dir: where checkpoints and metrics go (``None``: nothing is written).
        extra_state: saved in every checkpoint beside the trainer's own state.
        tensorboard: also write TensorBoard scalars (when it is installed).
        log: receives one line per epoch (with ``progress``) and per notable event.
        progress: a line per epoch through ``log``, and progress bars on a terminal.
        compile: run the training steps on the model compiled by :func:`mpno.compiled`.
        objective_at: ``objective_at(epoch, epochs)``, the training loss of a batch in each epoch,
            ``objective(model, x, y)`` (default: ``loss(model(x), y)``; forecasting: the
            steps unrolled follow the epoch).

    Under ``torchrun`` the model is wrapped in ``DistributedDataParallel``; call
    :meth:`close` before leaving the process group.
    """

    def __init__(self, model: NormalizedOperator, optimizer: torch.optim.Optimizer, train_batches, epochs: int,
                 loss: Callable, schedule: PrecisionSchedule | Precision | str = "full", scheduler=None,
                 test_batches: dict | None = None, eval_losses: dict | None = None, grad_clip: float | None = None,
                 nonfinite_patience: int = 5, seed: int = 0, run_dir: Path | None = None,
                 extra_state: dict | None = None, tensorboard: bool = False, log: Callable[[str], None] = print,
                 progress: bool = True, compile: bool = False,
                 objective_at: Callable[[int, int], Objective] | None = None, augment: Callable | None = None):
        self.model, self.optimizer, self.train_batches, self.epochs, self.loss = \
            model, optimizer, train_batches, epochs, loss
        self.schedule = PrecisionSchedule.parse(schedule)
        self.scheduler = scheduler or torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        self.test_batches, self.eval_losses = test_batches or {}, eval_losses or {}
        self.nonfinite_patience, self.seed = nonfinite_patience, seed
        self.run_dir, self.extra_state, self.progress = run_dir, extra_state or {}, progress
        self.device = next(model.parameters()).device
        self.context = distributed.current()
        self.log = log if self.context.main else (lambda message: None)
        self.parallel = model
        if self.context.world > 1:  # gradients are all-reduced in the parameters' dtype: float32
            self.parallel = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.parallel.register_comm_hook(None, distributed.sum_gradients)
        self.compile, self.objective_at, self.augment = compile, objective_at, augment
        if compile:  # training steps run the compiled model; evaluation and checkpoints use the model itself
            self.parallel = compiled(self.parallel)
        self.train_step = TrainStep(self.parallel, model, optimizer,
                                    lambda module, x, y: self.loss(module(x), y), grad_clip)
        self.epoch = 0
        self.floor: str | None = None  # the least precise mode allowed after escalations
        self.nonfinite_run = 0
        self.history: list[dict] = []
        self.best = {"value": math.inf, "epoch": -1}
        self.metrics = MetricsLog(run_dir, tensorboard) if run_dir is not None and self.context.main else None

    def extend(self, epochs: int) -> None:
        """Train to ``epochs`` instead, as if configured so from the start, from the current epoch on.

        The precision schedule's phases follow the new total; a cosine learning rate
        moves to its value at this epoch of the longer schedule and decays to zero at
        the new end.
        """
        self.epochs = epochs
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.scheduler.T_max = epochs
            eta_min = self.scheduler.eta_min
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * self.epoch / epochs)) / 2

    def close(self) -> None:
        """Release the ``DistributedDataParallel`` wrapper and the compiled model (before the process group is
        destroyed)."""
        self.parallel = self.train_step.model = self.model

    # -- one step -------------------------------------------------------------------------
    def step(self, x, y, policy: Precision, global_batch: int | None = None) -> float | None:
        """One optimisation step (:class:`mpno.run.step.TrainStep`); the loss, or ``None`` if it was skipped as
        non-finite."""
        return self.train_step(x, y, policy, global_batch)

    def _record(self, epoch: int, step: int, policy: Precision, reason: str, change: float | None = None) -> None:
        self.history.append({"epoch": epoch + 1, "step": step, "precision": str(policy),
                             "policy": dataclasses.asdict(policy), "reason": reason, "switch_change": change})

    def _escalate(self, epoch: int, step: int, policy: Precision) -> Precision:
        safer = SAFER[policy.mode]
        if safer is None:
            raise TrainingError(f"{self.nonfinite_run} consecutive non-finite steps in full precision at "
                                f"epoch {epoch + 1}: check the data and lower the learning rate")
        self.floor = safer
        raised = at_least(policy, safer)
        self.model.set_precision(raised)
        self._record(epoch, step, raised, f"{self.nonfinite_run} consecutive non-finite steps")
        self.log(f"epoch {epoch + 1}: {self.nonfinite_run} consecutive non-finite steps in {policy}; "
                 f"raising precision to {raised}")
        self.nonfinite_run = 0
        return raised

    # -- epochs ---------------------------------------------------------------------------
    def policy_for(self, epoch: int) -> Precision:
        return at_least(self.schedule.at(epoch, self.epochs), self.floor)

    @torch.no_grad()
    def switch_change(self, before: Precision, after: Precision) -> float:
        """Relative change of the model's output on the first training batch from ``before`` to ``after``.

        Rounding alone changes it by about the unit roundoff; a switch that turns a
        stabilizer on or off changes the function, and the loss jumps (a warning is logged).
        """
        x, _, _ = next(iter(self.train_batches.iterate()))
        self.model.eval()
        outputs = []
        for policy in (before, after):
            self.model.set_precision(policy)
            outputs.append(self.model(x).double())
        change = ((outputs[1] - outputs[0]).norm() / outputs[0].norm()).item()
        if change > SWITCH_WARNING:
            self.log(f"switching from {before} to {after} changes the model's output by {change:.1%} on a training "
                     "batch, more than rounding does (a stabilizer is turned on or off): expect the loss to jump; "
                     "a schedule whose phases share a stabilizer, or precision 'mixed', avoids it")
        return change

    def train_epoch(self, epoch: int) -> dict:
        policy = self.policy_for(epoch)
        change = None
        if not self.history or self.history[-1]["precision"] != str(policy):
            if self.history:
                change = self.switch_change(Precision(**self.history[-1]["policy"]), policy)
            self._record(epoch, 0, policy, "schedule", change)
        self.model.set_precision(policy)
        self.model.train()
        if self.objective_at is not None:
            self.train_step.objective = self.objective_at(epoch, self.epochs)
        total, count, skipped = 0.0, 0, 0
        bar = tqdm(self.train_batches.iterate(seed=self.seed * 100_003 + epoch), total=len(self.train_batches),
                   desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False,
                   disable=self._bars_disabled())
        draws = None
        if self.augment is not None:
            draws = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.context.rank)
        for step, (x, y, global_batch) in enumerate(bar):
            if draws is not None:
                x, y = self.augment(x, y, draws)
            value = self.step(x, y, policy, global_batch)
            if value is None:
                skipped += 1
                self.nonfinite_run += 1
                if self.nonfinite_run >= self.nonfinite_patience:
                    policy = self._escalate(epoch, step, policy)
                continue
            self.nonfinite_run = 0
            total += value * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{value:.4f}", precision=str(policy))
        self.scheduler.step()
        row = {"precision": str(policy), "train_loss": total / count if count else math.nan, "skipped_steps": skipped}
        if change is not None:
            row["switch_change"] = change
        return row

    def evaluate(self) -> dict[str, dict[str, float]]:
        """``{test set: {loss name: mean over samples}}`` in the model's current precision."""
        return evaluate(self.model, self.test_batches, self.eval_losses)

    def fit(self) -> dict:
        """Train from :attr:`epoch` to :attr:`epochs`; returns the last epoch's evaluation."""
        results = {}
        epochs = range(self.epoch, self.epochs)
        for epoch in tqdm(epochs, desc="training", unit="epoch", disable=self._bars_disabled(),
                          initial=self.epoch, total=self.epochs):
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch + 1, **self.train_epoch(epoch), "lr": lr}
            results = self.evaluate()
            profiling.release_freed_memory()
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
            if self.metrics is not None:  # before the checkpoint: a resume truncates it to the checkpoint's epoch
                self.metrics.append(row)
            self.save("checkpoint.pt")
            if self.progress:
                self.log(epoch_line(row, self.epochs))
        if self.test_batches and not math.isfinite(self.best["value"]):
            raise TrainingError(f"no epoch gave a finite test error (last: {results}); check the data for NaN or "
                                "huge values, lower the learning rate, or train in higher precision")
        return results

    def _bars_disabled(self) -> bool | None:
        """Progress bars on a terminal only (``None``: tqdm decides), and only in process 0."""
        return None if self.progress and self.context.main else True

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            **self.extra_state,
            "model": self.model.state_dict(),
            "operator": self.model.spec(),
            "precision": dataclasses.asdict(self.model.precision),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.train_step.scaler.state_dict(),
            "epoch": self.epoch,
            "floor": self.floor,
            "nonfinite_run": self.nonfinite_run,
            "history": self.history,
            "best": self.best,
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def save(self, name: str) -> None:
        """Write a checkpoint atomically (process 0 only)."""
        if self.run_dir is None or not self.context.main:
            return
        state = self.state()
        if not checkpoint.all_finite(state["model"]):
            raise TrainingError("the weights hold NaN or inf; refusing to save them: lower the learning rate, "
                                "check the data, or train in higher precision")
        checkpoint.save(state, self.run_dir / name)

    def load_state(self, state: dict) -> None:
        """Continue exactly where ``state`` (from :meth:`state`) left off."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_step.scaler.load_state_dict(state["scaler"])
        self.epoch, self.floor, self.nonfinite_run = state["epoch"], state["floor"], state["nonfinite_run"]
        self.history, self.best = list(state["history"]), dict(state["best"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.metrics is not None:
            self.metrics.truncate(self.epoch)
