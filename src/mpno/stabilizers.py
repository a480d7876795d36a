"""Stabilizers: squash the input of a half-precision forward transform.

A float16 transform overflows when a partial sum exceeds 65504 (see
``mpno.transforms``). Each stabilizer bounds its output, so a transform of ``n``
points per dimension stays finite while ``n * bound < 65504``:

* ``"tanh"``: ``tanh(x)``, bound 1 (the paper's choice);
* ``"clip_hard"``: clip to [-1, 1], bound 1;
* ``"clip_sigma"``: standardise per sample and channel over the grid, clip to
  ±2 standard deviations, bound 2.

Stabilizers act only on the spectral branch in mode ``"half"``; the skip branch
sees the raw input.
"""

from __future__ import annotations

import torch


def stabilize(x: torch.Tensor, name: str | None) -> torch.Tensor:
    """Apply the stabilizer ``name`` (or nothing for ``None``) to ``x`` (batch, channels, *grid)."""
    if name is None:
        return x
    if name == "tanh":
        return torch.tanh(x)
    if name == "clip_hard":
        return x.clamp(-1.0, 1.0)
    if name == "clip_sigma":
        dims = tuple(range(2, x.ndim))
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True)
        return ((x - mean) / (std + 1e-3)).clamp(-2.0, 2.0)
    raise ValueError(f"stabilizer={name!r} is not supported; allowed: 'tanh', 'clip_hard', 'clip_sigma', None")
