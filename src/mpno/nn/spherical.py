"""Neural operators on the sphere: the spherical convolution, the SFNO and a quadrature-weighted loss."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..ops import sht, tables
from ..ops.contraction import complex_einsum, complex_pair
from ..precision import Precision
from . import casting
from .losses import _relative, _working
from .models import FieldOperator
from .spectral import KernelLayer

_DENSE = "bilm,iol->bolm"  # batch, in, degree l, order m; the weight depends on l only


def spherical_modes(n_modes: Sequence[int]) -> tuple[int, int]:
    """``(lmax, mmax)`` as two positive ints."""
    modes = tuple(n_modes) if not isinstance(n_modes, int) else (n_modes,)
    if len(modes) != 2 or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in modes):
        raise ValueError(f"n_modes={n_modes!r} is not supported; give (lmax, mmax): the degrees 0 … lmax-1 "
                         "and orders 0 … mmax-1 the spherical harmonic transform keeps")
    return modes


class SphericalConv(KernelLayer):
    """Spherical convolution ``x -> SHT⁻¹(R_l · SHT(x)) + bias`` of fields (batch, channels, nlat, nlon).

    Args:
        in_channels, out_channels: channel counts.
        n_modes: ``(lmax, mmax)``: the degrees ``l < lmax`` and orders ``m < mmax`` kept
            (neuraloperator's ``SphericalConv(n_modes=(a, b))`` keeps ``(a, b // 2)``).
        grid: ``"equiangular"`` or ``"legendre-gauss"`` (:mod:`mpno.ops.sht`); the
            layer runs on any such grid that resolves ``lmax`` and ``mmax``.
        bias, precision, factorization, rank, implementation: as :class:`mpno.SpectralConv`.

    The weight ``R`` is complex per (in, out, degree ``l``) and shared by all
    orders ``m`` of a degree (the Driscoll–Healy convolution theorem, the
    ``"driscoll-healy"`` operator of torch-harmonics' SFNO and neuraloperator's
    ``dhconv``): dense, it is stored as real pairs ``(in, out, lmax, 2)``; a
    factorised weight has the same implied shape. Its real part is the
    rotation-equivariant convolution with a zonal kernel. Initial weights have
    ``E|R|² = 2 / (in + out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: Sequence[int], grid: str = "equiangular",
                 **options):
        self.grid = sht.check_grid(grid)
        super().__init__(in_channels, out_channels, n_modes, **options)

    def _modes(self, n_modes) -> tuple[int, int]:
        return spherical_modes(n_modes)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels, self.n_modes[0])

    def _transform(self, x: torch.Tensor, policy: Precision) -> torch.Tensor:
        return sht.forward(x, *self.n_modes, grid=self.grid, backend=policy.fft_backend)

    def _inverse(self, coeffs: torch.Tensor, grid: Sequence[int], policy: Precision) -> torch.Tensor:
        return sht.inverse(coeffs, *grid, self.grid, backend=policy.fft_backend)

    def contract(self, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Multiply coefficients (batch, in, lmax, mmax, 2) by the per-degree weights, in ``dtype``."""
        coeffs = coeffs.to(dtype)
        if self.factorized is None:
            return complex_pair(_DENSE, coeffs, casting.weight(self.weight, dtype))
        if self.implementation == "reconstructed":
            return complex_pair(_DENSE, coeffs, self.factorized.to_dense(dtype))
        i, o, l = self.factorized.letters  # "m" (the order) is no factor's letter
        equation = f"b{i}{l}m,{','.join(self.factorized.terms)}->b{o}{l}m"
        return complex_einsum(equation, coeffs, *[casting.weight(f, dtype) for f in self.factorized.factors])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}"


@tables.cached(maxsize=32)
def _sphere_points(nlat: int, nlon: int, grid: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, nlat, nlon): the Cartesian coordinates of each grid point on the unit sphere."""
    theta, _ = sht.quadrature(nlat, grid)
    phi = 2 * math.pi * torch.arange(nlon, dtype=torch.float64) / nlon
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    points = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()])
    return points.to(dtype=dtype, device=device)


