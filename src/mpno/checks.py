"""Argument and input validation with messages that say what to do."""

from __future__ import annotations

from typing import Sequence

import torch


def as_modes(n_modes: int | Sequence[int], max_dims: int = 3) -> tuple[int, ...]:
    """``n_modes`` as a tuple of positive ints, one per spatial dimension (1 to ``max_dims``)."""
    modes = (n_modes,) if isinstance(n_modes, int) else tuple(n_modes)
    if not 1 <= len(modes) <= max_dims or not all(isinstance(m, int) and m > 0 for m in modes):
        raise ValueError(
            f"n_modes={n_modes!r} is not supported; give 1 to {max_dims} positive ints, "
            "one per spatial dimension, e.g. (16, 16) for 2D"
        )
    return modes


def modes_per_dim(modes: Sequence[int], spatial_dims: int, name: str = "modes") -> tuple[int, ...]:
    """One value for every dimension, or one per dimension, as a tuple of ``spatial_dims`` values."""
    modes = tuple(modes)
    if len(modes) == 1:
        return modes * spatial_dims
    if len(modes) != spatial_dims:
        raise ValueError(f"{name}={list(modes)} gives {len(modes)} values but the data have {spatial_dims} "
                         f"spatial dims; give one value or {spatial_dims}")
    return modes


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} is not supported; give a positive int")
    return value


def check_field(x: torch.Tensor, channels: int, n_modes: Sequence[int], who: str) -> None:
    """Raise ``ValueError`` unless ``x`` is (batch, channels, *grid) with grid ≥ n_modes."""
    ndim = len(n_modes)
    axes = ("H", "W", "D")[:ndim] if ndim > 1 else ("N",)
    expected = f"(batch, {channels}, {', '.join(axes)})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who} expects a tensor {expected}; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{who} expects a floating-point tensor; got dtype {x.dtype}")
    if x.ndim != ndim + 2:
        raise ValueError(
            f"{who} has n_modes={tuple(n_modes)} ({ndim} spatial dims) and expects input "
            f"{expected}; got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(f"{who} expects {channels} input channels (dim 1); got shape {tuple(x.shape)}")
    grid = tuple(x.shape[2:])
    for i, (n, m) in enumerate(zip(grid, n_modes)):
        if n < m:
            raise ValueError(
                f"{who}: grid {grid} has {n} points along spatial dim {i}, fewer than "
                f"n_modes[{i}]={m}; give at least n_modes[i] points per dimension or lower n_modes"
            )
