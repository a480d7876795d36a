"""Neural operators on the sphere: the spherical convolution, the SFNO and a quadrature-weighted loss."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import check_field, operator_in_channels, positive_int
from ..ops import sht, tables
from ..ops.contraction import complex_einsum, complex_pair
from ..ops.stabilizers import stabilize
from ..precision import Precision, autocast_off
from . import casting
from .factorized import factorization_name
from .layers import ChannelMLP, Operator, OperatorBlock, cat_channels, channels_last
from .losses import _relative, _working
from .spectral import KernelWeights

_DENSE = "bilm,iol->bolm"  # batch, in, degree l, order m; the weight depends on l only


def spherical_modes(n_modes: Sequence[int]) -> tuple[int, int]:
    """``(lmax, mmax)`` as two positive ints."""
    modes = tuple(n_modes) if not isinstance(n_modes, int) else (n_modes,)
    if len(modes) != 2 or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in modes):
        raise ValueError(f"n_modes={n_modes!r} is not supported; give (lmax, mmax): the degrees 0 … lmax-1 "
                         "and orders 0 … mmax-1 the spherical harmonic transform keeps")
    return modes


class SphericalConv(KernelWeights):
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
                 bias: bool = True, precision: Precision | str = "full", factorization: str | None = None,
                 rank: float | int | Sequence[int] = 0.05, implementation: str = "factorized"):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = spherical_modes(n_modes)
        self.grid = sht.check_grid(grid)
        self.precision = Precision.parse(precision)
        self._make_weights((in_channels, out_channels, self.n_modes[0]), factorization, rank, implementation, bias)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        with autocast_off(x.device.type):  # the policy decides, not autocast
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        policy = self.precision
        nlat, nlon = x.shape[2:]
        x = stabilize(x.to(policy.forward_dtype or self.master_dtype), policy.stabilizer)
        coeffs = sht.forward(x, *self.n_modes, grid=self.grid, backend=policy.fft_backend)
        coeffs = self.contract(coeffs, policy.contraction_dtype or self.master_dtype)
        coeffs = coeffs.to(policy.inverse_dtype or self.master_dtype)
        return self.add_bias(sht.inverse(coeffs, nlat, nlon, self.grid, backend=policy.fft_backend))

    def extra_repr(self) -> str:
        kind = "dense" if self.factorized is None else f"{self.factorized.kind}, {self.implementation}"
        return (f"{self.in_channels}, {self.out_channels}, n_modes={self.n_modes}, grid={self.grid}, {kind}, "
                f"bias={self.bias is not None}, precision={self.precision}")


@tables.cached(maxsize=32)
def _sphere_points(nlat: int, nlon: int, grid: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, nlat, nlon): the Cartesian coordinates of each grid point on the unit sphere."""
    theta, _ = sht.quadrature(nlat, grid)
    phi = 2 * math.pi * torch.arange(nlon, dtype=torch.float64) / nlon
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    points = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()])
    return points.to(dtype=dtype, device=device)


class SFNO(Operator):
    """Spherical Fourier Neural Operator for fields (batch, in_channels, nlat, nlon) on the sphere.

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_modes: ``(lmax, mmax)`` kept by every spherical layer (:class:`SphericalConv`).
        hidden_channels, n_layers, precision, lifting_channels, projection_channels,
        skip, channel_mlp, channel_mlp_expansion, factorization, rank,
        implementation: as :class:`mpno.FNO`.
        grid: the latitude grid of the data, ``"equiangular"`` (poles included) or
            ``"legendre-gauss"``; longitudes are ``2πj / nlon``.
        positional_embedding: append the unit-sphere coordinates (x, y, z) of each
            point as three input channels (they depend on the grid, not on its size).

    Runs on any grid of its type that carries ``n_modes`` (``nlat >= lmax``, ``nlon >= 2 (mmax - 1)``;
    without aliasing where ``lmax`` is at most :func:`mpno.ops.sht.exact_lmax`).
    :attr:`arguments` holds the constructor's arguments (all but ``precision``) for
    :func:`mpno.nn.registry.build_operator`; inside ``torch.autocast`` the model keeps
    its policy, and a ``full`` model runs as ``amp`` (:func:`mpno.precision.inside_autocast`).
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: Sequence[int] = (16, 16),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 grid: str = "equiangular", lifting_channels: int | None = None,
                 projection_channels: int | None = None, skip: str = "linear", channel_mlp: bool = True,
                 channel_mlp_expansion: float = 0.5, positional_embedding: bool = True,
                 factorization: str | None = None, rank: float | int | Sequence[int] = 0.05,
                 implementation: str = "factorized"):
        super().__init__()
        self.in_channels = operator_in_channels(in_channels, type(self).__name__)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = spherical_modes(n_modes)
        self.grid = sht.check_grid(grid)
        self.arguments = {
            "in_channels": in_channels, "out_channels": out_channels, "n_modes": list(self.n_modes),
            "hidden_channels": hidden_channels, "n_layers": n_layers, "grid": grid,
            "lifting_channels": lifting_channels, "projection_channels": projection_channels, "skip": skip,
            "channel_mlp": channel_mlp, "channel_mlp_expansion": channel_mlp_expansion,
            "positional_embedding": positional_embedding, "factorization": factorization_name(factorization),
            "rank": rank if isinstance(rank, (int, float)) else list(rank), "implementation": implementation,
        }
        hidden = positive_int("hidden_channels", hidden_channels)
        positive_int("n_layers", n_layers)
        self.positional_embedding = positional_embedding
        self.lifting = ChannelMLP(in_channels + (3 if positional_embedding else 0),
                                  lifting_channels or 2 * hidden, hidden)
        self.blocks = nn.ModuleList(
            OperatorBlock(SphericalConv(hidden, hidden, self.n_modes, grid=grid, factorization=factorization,
                                        rank=rank, implementation=implementation),
                          hidden, skip, channel_mlp_expansion if channel_mlp else None)
            for _ in range(n_layers)
        )
        self.projection = ChannelMLP(hidden, projection_channels or 2 * hidden, out_channels)
        self.set_precision(precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        return self._in_own_policy(x, x.device.type)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype
        if self.positional_embedding:
            points = _sphere_points(*x.shape[2:], self.grid, x.dtype, x.device)
            x = cat_channels([x, points.expand(x.shape[0], *points.shape)])
        else:
            x = channels_last(x)
        x = self.lifting(x)
        for i, block in enumerate(self.blocks):
            x = block(x, activate=i < len(self.blocks) - 1)
        return self.projection(x).to(out_dtype)


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
