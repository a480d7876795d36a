"""Stabilizers: squash the input of a half-precision forward transform.

A half transform overflows when a partial sum exceeds the dtype's largest finite
value (:attr:`mpno.dtypes.DtypeInfo.largest`: 65504 in float16; see
``mpno.ops.transforms``). Each stabilizer bounds its output, so a transform of ``n``
points per dimension stays finite while ``n * bound < largest``:

* ``"tanh"``: ``tanh(x)``, bound 1 (the paper's choice);
* ``"clip_hard"``: clip to [-1, 1], bound 1;
* ``"clip_sigma"``: standardise per sample and channel over the grid, clip to
  ±2 standard deviations, bound 2.

Stabilizers act only on the spectral branch in mode ``"half"``; the skip branch
sees the raw input.
"""

from __future__ import annotations

import torch


class _Tanh(torch.autograd.Function):
    """``tanh`` that saves its input rather than its output.

    The skip branch keeps the input alive anyway, so backward recomputes
    ``1 - tanh(x)²`` instead of holding one more activation per layer.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, torch.tanh(x))  # grad · (1 - tanh(x)²), one kernel


def stabilize(x: torch.Tensor, name: str | None) -> torch.Tensor:
    """Apply the stabilizer ``name`` (or nothing for ``None``) to ``x`` (batch, channels, *grid)."""
    if name is None:
        return x
    if name == "tanh":
        return _Tanh.apply(x)
    if name == "clip_hard":
        return x.clamp(-1.0, 1.0)
    if name == "clip_sigma":
        dims = tuple(range(2, x.ndim))
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True)
        return ((x - mean) / (std + 1e-3)).clamp(-2.0, 2.0)
    raise ValueError(f"stabilizer={name!r} is not supported; allowed: 'tanh', 'clip_hard', 'clip_sigma', None")
