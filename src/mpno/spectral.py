"""The spectral convolution: forward transform, complex contraction, inverse transform."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from . import products, transforms
from .checks import as_modes, check_field, positive_int
from .precision import Precision
from .stabilizers import stabilize

_MODE_LETTERS = "hijklmn"


def complex_block(weight: torch.Tensor) -> torch.Tensor:
    """Real form of complex weights: (in, out, *modes, 2) -> (in, 2, out, 2, *modes).

    ``block[i, a, o, c]`` maps component ``a`` (0 = re, 1 = im) of input channel
    ``i`` to component ``c`` of output channel ``o``, so one real contraction over
    (in, re/im) computes the complex product with all four real products
    accumulated together.
    """
    re, im = weight[..., 0], weight[..., 1]
    return torch.stack([torch.stack([re, im], dim=2), torch.stack([-im, re], dim=2)], dim=1)


def contract_dense(coeffs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Complex ``sum_i coeffs[b, i, k] * weight[i, o, k]`` on real (…, 2) pairs.

    ``coeffs`` (batch, in, *modes, 2) and ``weight`` (in, out, *modes, 2) share a
    dtype; half operands use real half kernels with float32 accumulation.
    """
    modes = _MODE_LETTERS[: coeffs.ndim - 3]
    equation = f"bc{modes}r,cros{modes}->bo{modes}s"
    return products.einsum(equation, coeffs, complex_block(weight))


class SpectralConv(nn.Module):
    """Fourier layer ``x -> F⁻¹(R · F(x)) + bias`` for 1, 2 or 3 spatial dimensions.

    Args:
        in_channels, out_channels: channel counts.
        n_modes: kept frequencies per dimension, counting positive and negative
            ones; the last (real-FFT) dimension keeps ``n_modes[-1] // 2 + 1``
            coefficients (the ``neuraloperator`` convention).
        bias: add a learned per-channel bias.
        precision: a :class:`mpno.Precision` or mode name.

    The complex weights are stored as real (re, im) pairs in a float32
    parameter of shape ``(in, out, *kept, 2)``, so optimizers, ``GradScaler``
    and DDP treat them like any real parameter; :attr:`complex_weight` views
    them as complex64. Initial weights have ``E|R|² = 2 / (in + out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int],
                 bias: bool = True, precision: Precision | str = "full"):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = as_modes(n_modes)
        self.precision = Precision.parse(precision)
        shape = (in_channels, out_channels, *transforms.kept_shape(self.n_modes), 2)
        self.weight = nn.Parameter(torch.randn(shape) * math.sqrt(1.0 / (in_channels + out_channels)))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @property
    def complex_weight(self) -> torch.Tensor:
        return torch.view_as_complex(self.weight)

    def contract(self, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Multiply kept coefficients by the weights, in ``dtype``."""
        return contract_dense(coeffs.to(dtype), self.weight.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_field(x, self.in_channels, self.n_modes, type(self).__name__)
        policy = self.precision
        grid = x.shape[2:]
        if policy.forward_dtype is not None:
            x = stabilize(x.to(policy.forward_dtype), policy.stabilizer)
        else:
            x = x.to(self.weight.dtype)
        coeffs = transforms.forward(x, self.n_modes, backend=policy.fft_backend)
        coeffs = self.contract(coeffs, policy.spectral_dtype or self.weight.dtype)
        y = transforms.inverse(coeffs, grid, backend=policy.fft_backend)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype).view(-1, *([1] * len(grid)))
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, n_modes={self.n_modes}, "
                f"bias={self.bias is not None}, precision={self.precision}")
