"""The spectral convolution: forward transform, complex contraction, inverse transform."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..ops import transforms
from ..checks import as_modes, check_field, positive_int
from ..ops.contraction import block_product, complex_pair
from .factorized import factorized_weight
from .layers import FixedModes
from ..precision import Precision, autocast_off
from .. import dtypes
from ..ops.stabilizers import stabilize
from . import casting

_MODE_LETTERS = "hjklmn"
IMPLEMENTATIONS = ("factorized", "reconstructed")


def _modes_outermost(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (in, out, *modes, 2) with the same values, stored modes first: (*modes, in, out, 2) in memory.

    The contraction is a product batched over the modes, whose operand is then a
    view of the weight, and whose weight gradient comes out in the same layout,
    so neither direction copies the weight.
    """
    ndim = weight.ndim - 3
    order = (*range(2, 2 + ndim), 0, 1, weight.ndim - 1)
    return weight.permute(order).contiguous().permute(sorted(range(weight.ndim), key=order.__getitem__))


def contract_dense(coeffs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Complex ``sum_i coeffs[b, i, k] * weight[i, o, k]`` on real (…, 2) pairs.

    ``coeffs`` (batch, in, *modes, 2) and ``weight`` (in, out, *modes, 2) share a
    dtype; half operands use real half kernels with float32 accumulation.
    """
    modes = _MODE_LETTERS[: coeffs.ndim - 3]
    return complex_pair(f"bi{modes},io{modes}->bo{modes}", coeffs, weight)


class KernelLayer(FixedModes, nn.Module):
    """What spectral and spherical convolutions share: ``x -> T⁻¹(R · T(x)) + bias`` for a transform ``T``.

    The parameters: complex weights of :meth:`_weight_shape` (dense, or factorised and
    contracted as ``implementation`` says) stored as real (re, im) float32 pairs, and a
    bias; ``n_modes`` is fixed (:class:`mpno.nn.layers.FixedModes`). The forward pass
    runs each stage in the policy's dtype (:data:`mpno.precision.STAGES`): the
    stabilizer and the forward transform (:meth:`_transform`), the contraction
    (:meth:`contract`), the inverse transform (:meth:`_inverse`) and the bias.
    Subclasses define those three hooks, :meth:`_modes` and :meth:`_weight_shape`.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes, bias: bool = True,
                 precision: Precision | str = "full", factorization: str | None = None,
                 rank: float | int | Sequence[int] = 0.05, implementation: str = "factorized"):
        super().__init__()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={implementation!r} is not supported; allowed: "
                             + ", ".join(repr(i) for i in IMPLEMENTATIONS))
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = self._modes(n_modes)
        self.precision = Precision.parse(precision)
        self.implementation = implementation
        shape = self._weight_shape()
        self.factorized = factorized_weight(factorization, shape, rank)
        if self.factorized is None:
            weight = torch.randn(*shape, 2) * math.sqrt(1.0 / (shape[0] + shape[1]))
            self.weight = nn.Parameter(_modes_outermost(weight))
        else:
            self.register_parameter("weight", None)
        self.bias = nn.Parameter(torch.zeros(shape[1])) if bias else None

    def _modes(self, n_modes) -> tuple[int, ...]:
        """``n_modes`` checked and as a tuple."""
        raise NotImplementedError

    def _weight_shape(self) -> tuple[int, ...]:
        """The complex weights' shape, (in, out, *per-mode axes)."""
        raise NotImplementedError

    def _transform(self, x: torch.Tensor, policy: Precision) -> torch.Tensor:
        """The forward transform of ``x`` (in the forward stage's dtype): the kept coefficients as real pairs."""
        raise NotImplementedError

    def _inverse(self, coeffs: torch.Tensor, grid: Sequence[int], policy: Precision) -> torch.Tensor:
        """The inverse transform of ``coeffs`` (in the inverse stage's dtype) onto ``grid``."""
        raise NotImplementedError

    def contract(self, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Multiply the kept coefficients by the weights, in ``dtype``."""
        raise NotImplementedError

    @property
    def master_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def half_parameters(self):
        """``(parameter, dtype)`` of the parameters used in half (:mod:`mpno.nn.casting`): the weights (or
        factors) in the policy's contraction dtype, the bias in its inverse transform's."""
        weights = [self.weight] if self.factorized is None else list(self.factorized.factors)
        used = [(p, self.precision.contraction_dtype) for p in weights] + [(self.bias, self.precision.inverse_dtype)]
        return tuple((p, dtype) for p, dtype in used if dtype is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        with autocast_off(x.device.type):  # the policy decides, not autocast
            return self._forward(x)

    def _forward(self, x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        """The layer on ``x`` (batch, in, *grid), its output on ``grid`` (default: ``x``'s)."""
        policy, master = self.precision, self.master_dtype
        grid = tuple(x.shape[2:]) if grid is None else tuple(grid)
        x = stabilize(x.to(policy.forward_dtype or master), policy.stabilizer)
        coeffs = self.contract(self._transform(x, policy), policy.contraction_dtype or master)
        y = self._inverse(coeffs.to(policy.inverse_dtype or master), grid, policy)
        if self.bias is None:
            return y
        return y + casting.weight(self.bias, y.dtype).view(-1, *([1] * (y.ndim - 2)))

    def extra_repr(self) -> str:
        kind = "dense" if self.factorized is None else f"{self.factorized.kind}, {self.implementation}"
        return (f"{self.in_channels}, {self.out_channels}, n_modes={self.n_modes}, {kind}, "
                f"bias={self.bias is not None}, precision={self.precision}")

    @property
    def complex_weight(self) -> torch.Tensor:
        """The dense weight as complex (reconstructed from the factors if factorised)."""
        dense = self.weight if self.factorized is None else self.factorized.to_dense()
        return torch.view_as_complex(dense)


class SpectralConv(KernelLayer):
    """Fourier layer ``x -> F⁻¹(R · F(x)) + bias`` for 1, 2 or 3 spatial dimensions.

    Args:
        in_channels, out_channels: channel counts.
        n_modes: kept frequencies per dimension, counting positive and negative
            ones; the last (real-FFT) dimension keeps ``n_modes[-1] // 2 + 1``
            coefficients (the ``neuraloperator`` convention).
        bias: add a learned per-channel bias.
        precision: a :class:`mpno.Precision` or mode name.
        factorization: ``None`` (or ``"dense"``) for a dense weight; ``"cp"``,
            ``"tucker"`` or ``"tt"`` for a factorised one (:mod:`mpno.nn.factorized`).
        rank: size of a factorised weight: a fraction of the dense parameter
            count in (0, 1], or explicit ranks.
        implementation: ``"factorized"`` contracts the activation with the
            factors in a planned order; ``"reconstructed"`` rebuilds the dense
            weight first (more memory; for comparison).

    The complex weights are stored as real (re, im) pairs in float32
    parameters (dense: ``weight`` of shape ``(in, out, *kept, 2)``), so
    optimizers, ``GradScaler`` and DDP treat them like any real parameter;
    :attr:`complex_weight` gives the dense complex64 tensor. Initial weights have
    ``E|R|² = 2 / (in + out)`` per entry, factorised or not.
    """

    def _modes(self, n_modes) -> tuple[int, ...]:
        return as_modes(n_modes)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels, *transforms.kept_shape(self.n_modes))

    def _transform(self, x: torch.Tensor, policy: Precision) -> torch.Tensor:
        return transforms.forward(x, self.n_modes, backend=policy.fft_backend, result_dtype=policy.contraction_dtype)

    def _inverse(self, coeffs: torch.Tensor, grid: Sequence[int], policy: Precision) -> torch.Tensor:
        return transforms.inverse(coeffs, grid, backend=policy.fft_backend)

    def contract(self, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Multiply kept coefficients (batch, in, *kept, 2) by the weights, in ``dtype``."""
        coeffs = coeffs.to(dtype)
        if self.factorized is None and not dtypes.info(dtype).complex_kernels:  # half: the weight's 2×2 block
            return block_product(coeffs, casting.block(self.weight, dtype))
        if self.factorized is None:
            return contract_dense(coeffs, self.weight.to(dtype))
        if self.implementation == "reconstructed":
            return contract_dense(coeffs, self.factorized.to_dense(dtype))
        return self.factorized.contract(coeffs, dtype)

    def half_parameters(self):
        """As :meth:`KernelLayer.half_parameters`, with a dense weight wanted as its 2×2 block."""
        return tuple((p, dtype, "block") if p is self.weight else (p, dtype)
                     for p, dtype in super().half_parameters())
