"""Test helpers: float64 references and tolerances derived from the unit roundoff.

Tolerance model (docs/precision.md has the derivation): a computation that
rounds to a dtype with unit roundoff ``u`` at ``k`` stages makes, at each stage,
a relative error of at most ``u``. The worst case adds up to ``k·u``; round-to-
nearest errors are unbiased and nearly independent, so over thousands of
elements the normwise error concentrates near ``u·sqrt(k/3)``. The tests allow
``u·sqrt(k)`` (√3 above that estimate, a third of the worst case): a stage that
ran in a coarser dtype, or at a point it should not, exceeds it.
"""

from __future__ import annotations

import math

import torch

from mpno.precision import UNIT_ROUNDOFF


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def tolerance(dtype: torch.dtype, stages: int) -> float:
    """Allowed normwise relative error after ``stages`` roundings to ``dtype``."""
    return UNIT_ROUNDOFF[dtype] * math.sqrt(stages)


def forward_stages(ndim: int) -> int:
    """Half forward transform: the input, then per dimension twiddles, partial sums, scaling."""
    return 1 + 3 * ndim


def inverse_stages(ndim: int) -> int:
    """Half inverse transform: per dimension twiddles and partial sums."""
    return 2 * ndim


def spectral_conv_stages(mode: str, ndim: int) -> int:
    """SpectralConv: forward (half, or fp32 then one rounding), weights, contraction, inverse, bias."""
    forward = forward_stages(ndim) if mode == "half" else 1
    return forward + 2 + inverse_stages(ndim) + 1


def bandlimited(batch: int, channels: int, grid, kmax: int, seed: int = 0) -> torch.Tensor:
    """A random real float64 field on ``grid`` with frequencies |k_i| <= kmax (all grid sizes > 2·kmax)."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in grid], indexing="ij")
    field = torch.zeros(batch, channels, *grid, dtype=torch.float64)
    for freq in torch.cartesian_prod(*[torch.arange(-kmax, kmax + 1)] * len(grid)).reshape(-1, len(grid)):
        phase = sum(int(k) * c for k, c in zip(freq, coords))
        amp = torch.randn(batch, channels, *[1] * len(grid), generator=gen, dtype=torch.float64)
        shift = 2 * math.pi * torch.rand(batch, channels, *[1] * len(grid), generator=gen, dtype=torch.float64)
        field += amp / (1 + float(freq.pow(2).sum())) * torch.cos(2 * math.pi * phase + shift)
    return field


def saved_dtypes(fn) -> set[torch.dtype]:
    """dtypes of the floating-point tensors autograd saves for backward while running ``fn()``."""
    seen: set[torch.dtype] = set()

    def pack(t):
        if t.is_floating_point():
            seen.add(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return seen


