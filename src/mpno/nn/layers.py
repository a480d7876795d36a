"""Real-valued building blocks of neural operators, run in the policy's real-layer dtype."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import products, tables
from . import casting
from ..precision import Precision

SKIPS = ("linear", "identity", "soft-gating")


def _channel_view(vector: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (C, 1, ..., 1) for broadcasting over ``ndim`` spatial dims."""
    return vector.view(-1, *([1] * ndim))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (batch, channels, *grid) with the channels innermost in memory (copied only if they are not).

    mpno's operators keep their activations in this layout: the pointwise layers
    (1×1 convolutions) and the transforms run fastest on it, and need no copies.
    """
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def cat_channels(tensors) -> torch.Tensor:
    """Fields (batch, channels_k, *grid) concatenated along the channels, in channels-last memory: one copy."""
    return torch.cat([t.movedim(1, -1) for t in tensors], dim=-1).movedim(-1, 1)


class PointwiseLinear(nn.Module):
    """Mixes channels at every grid point (a 1×1 convolution) of (batch, channels, *grid).

    In modes other than ``full`` the product runs in the half dtype with float32
    accumulation (see :mod:`mpno.ops.products`); weights stay in the master dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 precision: Precision | str = "full"):
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        self.precision = Precision.parse(precision)

    def half_parameters(self):
        """``(parameter, dtype)`` of the parameters used in half (:mod:`mpno.nn.casting`)."""
        dtype = self.precision.real_dtype
        return () if dtype is None else ((self.weight, dtype), (self.bias, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.real_dtype or self.weight.dtype
        return products.pointwise(x.to(dtype), casting.weight(self.weight, dtype), casting.weight(self.bias, dtype))


class SoftGating(nn.Module):
    """Per-channel learned scaling ``x * w`` (``w`` starts at 1)."""

    def __init__(self, channels: int, precision: Precision | str = "full"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.precision = Precision.parse(precision)

    def half_parameters(self):
        """``(parameter, dtype)`` of the parameters used in half (:mod:`mpno.nn.casting`)."""
        dtype = self.precision.real_dtype
        return () if dtype is None else ((self.weight, dtype),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.real_dtype or self.weight.dtype
        return x.to(dtype) * _channel_view(casting.weight(self.weight, dtype), x.ndim - 2)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def skip_connection(kind: str, channels: int) -> nn.Module:
    """A skip branch: ``"linear"`` (1×1 conv, no bias), ``"identity"`` or ``"soft-gating"``."""
    if kind == "linear":
        return PointwiseLinear(channels, channels, bias=False)
    if kind == "identity":
        return Identity()
    if kind == "soft-gating":
        return SoftGating(channels)
    raise ValueError(f"skip={kind!r} is not supported; allowed: {', '.join(repr(s) for s in SKIPS)}")


class ChannelMLP(nn.Module):
    """Two pointwise layers with a GELU between: ``in -> hidden -> out``."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        self.fc1 = PointwiseLinear(in_channels, hidden_channels)
        self.fc2 = PointwiseLinear(hidden_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


@tables.cached(maxsize=32)
def _coordinates(grid: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    axes = [torch.arange(n, device=device, dtype=dtype) / n for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def grid_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Coordinates ``j / n`` in [0, 1) of each point of ``x``'s grid, as (batch, ndim, *grid)."""
    coords = _coordinates(tuple(x.shape[2:]), x.dtype, x.device)
    return coords.unsqueeze(0).expand(x.shape[0], *coords.shape)


class DomainPadding(nn.Module):
    """Zero-pads the end of every spatial dimension by ``fraction`` of its size, and crops back.

    For non-periodic problems: the Fourier layers then see a periodic extension
    instead of wrapping the boundary values onto each other.
    """

    def __init__(self, fraction: float):
        super().__init__()
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"domain_padding={fraction!r} is not supported; give a fraction in [0, 1]")
        self.fraction = fraction

    def pads(self, grid) -> list[int]:
        return [round(n * self.fraction) for n in grid]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        widths = []
        for p in reversed(self.pads(x.shape[2:])):
            widths += [0, p]
        return F.pad(x, widths)

    def crop(self, x: torch.Tensor, grid) -> torch.Tensor:
        return x[(..., *(slice(0, n) for n in grid))]


class OperatorBlock(nn.Module):
    """``act(K(x) + skip(x))`` for a kernel layer ``conv`` (spectral or spherical), with an optional channel
    MLP: ``act(mlp(act(K(x) + skip(x))) + gate(x))``."""

    def __init__(self, conv: nn.Module, channels: int, skip: str, channel_mlp_expansion: float | None):
        super().__init__()
        self.conv = conv
        self.skip = skip_connection(skip, channels)
        if channel_mlp_expansion:
            self.mlp = ChannelMLP(channels, max(1, round(channels * channel_mlp_expansion)), channels)
            self.mlp_skip = SoftGating(channels)
        else:
            self.mlp = self.mlp_skip = None

    def forward(self, x: torch.Tensor, activate: bool) -> torch.Tensor:
        y = self.skip(x) + self.conv(x)  # the sum takes the first term's memory layout: channels last
        if self.mlp is not None:
            y = self.mlp(F.gelu(y)) + self.mlp_skip(x)
        return F.gelu(y) if activate else y


class FixedModes:
    """``n_modes`` is set once, when a layer or operator is built: its spectral weights hold exactly the kept
    modes (nothing beyond them), so there is nothing to switch to; setting it again raises ``AttributeError``.

    (neuraloperator's incremental training sets ``model.n_modes`` on weights sized for
    ``max_n_modes``; in mpno, build a model with the modes wanted.)
    """

    @property
    def n_modes(self) -> tuple[int, ...]:
        """The kept modes, as given when the model was built."""
        return self.__dict__["_n_modes"]

    @n_modes.setter
    def n_modes(self, value) -> None:
        if "_n_modes" in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.n_modes is fixed when the model is built: its spectral weights hold "
                f"exactly n_modes={self.n_modes} (mpno has no neuraloperator-style incremental training of "
                f"modes); build a new {type(self).__name__} with n_modes={value!r}")
        self.__dict__["_n_modes"] = value
