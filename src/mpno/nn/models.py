"""Operators on fields: the body they share (lifting, blocks of a kernel layer, projection), and the
Fourier Neural Operator in 1, 2 and 3 dimensions on it."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..checks import as_modes, check_field, operator_in_channels, positive_int
from ..precision import Precision
from .factorized import factorization_name
from .layers import ChannelMLP, DomainPadding, OperatorBlock, cat_channels, channels_last, grid_coordinates
from .operator import Operator
from .spectral import SpectralConv


class FieldOperator(Operator):
    """Lifting → ``n_layers`` blocks of a kernel layer → projection, on fields (batch, in_channels, *grid).

    The body of :class:`FNO` and :class:`mpno.SFNO`: they differ in their kernel layer
    (:attr:`kernel_layer`, with the arguments :meth:`_kernel_options` adds), in how they
    read ``n_modes`` (:meth:`_modes`) and in the coordinates their positional embedding
    appends (:meth:`_coordinates`).

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_modes: the modes every kernel layer keeps.
        hidden_channels: width of the kernel layers.
        n_layers: number of kernel layers.
        precision: a :class:`mpno.Precision` or mode name; change it between
            steps with :meth:`set_precision`.
        lifting_channels, projection_channels: hidden widths of the two-layer
            lifting and projection MLPs (default ``2 * hidden_channels``).
        skip: ``"linear"``, ``"identity"`` or ``"soft-gating"``.
        channel_mlp: add a channel MLP (expansion ``channel_mlp_expansion``) to each block.
        positional_embedding: append the coordinates of each grid point as input channels.
        domain_padding: zero-pad each dimension by this fraction (non-periodic problems).
        factorization, rank, implementation: the kernel weights' form (see
            :class:`mpno.SpectralConv`); ``None`` for dense weights.

    The output has the input's dtype. :attr:`arguments` holds the constructor's
    arguments (:mod:`mpno.nn.operator`). Inside ``torch.autocast`` the model keeps
    its own policy, and a ``full`` model runs as ``amp`` in autocast's dtype
    (:func:`mpno.precision.inside_autocast`).
    """

    #: The kernel layer of every block: ``kernel_layer(in, out, n_modes, factorization=, rank=, implementation=)``.
    kernel_layer: type = SpectralConv

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
        self.n_modes = self._modes(n_modes)
        self.factorization = factorization_name(factorization)
        hidden = positive_int("hidden_channels", hidden_channels)
        positive_int("n_layers", n_layers)
        self.positional_embedding = positional_embedding
        extra = self._coordinate_channels() if positional_embedding else 0
        self.lifting = ChannelMLP(in_channels + extra, lifting_channels or 2 * hidden, hidden)
        self.padding = DomainPadding(domain_padding) if domain_padding else None
        self.blocks = nn.ModuleList(
            OperatorBlock(self.kernel_layer(hidden, hidden, self.n_modes, factorization=factorization, rank=rank,
                                            implementation=implementation, **self._kernel_options()),
                          hidden, skip, channel_mlp_expansion if channel_mlp else None)
            for _ in range(n_layers)
        )
        self.projection = ChannelMLP(hidden, projection_channels or 2 * hidden, out_channels)

    def _modes(self, n_modes) -> tuple[int, ...]:
        """``n_modes`` checked, as the kernel layers take them."""
        return as_modes(n_modes)

    def _kernel_options(self) -> dict:
        """Arguments of :attr:`kernel_layer` beyond the ones every kernel layer takes."""
        return {}

    def _coordinate_channels(self) -> int:
        """How many channels :meth:`_coordinates` gives."""
        return len(self.n_modes)

    def _coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """The positional embedding of ``x``'s grid points, (batch, channels, *grid): here ``j / n`` in [0, 1)."""
        return grid_coordinates(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        return self._in_own_policy(x, x.device.type)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype, grid = x.dtype, x.shape[2:]
        x = cat_channels([x, self._coordinates(x)]) if self.positional_embedding else channels_last(x)
        x = self.lifting(x)
        if self.padding is not None:
            x = self.padding.pad(x)
        for i, block in enumerate(self.blocks):
            x = block(x, activate=i < len(self.blocks) - 1)
        if self.padding is not None:
            x = self.padding.crop(x, grid)
        return self.projection(x).to(out_dtype)


class FNO(FieldOperator, kind="fno", domain="grid"):
    """Fourier Neural Operator for fields of shape (batch, in_channels, *grid): :class:`FieldOperator` with
    :class:`mpno.SpectralConv` layers.

    ``n_modes``: kept frequencies per spatial dimension (``neuraloperator``'s
    meaning); ``len(n_modes)`` is the number of spatial dims (1 to 3). The
    positional embedding appends the grid coordinates in [0, 1). Other arguments
    as :class:`FieldOperator`.

    The same model runs on any grid with at least ``n_modes[i]`` points along
    dimension ``i``: train at 32², evaluate at 64².
    """

    @property
    def exports_any_grid(self) -> bool:
        return self.padding is None


class TFNO(FNO, kind="tfno"):
    """Tensorised FNO: an :class:`FNO` whose spectral weights are Tucker-factorised by default.

    ``rank`` (default 0.05) is the fraction of the dense spectral parameters kept;
    ``factorization`` may also be ``"cp"`` or ``"tt"``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (16, 16),
                 factorization: str = "tucker", rank: float | int | Sequence[int] = 0.05, **options):
        super().__init__(in_channels, out_channels, n_modes, factorization=factorization, rank=rank, **options)