class SFNO(FieldOperator, kind="sfno", domain="sphere"):
    """Spherical Fourier Neural Operator for fields (batch, in_channels, nlat, nlon) on the sphere:
    :class:`mpno.nn.models.FieldOperator` with :class:`SphericalConv` layers.

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_modes: ``(lmax, mmax)`` kept by every spherical layer (:class:`SphericalConv`).
        grid: the latitude grid of the data, ``"equiangular"`` (poles included) or
            ``"legendre-gauss"``; longitudes are ``2πj / nlon``.
        **options: as :class:`mpno.FNO` (``hidden_channels``, ``n_layers``, ``precision``,
            ``skip``, ``factorization``, ...), but no ``domain_padding``: the sphere has
            no boundary. The positional embedding appends the unit-sphere coordinates
            (x, y, z) of each point as three input channels (they depend on the grid,
            not on its size).

    Runs on any grid of its type that carries ``n_modes`` (``nlat >= lmax``, ``nlon >= 2 (mmax - 1)``;
    without aliasing where ``lmax`` is at most :func:`mpno.ops.sht.exact_lmax`).
    """

    kernel_layer = SphericalConv

    def __init__(self, in_channels: int, out_channels: int, n_modes: Sequence[int] = (16, 16),
                 grid: str = "equiangular", **options):
        if options.get("domain_padding"):
            raise ValueError(f"domain_padding={options['domain_padding']!r} does not apply to an SFNO: the sphere "
                             "has no boundary to pad")
        self.grid = sht.check_grid(grid)
        super().__init__(in_channels, out_channels, n_modes, **options)

    def _modes(self, n_modes) -> tuple[int, int]:
        return spherical_modes(n_modes)

    def _kernel_options(self) -> dict:
        return {"grid": self.grid}

    def _coordinate_channels(self) -> int:
        return 3

    def _coordinates(self, x: torch.Tensor) -> torch.Tensor:
        points = _sphere_points(*x.shape[2:], self.grid, x.dtype, x.device)
        return points.expand(x.shape[0], *points.shape)


@tables.cached(maxsize=32)
def _area_weights(nlat: int, nlon: int, grid: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(nlat, 1): the quadrature weight of each point, ``2π w_k / nlon`` (they sum to 4π over the grid)."""
    _, weights = sht.quadrature(nlat, grid)
    return (2 * math.pi / nlon * weights)[:, None].to(dtype=dtype, device=device)


class SphericalL2Loss:
    """Relative ``‖pred − y‖ / ‖y‖`` in L²(S²) per sample (quadrature of the grid, all channels), averaged.

    Fields (batch, channels, nlat, nlon) on ``grid``. ``normalizer`` (a
    :class:`mpno.nn.normalized.UnitGaussianNormalizer`, usually the one a model's
    outputs were standardised with) standardises both fields per channel first, so
    that channels in different units (a height in metres about a 3000 m mean beside
    a vorticity in s⁻¹) count alike and a channel's mean does not hide its errors.
    ``relative=False``: the absolute norm ``(∫|e|² dΩ / 4π)^½`` (the root mean
    square over the sphere, channels summed). Computed in float32 (or float64)
    whatever the model's precision.
    """

    def __init__(self, grid: str = "equiangular", relative: bool = True, normalizer: nn.Module | None = None):
        self.grid, self.relative, self.normalizer = sht.check_grid(grid), relative, normalizer
        self.name = "l2" if relative else "abs_l2"

    def _squared(self, field: torch.Tensor) -> torch.Tensor:
        weights = _area_weights(*field.shape[-2:], self.grid, field.dtype, field.device)
        return (field.square() * weights).sum((-3, -2, -1))  # (batch,)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, target = _working(prediction, target)
        if prediction.ndim != 4:
            raise ValueError(f"SphericalL2Loss expects fields (batch, channels, nlat, nlon); got shape "
                             f"{tuple(prediction.shape)}")
        if self.normalizer is not None:
            prediction, target = self.normalizer.encode(prediction), self.normalizer.encode(target)
        error = self._squared(prediction - target)
        if not self.relative:
            return (error / (4 * math.pi)).sqrt().mean()
        return _relative(error, self._squared(target))
