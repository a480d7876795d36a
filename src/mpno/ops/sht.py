"""Spherical harmonic transforms (SHT) of real fields on latitude–longitude grids, in any precision.

A field ``f`` on ``nlat × nlon`` points (colatitude ``θ_k``, longitude
``φ_j = 2πj / nlon``) has coefficients

    c_lm = ∫ f Y*_lm dΩ ≈ 2π Σ_k w_k P̄_l^m(θ_k) · (1/nlon) Σ_j f_kj e^{-imφ_j},
    0 <= m < mmax, m <= l < lmax,

with orthonormal harmonics ``Y_lm = P̄_l^m(cos θ) e^{imφ}`` (``∫|Y_lm|² dΩ = 1``,
Condon–Shortley phase) and the grid's quadrature weights ``w_k`` on ``cos θ``.
The inverse is ``f = Σ_{l,m} w_m Re(c_lm Y_lm)`` with ``w_m = 1`` for ``m = 0``
(and the Nyquist order ``nlon / 2``) and 2 otherwise: the negative orders are
the conjugates of the positive ones. These are torch-harmonics' conventions
(``norm="ortho"``, ``csphase=True``), so coefficients agree with its
``RealSHT``/``InverseRealSHT`` entry for entry.

Grids (both list the north pole side first, colatitude ascending):

* ``"equiangular"``: ``θ_k = πk / (nlat - 1)``, poles included, Clenshaw–Curtis
  weights, exact for polynomials in ``cos θ`` of degree ``nlat - 1``, so the
  transform is exact on fields of degree ``< lmax`` when ``lmax <= (nlat + 1) // 2``;
* ``"legendre-gauss"``: the Gauss–Legendre nodes, no poles, exact up to degree
  ``2 nlat - 1``: ``lmax <= nlat``.

:func:`exact_lmax` is that limit. Up to ``lmax = nlat`` is allowed on both grids,
as in torch-harmonics: above the exact limit the quadrature aliases (the forward
transform is no longer a projection; docs/sphere.md measures by how much). A
larger ``lmax``, or ``mmax > nlon // 2 + 1``, is refused with a ``ValueError``.

Each transform is two stages, and both run in the working dtype with the rounding
points of :mod:`mpno.ops.transforms`:

1. along longitude, the truncated real DFT of the kept orders
   (:func:`mpno.ops.transforms.forward` / ``inverse``: cuFFT or matrix products,
   any ``nlon``, the same Hermitian projection at ``m = 0``);
2. along latitude, the Legendre transform: one real product per order ``m``
   with a table of ``2π w_k P̄_l^m(θ_k)`` (forward) or ``P̄_l^m(θ_k)`` (inverse),
   batched over ``m`` (:func:`mpno.ops.products.einsum`: half operands, float32
   accumulation, one rounding of the result).

The tables are computed in float64 (a stable three-term recurrence), rounded
once to the working dtype and cached per size, grid, dtype and device in
:mod:`mpno.ops.tables`; nothing is held as a buffer, so one model runs on any grid.
Gradients are the adjoint transforms (the DFT's own backward and the transposed
Legendre product with the cached table), so nothing is saved for backward.

Why functions and cached tables rather than modules with buffers: a neural
operator runs on whatever grid it is called on, and the tables depend on the
grid, not on the model. :class:`RealSHT` and :class:`InverseRealSHT` are thin,
parameter-free modules over these functions for torch-harmonics' interface.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import dtypes
from ..precision import Precision
from . import products, tables, transforms

GRIDS = ("equiangular", "legendre-gauss")


def check_grid(grid: str) -> str:
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r} is not supported; allowed: {', '.join(map(repr, GRIDS))}")
    return grid


def exact_lmax(nlat: int, grid: str) -> int:
    """The largest ``lmax`` (degrees ``0 … lmax - 1``) the grid transforms exactly (without aliasing)."""
    return nlat if check_grid(grid) == "legendre-gauss" else (nlat + 1) // 2


def check_sizes(nlat: int, nlon: int, lmax: int, mmax: int, grid: str) -> None:
    """``ValueError`` naming the argument unless the grid carries degrees ``< lmax`` (``lmax <= nlat``)
    and orders ``< mmax`` (``mmax <= nlon // 2 + 1``)."""
    for name, value in (("nlat", nlat), ("nlon", nlon), ("lmax", lmax), ("mmax", mmax)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not supported; give a positive int")
    if grid == "equiangular" and nlat < 2:
        raise ValueError(f"nlat={nlat}: an equiangular grid includes both poles and needs nlat >= 2")
    if lmax > nlat:
        raise ValueError(f"lmax={lmax} is too fine for the {grid} grid of nlat={nlat} latitudes (degrees up to "
                         f"nlat - 1 = {nlat - 1}); give nlat >= {lmax} or lmax <= {nlat}")
    if mmax > nlon // 2 + 1:
        raise ValueError(f"mmax={mmax} is too fine for nlon={nlon} longitudes (orders up to nlon // 2 = "
                         f"{nlon // 2}); give nlon >= {2 * (mmax - 1)} or mmax <= {nlon // 2 + 1}")


def _clenshaw_curtis(n: int) -> np.ndarray:
    """Clenshaw–Curtis weights on ``cos(πk / (n - 1))``, k = 0 … n-1 (they sum to 2)."""
    N = n - 1
    if N == 1:
        return np.ones(2)
    theta = np.pi * np.arange(n) / N
    k = np.arange(1, N // 2 + 1)
    b = np.where(2 * k == N, 1.0, 2.0)
    series = 1.0 - (b / (4.0 * k**2 - 1.0) * np.cos(2.0 * np.outer(theta, k))).sum(axis=1)
    c = np.full(n, 2.0)
    c[[0, -1]] = 1.0
    return c / N * series


@tables.cached(maxsize=64)
def quadrature(nlat: int, grid: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Colatitudes (ascending, north first) and quadrature weights on ``cos θ`` (summing to 2), float64.

    The cached tensors are shared: do not modify them in place.
    """
    if check_grid(grid) == "equiangular":
        theta = np.pi * np.arange(nlat) / (nlat - 1)
        weights = _clenshaw_curtis(nlat)
    else:
        x, weights = np.polynomial.legendre.leggauss(nlat)
        theta, weights = np.arccos(x)[::-1].copy(), weights[::-1].copy()
    return torch.from_numpy(theta), torch.from_numpy(weights)


def legendre(lmax: int, mmax: int, theta: torch.Tensor, derivative: bool = False):
    """Orthonormal associated Legendre functions ``P̄_l^m(cos θ)``, float64, shape (mmax, lmax, len(θ)).

    ``2π ∫ P̄_l^m P̄_l'^m d(cos θ) = δ_ll'``, Condon–Shortley phase, zero for
    ``m > l``. Computed with the standard stable recurrence: ``P̄_m^m`` from
    ``P̄_{m-1}^{m-1}`` by a factor ``-sqrt((2m+1)/2m) sin θ``, then upward in ``l``
    with ``P̄_l^m = a_lm (cos θ P̄_{l-1}^m - b_lm P̄_{l-2}^m)``.
    With ``derivative=True`` also returns ``dP̄_l^m/dθ``, from the ladder relation
    ``2 dP̄_l^m/dθ = sqrt((l-m)(l+m+1)) P̄_l^{m+1} - sqrt((l+m)(l-m+1)) P̄_l^{m-1}``
    (no division by ``sin θ``, so it holds at the poles).
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    orders = mmax + 1 if derivative else mmax
    cos, sin = torch.cos(theta), torch.sin(theta)
    p = torch.zeros(orders, lmax, theta.numel(), dtype=torch.float64)
    diagonal = torch.full_like(theta, 1.0 / math.sqrt(4 * math.pi))
    for m in range(min(orders, lmax)):
        if m > 0:
            diagonal = -math.sqrt((2 * m + 1) / (2 * m)) * sin * diagonal
        p[m, m] = diagonal
        if m + 1 < lmax:
            p[m, m + 1] = math.sqrt(2 * m + 3) * cos * diagonal
        for l in range(m + 2, lmax):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            p[m, l] = a * (cos * p[m, l - 1] - b * p[m, l - 2])
    if not derivative:
        return p
    l = torch.arange(lmax, dtype=torch.float64)[:, None]
    dp = torch.zeros(mmax, lmax, theta.numel(), dtype=torch.float64)
    for m in range(mmax):
        up = ((l - m) * (l + m + 1)).clamp(min=0).sqrt() * p[m + 1]
        below = p[m - 1] if m > 0 else -p[1]  # P̄_l^{-1} = -P̄_l^1 (Condon–Shortley)
        down = ((l + m) * (l - m + 1)).clamp(min=0).sqrt() * below
        dp[m] = 0.5 * (up - down)
    return p[:mmax], dp


@tables.cached(maxsize=64)
def _float64_tables(nlat: int, lmax: int, mmax: int, grid: str) -> tuple[torch.Tensor, torch.Tensor]:
    theta, weights = quadrature(nlat, grid)
    p = legendre(lmax, mmax, theta)
    return 2 * math.pi * weights * p, p


@tables.cached(maxsize=128)
def _legendre_table(kind: str, nlat: int, lmax: int, mmax: int, grid: str, dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    """(mmax, lmax, nlat): ``2π w_k P̄_l^m(θ_k)`` (``"analysis"``) or ``P̄_l^m(θ_k)`` (``"synthesis"``)."""
    analysis, synthesis = _float64_tables(nlat, lmax, mmax, grid)
    return (analysis if kind == "analysis" else synthesis).to(dtype=dtype, device=device)


class _Legendre(torch.autograd.Function):
    """``einsum(equation, x, table)`` with a constant (cached) table; backward is the transposed
    product, so nothing is saved for backward (in ``mixed`` no float32 activation stays alive)."""

    @staticmethod
    def forward(ctx, x, table, equation, adjoint):
        ctx.table, ctx.adjoint = table, adjoint
        return products.einsum(equation, x, table)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return products.einsum(ctx.adjoint, grad, ctx.table.to(grad.dtype)), None, None, None


_ANALYSIS, _SYNTHESIS = "nkmr,mlk->nlmr", "nlmr,mlk->nkmr"  # each the other's adjoint


def _orders(mmax: int) -> tuple[int]:
    """``n_modes`` of the longitude DFT that keeps orders ``0 … mmax - 1``."""
    return (2 * (mmax - 1),)


def forward(x: torch.Tensor, lmax: int, mmax: int, grid: str = "equiangular", dtype: torch.dtype | None = None,
            backend: str = "auto") -> torch.Tensor:
    """Coefficients of real fields ``x`` (..., nlat, nlon) as real pairs (..., lmax, mmax, 2).

    ``dtype``: the working precision (``x`` is rounded to it first); default
    ``x.dtype``. ``backend``: how the longitude DFT runs in half precision
    (:func:`mpno.ops.transforms.implementation`).
    """
    if x.ndim < 2:
        raise ValueError(f"the SHT expects fields (..., nlat, nlon); got shape {tuple(x.shape)}")
    check_grid(grid)
    *lead, nlat, nlon = x.shape
    check_sizes(nlat, nlon, lmax, mmax, grid)
    if dtype is not None:
        x = x.to(dtype)
    fourier = transforms.forward(x.reshape(-1, nlat, nlon), _orders(mmax), backend=backend)  # (N, nlat, mmax, 2)
    table = _legendre_table("analysis", nlat, lmax, mmax, grid, x.dtype, x.device)
    return _Legendre.apply(fourier, table, _ANALYSIS, _SYNTHESIS).reshape(*lead, lmax, mmax, 2)


def inverse(coeffs: torch.Tensor, nlat: int, nlon: int, grid: str = "equiangular",
            dtype: torch.dtype | None = None, backend: str = "auto") -> torch.Tensor:
    """Real fields (..., nlat, nlon) from coefficients as real pairs (..., lmax, mmax, 2).

    The inverse of :func:`forward` on fields of degree ``< lmax`` and order
    ``< mmax``. ``dtype``: the working precision; default ``coeffs.dtype``.
    """
    if coeffs.ndim < 3 or coeffs.shape[-1] != 2:
        raise ValueError(f"the inverse SHT expects real pairs (..., lmax, mmax, 2); got shape {tuple(coeffs.shape)}")
    check_grid(grid)
    *lead, lmax, mmax, _ = coeffs.shape
    check_sizes(nlat, nlon, lmax, mmax, grid)
    if dtype is not None:
        coeffs = coeffs.to(dtype)
    table = _legendre_table("synthesis", nlat, lmax, mmax, grid, coeffs.dtype, coeffs.device)
    fourier = _Legendre.apply(coeffs.reshape(-1, lmax, mmax, 2), table, _SYNTHESIS, _ANALYSIS)
    return transforms.inverse(fourier, (nlon,), backend=backend).reshape(*lead, nlat, nlon)


class _Transform(torch.nn.Module):
    """Sizes, grid and policy of a transform module; no parameters or buffers (the tables are cached)."""

    def __init__(self, nlat: int, nlon: int, lmax: int | None = None, mmax: int | None = None,
                 grid: str = "equiangular", norm: str = "ortho", precision: Precision | str = "full"):
        super().__init__()
        self.nlat, self.nlon, self.grid = nlat, nlon, check_grid(grid)
        self.lmax, self.mmax = _modes(nlat, nlon, lmax, mmax, grid, norm)
        self.precision = Precision.parse(precision)

    def extra_repr(self) -> str:
        return (f"nlat={self.nlat}, nlon={self.nlon}, lmax={self.lmax}, mmax={self.mmax}, grid={self.grid}, "
                f"precision={self.precision}")


class RealSHT(_Transform):
    """Forward SHT of real fields (..., nlat, nlon) to complex coefficients (..., lmax, mmax).

    torch-harmonics' ``RealSHT`` interface and conventions (``norm="ortho"``,
    Condon–Shortley phase). Defaults: ``lmax`` the largest the grid transforms
    exactly (``(nlat + 1) // 2`` equiangular, ``nlat`` Legendre–Gauss) and
    ``mmax = min(nlon // 2 + 1, lmax)``. ``precision`` (a :class:`mpno.Precision`
    or mode name) sets the working dtype: half in mode ``half``; float32 (float64
    for float64 input) otherwise, with the coefficients rounded to half in mode
    ``mixed``. Half results are returned as complex64 holding half values
    (PyTorch has no complex bfloat16). The policy's stabilizer is not applied
    here (layers apply it). The module holds no parameters or buffers: its
    tables are cached per dtype and device (:mod:`mpno.ops.tables`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last(x, (self.nlat, self.nlon), "RealSHT", "(..., nlat, nlon)")
        policy = self.precision
        coeffs = forward(x, self.lmax, self.mmax, self.grid, policy.forward_dtype or _wide(x.dtype),
                         policy.fft_backend)
        if policy.contraction_dtype is not None:
            coeffs = coeffs.to(policy.contraction_dtype)
        return torch.view_as_complex(coeffs.to(_wide(coeffs.dtype)).contiguous())


class InverseRealSHT(_Transform):
    """Inverse SHT: complex coefficients (..., lmax, mmax) to real fields (..., nlat, nlon).

    Arguments as :class:`RealSHT`. The working dtype is half in modes ``mixed`` and
    ``half``, float32 (float64 for complex128 input) otherwise; the output has it.
    """

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        if not isinstance(coeffs, torch.Tensor) or not coeffs.is_complex():
            raise ValueError("InverseRealSHT expects complex coefficients (..., lmax, mmax); got "
                             f"{getattr(coeffs, 'dtype', type(coeffs).__name__)}")
        _check_last(coeffs, (self.lmax, self.mmax), "InverseRealSHT", "(..., lmax, mmax)")
        pairs = torch.view_as_real(coeffs)
        dtype = self.precision.inverse_dtype or _wide(pairs.dtype)
        return inverse(pairs, self.nlat, self.nlon, self.grid, dtype, self.precision.fft_backend)


def _modes(nlat, nlon, lmax, mmax, grid, norm) -> tuple[int, int]:
    if norm != "ortho":
        raise ValueError(f"norm={norm!r} is not supported; mpno's SHT is orthonormal ('ortho')")
    check_sizes(nlat, nlon, 1, 1, grid)
    lmax = exact_lmax(nlat, grid) if lmax is None else lmax
    mmax = min(nlon // 2 + 1, lmax) if mmax is None else mmax
    check_sizes(nlat, nlon, lmax, mmax, grid)
    return lmax, mmax


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The parts of ``dtype``'s complex values (:attr:`mpno.dtypes.DtypeInfo.complex_part_dtype`): float64
    stays float64; everything else is computed (or returned) in float32 (there is no complex bfloat16)."""
    return dtypes.info(dtype).complex_part_dtype


def _check_last(t: torch.Tensor, expected: tuple, who: str, layout: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim < 2 or tuple(t.shape[-2:]) != expected:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{who} expects {layout} = (..., {expected[0]}, {expected[1]}); got {shape}")
