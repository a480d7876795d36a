"""One training step, the one ``mpno train``, ``mpno bench`` and the regression guard all run: forward, loss,
loss-scaled backward, gradient clipping, a finite check and the optimizer step."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..precision import Precision
from . import distributed

#: ``objective(model, x, y)``: the loss of a batch, as a differentiable scalar.
Objective = Callable[[torch.nn.Module, object, object], torch.Tensor]


def one_step(loss: Callable) -> Objective:
    """The objective of a one-step operator: ``loss(model(x), y)``."""
    return lambda model, x, y: loss(model(x), y)


def make_optimizer(kind: str, model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adam`` or ``adamw`` over ``model``'s parameters."""
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if kind not in optimizers:
        raise ValueError(f"optimizer={kind!r} is not supported; allowed: {', '.join(optimizers)}")
    return optimizers[kind](model.parameters(), lr=lr, weight_decay=weight_decay)


class TrainStep:
    """One optimisation step of ``model`` (the module that computes: it may be wrapped for DDP or compiled)
    whose parameters are those of ``owner``.

    * the loss is ``objective(model, x, y)`` (:func:`one_step` of a loss for a one-step operator; an unrolled
      objective for a forecasting operator);
    * in a precision that needs loss scaling (:attr:`mpno.Precision.uses_grad_scaler`) the backward pass is
      scaled by :attr:`scaler`, otherwise by a disabled ``GradScaler``: one code path for both;
    * a step whose loss is not finite (on any process) is skipped, and so is one whose gradients are not finite
      without a scaler; with a scaler, overflowing scaled gradients make the scaler skip the step and lower
      its scale, as ``torch.amp`` does;
    * ``grad_clip`` clips the gradient norm (``None``: no clipping).

    With several processes, each loss is weighted by its share of the global batch and the gradients are
    summed (the gradient of the global batch's mean loss).
    """

    def __init__(self, model: torch.nn.Module, owner: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 objective: Objective, grad_clip: float | None = None):
        self.model, self.optimizer, self.objective, self.grad_clip = model, optimizer, objective, grad_clip
        self.params = [p for p in owner.parameters() if p.requires_grad]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        #: Kept in checkpoints: its scale carries across the phases that use it.
        self.scaler = torch.amp.GradScaler(self.device.type)
        self._unscaled = torch.amp.GradScaler(self.device.type, enabled=False)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, x, y, policy: Precision, global_batch: int | None = None) -> float | None:
        """One step on the batch ``(x, y)`` of ``global_batch`` samples over all processes (default:
        ``len(x)``); the loss, or ``None`` if the step was skipped as non-finite."""
        self.zero_grad()
        local = self.objective(self.model, x, y)
        if not distributed.everywhere_true(bool(torch.isfinite(local)), self.device):
            return None
        scaler = self.scaler if policy.uses_grad_scaler else self._unscaled
        scaler.scale(local * (len(x) / (global_batch or len(x)))).backward()
        if self.grad_clip or not scaler.is_enabled():  # an enabled scaler finds overflows itself
            scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip or math.inf)
            if not scaler.is_enabled() and not torch.isfinite(norm):
                self.zero_grad()
                return None
        scaler.step(self.optimizer)  # skipped by an enabled scaler if the gradients overflowed
        scaler.update()
        return local.item()
