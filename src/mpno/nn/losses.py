"""Losses for fields on [0, 1]^d grids, computed in float32 (or float64) whatever the model's precision.

All take ``(prediction, target)`` of shape (batch, channels, *grid). Norms are
grid means (the quadrature of ∫ over the unit cube), so values do not depend on
the resolution. Relative losses are per sample, then averaged over the batch.
"""

from __future__ import annotations

import math

import torch

LOSSES = ("l2", "h1", "mse")


def _working(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from target {tuple(target.shape)}")
    dtype = torch.float64 if torch.float64 in (prediction.dtype, target.dtype) else torch.float32
    return prediction.to(dtype), target.to(dtype)


def _relative(error_sq: torch.Tensor, norm_sq: torch.Tensor) -> torch.Tensor:
    return (error_sq.sqrt() / norm_sq.sqrt().clamp(min=torch.finfo(norm_sq.dtype).tiny)).mean()


def _squared_norm(field: torch.Tensor) -> torch.Tensor:
    """Per-sample grid mean of |field|², summed over channels: (batch,)."""
    return field.square().flatten(2).mean(-1).sum(1)


class LpLoss:
    """Relative ``‖pred − y‖_p / ‖y‖_p`` per sample (or absolute with ``relative=False``)."""

    def __init__(self, p: int = 2, relative: bool = True):
        self.p, self.relative = p, relative
        self.name = f"l{p}" if relative else f"abs_l{p}"

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, target = _working(prediction, target)
        error = (prediction - target).abs().pow(self.p).flatten(2).mean(-1).sum(1)
        if not self.relative:
            return error.pow(1 / self.p).mean()
        norm = target.abs().pow(self.p).flatten(2).mean(-1).sum(1)
        return (error.pow(1 / self.p) / norm.pow(1 / self.p).clamp(min=torch.finfo(norm.dtype).tiny)).mean()


def gradient(field: torch.Tensor, periodic: bool, method: str = "fd") -> list[torch.Tensor]:
    """Partial derivatives of (batch, channels, *grid) fields on [0, 1]^d, grid spacing ``1 / n``.

    ``"fd"``: second-order central differences (one-sided second order at the
    edges when not periodic). ``"spectral"``: exact for band-limited periodic fields.
    """
    dims = range(2, field.ndim)
    if method == "spectral":
        if not periodic:
            raise ValueError("spectral derivatives need periodic=True; use method='fd'")
        out = []
        for dim in dims:
            n = field.shape[dim]
            k = torch.fft.fftfreq(n, 1.0 / n, device=field.device, dtype=field.dtype)
            if n % 2 == 0:
                k[n // 2] = 0.0  # the Nyquist mode's derivative is not representable
            shape = [1] * field.ndim
            shape[dim] = n
            spectrum = torch.fft.fft(field, dim=dim) * (2j * math.pi * k.view(shape))
            out.append(torch.fft.ifft(spectrum, dim=dim).real)
        return out
    if method != "fd":
        raise ValueError(f"method={method!r} is not supported; allowed: 'fd', 'spectral'")
    out = []
    for dim in dims:
        n = field.shape[dim]
        if periodic:
            out.append((field.roll(-1, dim) - field.roll(1, dim)) * (n / 2))
        else:
            out.append(torch.gradient(field, spacing=1.0 / n, dim=dim, edge_order=2)[0])
    return out


class H1Loss:
    """Relative Sobolev H¹ loss: ``‖e‖_{H¹}² = ‖e‖² + Σ_i ‖∂_i e‖²`` with ``e = pred − y``.

    Args:
        periodic: the fields are periodic (central differences wrap around).
        method: ``"fd"`` (finite differences) or ``"spectral"`` (periodic only).
    """

    def __init__(self, relative: bool = True, periodic: bool = True, method: str = "fd"):
        if method not in ("fd", "spectral") or (method == "spectral" and not periodic):
            raise ValueError(f"method={method!r} with periodic={periodic} is not supported; "
                             "use 'fd', or 'spectral' with periodic=True")
        self.relative, self.periodic, self.method = relative, periodic, method
        self.name = "h1" if relative else "abs_h1"

    def _squared(self, field: torch.Tensor) -> torch.Tensor:
        total = _squared_norm(field)
        for derivative in gradient(field, self.periodic, self.method):
            total = total + _squared_norm(derivative)
        return total

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, target = _working(prediction, target)
        error = self._squared(prediction - target)
        if not self.relative:
            return error.sqrt().mean()
        return _relative(error, self._squared(target))


class MSELoss:
    """Mean squared error over everything."""

    name = "mse"

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, target = _working(prediction, target)
        return (prediction - target).square().mean()


def build(name: str, periodic: bool = True):
    """A loss by name: ``"l2"`` (relative L²), ``"h1"`` (relative H¹), ``"mse"``."""
    if name == "l2":
        return LpLoss(2)
    if name == "h1":
        return H1Loss(periodic=periodic)
    if name == "mse":
        return MSELoss()
    raise ValueError(f"loss={name!r} is not supported; allowed: {', '.join(repr(n) for n in LOSSES)}")
