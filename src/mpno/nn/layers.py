"""Real-valued building blocks of neural operators, run in the policy's real-layer dtype."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import products, tables
from .. import precision as precision_module
from ..precision import Precision

SKIPS = ("linear", "identity", "soft-gating")


def _channel_view(vector: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (C, 1, ..., 1) for broadcasting over ``ndim`` spatial dims."""
    return vector.view(-1, *([1] * ndim))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.real_dtype or self.weight.dtype
        weight = self.weight.to(dtype).expand(x.shape[0], *self.weight.shape)  # a batched product copies nothing
        y = products.matmul(weight, x.to(dtype).flatten(2)).unflatten(-1, x.shape[2:])
        if self.bias is not None:
            y = y + _channel_view(self.bias.to(dtype), x.ndim - 2)
        return y


class SoftGating(nn.Module):
    """Per-channel learned scaling ``x * w`` (``w`` starts at 1)."""

    def __init__(self, channels: int, precision: Precision | str = "full"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.precision = Precision.parse(precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.precision.real_dtype or self.weight.dtype
        return x.to(dtype) * _channel_view(self.weight.to(dtype), x.ndim - 2)


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
        y = self.conv(x) + self.skip(x)
        if self.mlp is not None:
            y = self.mlp(F.gelu(y)) + self.mlp_skip(x)
        return F.gelu(y) if activate else y


class OutdatedArchitecture(ValueError):
    """Saved weights of an operator whose design has since changed (they cannot be loaded into the new one)."""


class Operator(nn.Module):
    """What mpno's operators share: one policy for every layer, kept inside ``torch.autocast``.

    Subclasses compute in ``_forward`` and call :meth:`_in_own_policy` from ``forward``.
    """

    def set_precision(self, precision: Precision | str) -> Precision:
        """Switch every layer to ``precision`` (takes effect at the next forward pass)."""
        self.precision = precision_module.set_precision(self, precision)
        return self.precision

    def _in_own_policy(self, x, device_type: str):
        """``_forward(x)`` with autocast off, in :func:`mpno.precision.inside_autocast`'s policy."""
        policy = precision_module.inside_autocast(self.precision, device_type)
        with torch.autocast(device_type, enabled=False):
            if policy is self.precision:
                return self._forward(x)
            own = self.precision
            self.set_precision(policy)
            try:
                return self._forward(x)
            finally:
                self.set_precision(own)
