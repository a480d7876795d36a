"""The U-shaped neural operator (U-NO): an encoder–decoder of spectral layers on coarser and coarser grids,
with skip connections across the U."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import as_modes, check_field, operator_in_channels, positive_int
from ..ops import transforms
from ..precision import Precision
from .factorized import factorization_name
from .layers import ChannelMLP, DomainPadding, PointwiseLinear, SoftGating, cat_channels, channels_last, \
    grid_coordinates
from .operator import Operator
from .spectral import SpectralConv


def resample(x: torch.Tensor, grid: Sequence[int], policy: Precision) -> torch.Tensor:
    """``x`` (batch, channels, *grid_x) on ``grid``, in Fourier space: the frequencies both grids resolve
    (an even grid's Nyquist frequency left out) are kept, the others are dropped or zero.

    A field of those frequencies is resampled exactly. The transform runs in the policy's forward stage
    and its coefficients are rounded to its inverse stage, like a kernel layer's without weights.
    """
    master = torch.promote_types(x.dtype, torch.float32) if policy.forward_dtype is None else None
    modes = [min(a, b) - 1 + min(a, b) % 2 for a, b in zip(x.shape[2:], grid)]
    coeffs = transforms.forward(x.to(policy.forward_dtype or master), modes, backend=policy.fft_backend,
                                result_dtype=policy.inverse_dtype)
    return transforms.inverse(coeffs.to(policy.inverse_dtype or master), grid, backend=policy.fft_backend)


class UNOBlock(nn.Module):
    """``act(K(x) + W x)`` from ``in_channels`` on one grid to ``out_channels`` on another, with an optional
    channel MLP ``act(mlp(act(y)) + gate(y))``: the kernel layer's inverse transform lands on the new grid, the
    skip ``W x`` (a 1×1 convolution) is resampled there in Fourier space (:func:`resample`)."""

    def __init__(self, in_channels: int, out_channels: int, n_modes: Sequence[int], channel_mlp_expansion,
                 **kernel_options):
        super().__init__()
        self.conv = SpectralConv(in_channels, out_channels, n_modes, **kernel_options)
        self.skip = PointwiseLinear(in_channels, out_channels, bias=False)
        self.mlp = self.gate = None
        if channel_mlp_expansion:
            self.mlp = ChannelMLP(out_channels, max(1, round(out_channels * channel_mlp_expansion)), out_channels)
            self.gate = SoftGating(out_channels)

    def forward(self, x: torch.Tensor, grid: Sequence[int], activate: bool) -> torch.Tensor:
        skip = self.skip(x)
        if tuple(grid) != tuple(x.shape[2:]):
            skip = resample(skip, grid, self.conv.precision).to(skip.dtype)
        y = skip + self.conv._forward(x, grid)
        if self.mlp is not None:
            y = self.mlp(F.gelu(y)) + self.gate(y)
        return F.gelu(y) if activate else y


def default_scalings(n_layers: int) -> list[float]:
    """Halve the grid in the first half of the layers, keep it in the middle one (an odd count), double it back."""
    half = n_layers // 2
    return [0.5] * half + [1.0] * (n_layers % 2) + [2.0] * half


class UNO(Operator, kind="uno", domain="grid"):
    """U-shaped neural operator (Rahman, Ross & Azizzadenesheli, 2022) for fields (batch, in_channels, *grid).

    Lifting → ``n_layers`` :class:`UNOBlock` s → projection. Layer ``i`` maps its input
    grid to that grid times ``scalings[i]`` (every dimension; the last layer returns to
    the input's grid), so the first layers encode on coarser and coarser grids and the
    last ones decode back. The output of layer ``i`` also feeds layer
    ``n_layers − 1 − i`` (for ``i < (n_layers − 1) / 2``), through a 1×1 convolution,
    concatenated with that layer's input and resampled to its grid if need be: the
    skips across the U.

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_modes: kept frequencies per dimension on the input's grid; a layer keeps them
            scaled by the coarsest grid it touches (at least 1): ``n_modes / 2`` on a
            grid halved.
        hidden_channels: the lifting's width; layer ``i``'s is ``hidden_channels ·
            2^k`` on a grid halved ``k`` times, unless ``widths`` gives each layer's.
        n_layers: number of layers.
        scalings: each layer's factor of resolution (default: halve in the first half,
            double back in the second, :func:`default_scalings`).
        precision, lifting_channels, projection_channels, channel_mlp,
        channel_mlp_expansion, positional_embedding, domain_padding, factorization,
        rank, implementation: as :class:`mpno.FNO`.

    The model runs on any grid with at least ``n_modes`` points per dimension (every
    level then carries its layers' modes); the output is on the input's grid, in the
    input's dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (16, 16),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 scalings: Sequence[float] | None = None, widths: Sequence[int] | None = None,
                 lifting_channels: int | None = None, projection_channels: int | None = None,
                 channel_mlp: bool = True, channel_mlp_expansion: float = 0.5, positional_embedding: bool = True,
                 domain_padding: float = 0.0, factorization: str | None = None,
                 rank: float | int | Sequence[int] = 0.05, implementation: str = "factorized"):
        super().__init__()
        self.in_channels = operator_in_channels(in_channels, type(self).__name__)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = as_modes(n_modes)
        self.factorization = factorization_name(factorization)
        hidden, layers = positive_int("hidden_channels", hidden_channels), positive_int("n_layers", n_layers)
        self.scalings = [float(s) for s in (default_scalings(layers) if scalings is None else scalings)]
        if len(self.scalings) != layers or not all(0 < s <= 4 for s in self.scalings):
            raise ValueError(f"scalings={scalings!r} is not supported; give {layers} factors in (0, 4], one per layer")
        levels = [math.prod(self.scalings[:i]) for i in range(layers + 1)]  # each layer's input scale, then the end
        levels[-1] = 1.0  # the last layer returns to the input's grid
        self.widths = list(widths) if widths is not None else [
            hidden * 2 ** max(0, round(-math.log2(scale))) for scale in levels[1:]]
        if len(self.widths) != layers:
            raise ValueError(f"widths={widths!r} is not supported; give {layers} channel counts, one per layer")
        self.skips = {layers - 1 - i: i for i in range((layers - 1) // 2)}  # into layer j from layer i
        self.positional_embedding = positional_embedding
        extra = len(self.n_modes) if positional_embedding else 0
        self.lifting = ChannelMLP(in_channels + extra, lifting_channels or 2 * hidden, hidden)
        self.padding = DomainPadding(domain_padding) if domain_padding else None
        blocks, self.layer_modes, width = [], [], hidden
        for i, out in enumerate(self.widths):
            positive_int(f"widths[{i}]", out)
            width += self.widths[self.skips[i]] if i in self.skips else 0
            scale = min(1.0, levels[i], levels[i + 1])
            self.layer_modes.append(tuple(max(1, math.floor(m * scale)) for m in self.n_modes))
            blocks.append(UNOBlock(width, out, self.layer_modes[-1], channel_mlp_expansion if channel_mlp else None,
                                   factorization=factorization, rank=rank, implementation=implementation))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.bridges = nn.ModuleDict({str(i): PointwiseLinear(self.widths[i], self.widths[i], bias=False)
                                      for i in self.skips.values()})
        self.projection = ChannelMLP(width, projection_channels or 2 * hidden, out_channels)
        self._levels = levels

    def grids(self, grid: Sequence[int]) -> list[tuple[int, ...]]:
        """The grid each layer's input is on, then the output's, for an input (after padding) on ``grid``."""
        return [tuple(max(1, round(n * scale)) for n in grid) for scale in self._levels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)  # then every level carries its modes
        return self._in_own_policy(x, x.device.type)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype, grid = x.dtype, x.shape[2:]
        x = cat_channels([x, grid_coordinates(x)]) if self.positional_embedding else channels_last(x)
        x = self.lifting(x)
        if self.padding is not None:
            x = self.padding.pad(x)
        grids, outputs = self.grids(x.shape[2:]), {}
        for i, block in enumerate(self.blocks):
            if i in self.skips:
                bridged = self.bridges[str(self.skips[i])](outputs[self.skips[i]])
                if bridged.shape[2:] != x.shape[2:]:
                    bridged = resample(bridged, x.shape[2:], block.conv.precision).to(x.dtype)
                x = cat_channels([x, bridged.to(x.dtype)])
            x = block(x, grids[i + 1], activate=i < len(self.blocks) - 1)
            if i in self.skips.values():
                outputs[i] = x
        if self.padding is not None:
            x = self.padding.crop(x, grid)
        return self.projection(x).to(out_dtype)
