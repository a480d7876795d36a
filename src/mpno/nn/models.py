"""Neural operators: the Fourier Neural Operator in 1, 2 and 3 dimensions."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..checks import as_modes, check_field, operator_in_channels, positive_int
from ..precision import Precision
from .factorized import factorization_name
from .layers import (ChannelMLP, DomainPadding, Operator, OperatorBlock, cat_channels, channels_last,
                     grid_coordinates)
from .spectral import SpectralConv


class FNO(Operator):
    """Fourier Neural Operator for fields of shape (batch, in_channels, *grid).

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_modes: kept frequencies per spatial dimension (``neuraloperator``'s
            meaning); ``len(n_modes)`` is the number of spatial dims (1 to 3).
        hidden_channels: width of the Fourier layers.
        n_layers: number of Fourier layers.
        precision: a :class:`mpno.Precision` or mode name; change it between
            steps with :meth:`set_precision`.
        lifting_channels, projection_channels: hidden widths of the two-layer
            lifting and projection MLPs (default ``2 * hidden_channels``).
        skip: ``"linear"``, ``"identity"`` or ``"soft-gating"``.
        channel_mlp: add a channel MLP (expansion ``channel_mlp_expansion``) to each block.
        positional_embedding: append the grid coordinates in [0, 1) as input channels.
        domain_padding: zero-pad each dimension by this fraction (non-periodic problems).
        factorization, rank, implementation: the spectral weights' form (see
            :class:`mpno.SpectralConv`); ``None`` for dense weights.

    The same model runs on any grid with at least ``n_modes[i]`` points along
    dimension ``i``: train at 32², evaluate at 64². The output has the input's dtype.
    :attr:`arguments` holds the constructor's arguments (all but ``precision``), so
    that :func:`mpno.nn.registry.build_operator` can rebuild the model from a checkpoint. Inside
    ``torch.autocast`` the model keeps its own policy, and a ``full`` model runs
    as ``amp`` in autocast's dtype (:func:`mpno.precision.inside_autocast`).
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (16, 16),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 lifting_channels: int | None = None, projection_channels: int | None = None,
                 skip: str = "linear", channel_mlp: bool = True, channel_mlp_expansion: float = 0.5,
                 positional_embedding: bool = True, domain_padding: float = 0.0,
                 factorization: str | None = None, rank: float | int | Sequence[int] = 0.05,
                 implementation: str = "factorized"):
        super().__init__()
        self.in_channels = operator_in_channels(in_channels, type(self).__name__)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = as_modes(n_modes)
        self.arguments = {
            "in_channels": in_channels, "out_channels": out_channels, "n_modes": list(self.n_modes),
            "hidden_channels": hidden_channels, "n_layers": n_layers, "lifting_channels": lifting_channels,
            "projection_channels": projection_channels, "skip": skip, "channel_mlp": channel_mlp,
            "channel_mlp_expansion": channel_mlp_expansion, "positional_embedding": positional_embedding,
            "domain_padding": domain_padding, "factorization": factorization_name(factorization),
            "rank": rank if isinstance(rank, (int, float)) else list(rank), "implementation": implementation,
        }
        hidden = positive_int("hidden_channels", hidden_channels)
        positive_int("n_layers", n_layers)
        lifting = lifting_channels or 2 * hidden
        projection = projection_channels or 2 * hidden
        self.positional_embedding = positional_embedding
        extra = len(self.n_modes) if positional_embedding else 0
        self.lifting = ChannelMLP(in_channels + extra, lifting, hidden)
        self.padding = DomainPadding(domain_padding) if domain_padding else None
        self.blocks = nn.ModuleList(
            OperatorBlock(SpectralConv(hidden, hidden, self.n_modes, factorization=factorization, rank=rank,
                                       implementation=implementation),
                          hidden, skip, channel_mlp_expansion if channel_mlp else None)
            for _ in range(n_layers)
        )
        self.projection = ChannelMLP(hidden, projection, out_channels)
        self.set_precision(precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        return self._in_own_policy(x, x.device.type)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype, grid = x.dtype, x.shape[2:]
        x = cat_channels([x, grid_coordinates(x)]) if self.positional_embedding else channels_last(x)
        x = self.lifting(x)
        if self.padding is not None:
            x = self.padding.pad(x)
        for i, block in enumerate(self.blocks):
            x = block(x, activate=i < len(self.blocks) - 1)
        if self.padding is not None:
            x = self.padding.crop(x, grid)
        return self.projection(x).to(out_dtype)


class TFNO(FNO):
    """Tensorised FNO: an :class:`FNO` whose spectral weights are Tucker-factorised by default.

    ``rank`` (default 0.05) is the fraction of the dense spectral parameters kept;
    ``factorization`` may also be ``"cp"`` or ``"tt"``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (16, 16),
                 factorization: str = "tucker", rank: float | int | Sequence[int] = 0.05, **kwargs):
        super().__init__(in_channels, out_channels, n_modes, factorization=factorization, rank=rank, **kwargs)


