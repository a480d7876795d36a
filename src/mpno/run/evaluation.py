"""Test errors of a model on batches of test sets, with several processes or one."""

from __future__ import annotations

import torch
from torch import nn

from . import distributed


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
