"""Argument and input validation with messages that say what to do."""

from __future__ import annotations

import re
from typing import Sequence

import torch

#: Terminal escape sequences (colours, cursor moves, titles) and other control characters.
_CONTROL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: How ``torch.load(weights_only=True)`` starts its refusal, which advises loading the file unsafely.
_TORCH_REFUSAL = "Weights only load failed"


def _without_unsafe_advice(text: str) -> str:
    """``text`` with torch's refusal to unpickle replaced by what it refused: never pass on its advice
    to load the file with ``weights_only=False`` (which runs whatever code the file holds)."""
    start = text.find(_TORCH_REFUSAL)
    if start < 0:
        return text
    refused = text[start:].partition("WeightsUnpickler error:")[2].strip()
    refused = re.split(r"\.\s+Please|\n\s*\n", refused)[0].strip()
    return text[:start] + "it holds more than tensors" + (f": {refused}" if refused else "")


def one_line(text: str) -> str:
    """``text`` as one printable line: escape codes and control characters removed, lines joined by
    ``"; "``, and no advice to load a file with ``weights_only=False``."""
    lines = (_CONTROL.sub("", line.replace("\t", " ")).strip()
             for line in _without_unsafe_advice(str(text)).splitlines())
    return "; ".join(line for line in lines if line)


def reason(err: BaseException) -> str:
    """What went wrong in a library's exception, as a short phrase for a message: its first line, or
    what ``torch.load(weights_only=True)`` refused (without torch's advice to load the file unsafely)."""
    text = _without_unsafe_advice(str(err)).strip()
    return one_line(text.splitlines()[0]) if text else type(err).__name__


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


def operator_in_channels(value, who: str) -> int:
    """``value`` as the first argument of operator ``who``, the input channels; a tuple there is
    neuraloperator's argument order, which the error names."""
    if isinstance(value, (tuple, list)):
        raise ValueError(f"{who}(in_channels={tuple(value)!r}, ...): mpno's order is (in_channels, out_channels, "
                         f"n_modes, ...), where neuraloperator's {who} takes n_modes first; write "
                         f"{who}(in_channels, out_channels, n_modes={tuple(value)!r}, ...)")
    return positive_int("in_channels", value)


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
