"""Closed-form error bounds for Fourier coefficients and spectral layers (``docs/bounds.md``).

Notation: ``v : [0, 1]^d → R`` sampled on ``n`` points ``j / n`` per dimension
(``N = n^d``), ``|v| ≤ B``; coefficient ``v̂(k) = ∫ v e^{-2πik·x} dx`` and its
discrete estimate ``v̂_n(k) = N^{-1} Σ_j v(x_j) e^{-2πik·x_j}`` (mpno's "forward"
normalisation).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import dtypes


def discretization_bound(grid: Sequence[int], k: Sequence[int], B: float, M: float) -> float:
    """``|v̂(k) − v̂_n(k)| ≤ (M + 2π|k|₂ B) · √(Σ_i h_i² / 3)`` for ``v`` M-Lipschitz on the cube.

    ``h_i = 1 / grid[i]``; on a cube grid of ``n`` points per dimension the factor is
    ``√(d/3) / n``. The integrand ``v e^{-2πik·x}`` is ``(M + 2π|k|B)``-Lipschitz,
    and on each cell the left-corner rule errs by at most that constant times the
    mean distance to the corner, which is at most the RMS distance
    ``√(Σ h_i²/3)`` (Jensen). Periodicity is not needed: ``v`` may jump at the
    boundary of the cube (a sawtooth). This is ``√3`` tighter than the usual ``√d / n``.
    """
    spacing = math.sqrt(sum((1.0 / n) ** 2 for n in grid) / 3)
    return (M + 2 * math.pi * math.sqrt(sum(x * x for x in k)) * B) * spacing


def variation_bound_1d(n: int, k: int, B: float, V: float) -> float:
    """1D, ``v`` of total variation ``V`` (jumps allowed): ``|v̂(k) − v̂_n(k)| ≤ (V + 2π|k| B) / n``.

    Koksma's inequality with the star discrepancy ``1/n`` of the points ``j/n``;
    the variation of ``v e^{-2πikx}`` is at most ``V + 2π|k| B``.
    """
    return (V + 2 * math.pi * abs(k) * B) / n


def _gamma(count: int, u: float) -> float:
    """Higham's ``γ_count = count·u / (1 − count·u)``."""
    return count * u / (1 - count * u) if count * u < 1 else math.inf


def transform_precision_bound(grid: Sequence[int], B: float, dtype: torch.dtype, method: str = "dft") -> float:
    """Bound on ``|fl(v̂_n(k)) − v̂_n(k)|`` for every kept ``k``, for mpno's transform in ``dtype``.

    * input rounding: ``u·B``;
    * ``"dft"`` (matrix products, float32 accumulation), per dimension of ``n``
      points: twiddles rounded (``u``), the float32 sum (``√2·γ_{2n}`` in float32),
      the partial sum rounded (``u``), the scaling by ``1/n`` rounded (``u``);
    * ``"fft"`` (cuFFT radix-2 in the dtype), per dimension: Higham's Theorem
      24.2, normwise ``t·η / (1 − t·η)`` with ``t = log₂ n``,
      ``η = μ + γ₄(√2 + μ)``, twiddle error ``μ = u``, plus the scaling ``u``;
      a normwise error bounds every coefficient, and ``‖y‖₂ ≤ B`` for the
      normalised transform.

    Every dimension's transform is an average (its rows have ``Σ|ω|/n = 1``), so
    errors pass to later dimensions without growth; the factors multiply.
    """
    u = dtypes.info(dtype).unit_roundoff
    factor = 1 + u
    for n in grid:
        if method == "dft":
            factor *= (1 + u) ** 3 * (1 + math.sqrt(2) * _gamma(2 * n, dtypes.info(torch.float32).unit_roundoff))
        elif method == "fft":
            eta = u + _gamma(4, u) * (math.sqrt(2) + u)
            t = math.log2(n)
            factor *= 1 + t * eta / (1 - t * eta) + u
        else:
            raise ValueError(f"method={method!r} is not supported; allowed: 'dft', 'fft'")
    return B * (factor - 1)


def rounding_bound(B: float, dtype: torch.dtype) -> float:
    """Rounding coefficients bounded by ``B`` to ``dtype`` (mode ``mixed``): ``u·B``."""
    return dtypes.info(dtype).unit_roundoff * B


def spectral_layer_bound(coefficient_error: float, weight: torch.Tensor, n_last: int) -> float:
    """Bound on ``max |δy|`` at the output of a spectral layer whose input coefficients are off by ≤ ε.

    ``weight``: real pairs ``(in, out, *kept, 2)``. Each kept mode ``k`` maps the
    channel vector's error (norm ≤ ``√in·ε``) through ``R_k`` (operator norm
    ``‖R_k‖₂``); the inverse transform sums the kept modes, counting each
    coefficient of the half spectrum twice except ``k_last = 0`` and the Nyquist
    frequency. A Lipschitz activation (GELU: 1.13) multiplies the bound by its constant.
    """
    complex_weight = torch.view_as_complex(weight.detach().double().contiguous())
    matrices = complex_weight.movedim(0, -1).movedim(0, -2)  # (*kept, out, in)
    norms = torch.linalg.matrix_norm(matrices, ord=2)  # (*kept,)
    k_last = torch.arange(norms.shape[-1])
    twice = torch.where((k_last == 0) | (2 * k_last == n_last), 1.0, 2.0).double()
    return float((norms * twice).sum()) * math.sqrt(weight.shape[0]) * coefficient_error
