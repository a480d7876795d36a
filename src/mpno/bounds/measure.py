"""Empirical error estimates from samples on a grid (``docs/bounds.md``).

Errors are maxima over samples, channels and kept Fourier coefficients (the
quantity the closed-form bounds bound), of fields ``(N, C, *grid)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..ops import transforms


def bound_and_lipschitz(fields: torch.Tensor, periodic: bool = False) -> tuple[float, float]:
    """``B = max|v|`` and ``M ≈ max |∇v|`` from forward differences (a lower estimate of M).

    Not periodic (the default): differences across the cube's boundary are left
    out, so a sawtooth counts as Lipschitz.
    """
    fields = fields.double()
    grid = fields.shape[2:]
    region = (..., *[slice(0, n if periodic else n - 1) for n in grid])
    squared = torch.zeros_like(fields)[region]
    for i, n in enumerate(grid):
        squared = squared + ((fields.roll(-1, 2 + i) - fields) * n)[region].square()
    return fields.abs().max().item(), squared.sqrt().max().item()


def kept_coefficients(fields: torch.Tensor, n_modes: Sequence[int]) -> torch.Tensor:
    """Kept Fourier coefficients in float64, as complex: (N, C, *kept)."""
    return torch.view_as_complex(transforms.forward(fields.double(), n_modes).contiguous())


def subsample(fields: torch.Tensor, factor: int) -> torch.Tensor:
    return fields[(..., *[slice(None, None, factor)] * (fields.ndim - 2))]


@dataclass
class Discretization:
    """Discretisation error of the kept coefficients, estimated by coarsening.

    ``levels``: grid sizes ``n, n/2, n/4, …`` (first spatial dimension);
    ``differences[i]``: max |ĉ at levels[i+1] − ĉ at levels[i]|; ``rate``: the
    fitted exponent p of ``error ∝ n^p`` (``None`` from a single difference);
    ``error``: the estimated error at the finest level against the continuum,
    ``d₁ / (2^{-p} − 1)`` (Richardson), with p = −1 (the Lipschitz worst case)
    when it cannot be fitted or does not converge.
    """

    levels: list[int]
    differences: list[float]
    rate: float | None
    error: float

    def error_at(self, level: int) -> float:
        """Estimated error against the continuum at ``levels[level]``."""
        p = self.rate if self.rate is not None and self.rate < -0.05 else -1.0
        return self.error * 2.0 ** (-p * level)


def fit_rate(sizes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def discretization(fields: torch.Tensor, n_modes: Sequence[int], floor: float = 1e-13) -> Discretization:
    """Estimate the discretisation error by comparing coefficients on the grid and its coarsenings.

    Coarsens by 2 while every dimension keeps at least ``n_modes`` points (at
    least once). Differences below ``floor`` (float64 round-off) are left out of the fit.
    """
    grid = fields.shape[2:]
    factors = [1]
    while all(n % (factors[-1] * 2) == 0 and n // (factors[-1] * 2) >= m for n, m in zip(grid, n_modes)):
        factors.append(factors[-1] * 2)
    if len(factors) < 2:
        raise ValueError(f"grid {tuple(grid)} cannot be coarsened by 2 and keep n_modes={tuple(n_modes)} "
                         "points; lower the modes (--modes) to estimate the discretisation error")
    coefficients = [kept_coefficients(subsample(fields, f), n_modes) for f in factors]
    differences = [(coarse - fine).abs().max().item() for fine, coarse in zip(coefficients, coefficients[1:])]
    levels = [grid[0] // f for f in factors]
    usable = [(levels[i + 1], d) for i, d in enumerate(differences) if d > floor]
    rate = fit_rate(*zip(*usable)) if len(usable) >= 2 else None
    p = rate if rate is not None and rate < -0.05 else -1.0
    return Discretization(levels, differences, rate, differences[0] / (2.0 ** (-p) - 1))


def precision_error(fields: torch.Tensor, n_modes: Sequence[int], dtype: torch.dtype, mode: str = "half",
                    backend: str = "auto") -> float:
    """Max error of the kept coefficients as a model computes them in ``dtype`` against float64.

    ``mode="half"``: the whole forward transform in ``dtype``; ``"mixed"``: in
    float32, then rounded to ``dtype``. Non-finite results (overflow) give ``inf``.
    """
    exact = kept_coefficients(fields, n_modes)
    if mode == "mixed":
        computed = transforms.forward(fields.float(), n_modes).to(dtype)
    else:
        computed = transforms.forward(fields, n_modes, dtype=dtype, backend=backend)
    computed = torch.view_as_complex(computed.double().contiguous())
    if not torch.isfinite(computed).all():
        return math.inf
    return (computed - exact).abs().max().item()
