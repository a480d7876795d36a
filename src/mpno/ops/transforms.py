"""Truncated Fourier transforms in any precision, on any grid and device.

``forward`` returns only the kept Fourier coefficients of a real field, as real
(re, im) pairs; ``inverse`` maps such coefficients back to a real field on a
grid of any size. The normalisation is ``"forward"``: coefficients are means
(resolution-independent in size), the inverse is an unnormalised sum.

Kept frequencies, per spatial dimension with ``m = n_modes[i]``: on every
dimension but the last, the ``m`` frequencies ``-(m // 2), ..., m - m // 2 - 1``
in ascending order; on the last (real-FFT) dimension ``0, ..., m // 2``. This is
the convention of ``neuraloperator``, so the same ``n_modes`` give the same
weight shape.

The inverse is the real field

    x_j = Σ_k w_k Re(c_k e^{+2πik·j/n}),   w_k = 1 on the last dimension's 0 and
                                           Nyquist (n/2) planes, 2 elsewhere,

summed over the kept ``k``. Equivalently, it is the inverse DFT of the Hermitian
projection of the kept spectrum: interior coefficients of the last dimension
stand for themselves and their conjugates, and on its 0 and Nyquist planes,
which must be Hermitian over the other dimensions, a coefficient becomes
``(c_k + conj(c_-k)) / 2`` (with ``c = 0`` where not kept). So the unpaired
frequency ``-m/2`` of an even ``m`` on those planes contributes
``Re(c e^{-iπ m j / n})``: half of it sits at ``-m/2`` and its conjugate at
``+m/2``. After the spectral weights multiply the kept modes, those planes are
not Hermitian, and a library's C2R transform would be implementation-defined on
them; both implementations apply the projection explicitly, so no backend's
convention matters, in the forward pass and in the adjoint used by backward.

Two implementations compute the same thing:

* ``"torch"``: ``torch.fft`` one dimension at a time (cuFFT on CUDA). In half
  precision PyTorch supports only CUDA, float16 and power-of-two sizes.
* ``"dft"``: the kept modes as matrix products with precomputed twiddle
  matrices (exact for any size, tensor-core friendly, and the only half path on
  the CPU, for bfloat16 and for other sizes).

:func:`implementation` says which one runs by default. Both round to the
working dtype at the same points: the input, the
*unnormalised* partial sums after each dimension (so float16 overflows exactly
when ``n_i * |x|`` exceeds 65504 along some dimension, with either
implementation), and the normalised result.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Sequence

import torch

from . import products, tables
from .products import HALF_DTYPES

_GRID_LETTERS = "hijklmn"  # spatial dimensions in einsum equations (up to 7)


@contextlib.contextmanager
def _complex_half_quietly():
    """cuFFT's half-precision results are complex32, which PyTorch flags as experimental on
    creation; mpno only views them as real pairs. The filter lasts for the call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
        yield


def kept_shape(n_modes: Sequence[int]) -> tuple[int, ...]:
    """Shape of the kept coefficients: ``n_modes`` with the last entry ``m // 2 + 1``."""
    return (*n_modes[:-1], n_modes[-1] // 2 + 1)


def _frequencies(m: int) -> torch.Tensor:
    return torch.arange(-(m // 2), m - m // 2, dtype=torch.float64)


def _twiddles(freqs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``2π k j / n`` for k in ``freqs`` (rows), j in 0..n-1, in float64."""
    k = freqs.to(torch.int64)[:, None]
    j = torch.arange(n, dtype=torch.int64)[None, :]
    angle = (2 * math.pi / n) * torch.remainder(k * j, n).to(torch.float64)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cos[cos.abs() < 1e-12] = 0.0
    sin[sin.abs() < 1e-12] = 0.0
    return cos, sin


@tables.cached(maxsize=256)
def _dft_matrix(kind: str, n: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Twiddle matrices of the truncated DFT, unnormalised.

    ``rfft``:  (n, K*2)   real input j -> (k, re/im), K = m // 2 + 1
    ``irfft``: (K*2, n)   (k, re/im) -> real output j
    ``fft``:   (n, 2, m, 2)  (j, re/im) -> (k, re/im)
    ``ifft``:  (m, 2, n, 2)  (k, re/im) -> (j, re/im)
    """
    if kind in ("rfft", "irfft"):
        freqs = torch.arange(m // 2 + 1, dtype=torch.float64)
    else:
        freqs = _frequencies(m)
    cos, sin = _twiddles(freqs, n)  # (K or m, n)
    if kind == "rfft":
        matrix = torch.stack([cos.T, -sin.T], dim=-1).reshape(n, -1)
    elif kind == "irfft":
        # Hermitian weights: the DC and Nyquist terms count once, the others twice.
        weight = torch.full_like(freqs, 2.0)
        weight[freqs == 0] = 1.0
        weight[2 * freqs == n] = 1.0
        matrix = torch.stack([cos * weight[:, None], -sin * weight[:, None]], dim=1)
        matrix = matrix.reshape(-1, n)
    elif kind == "fft":  # e^{-iθ}: re' = cos re + sin im, im' = cos im - sin re
        c, s = cos.T, sin.T  # (n, m)
        matrix = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], dim=1)
    else:  # ifft, e^{+iθ}: re' = cos re - sin im, im' = sin re + cos im
        matrix = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], dim=1)
    return matrix.to(dtype=dtype, device=device)


def implementation(device: torch.device, dtype: torch.dtype, grid: Sequence[int], backend: str = "auto") -> str:
    """Which implementation computes a transform: ``"fft"`` (torch.fft, cuFFT on CUDA) or ``"dft"``.

    ``"auto"``: torch.fft wherever it can run, in both directions; the DFT in half
    precision where cuFFT cannot (the CPU, bfloat16, sizes that are not powers of
    two). Both compute the same operator (the module docstring).
    """
    device_type = torch.device(device).type
    if backend == "dft":
        return "dft"
    cufft_half = device_type == "cuda" and dtype == torch.float16 and all(n > 0 and n & (n - 1) == 0 for n in grid)
    if dtype not in HALF_DTYPES or cufft_half:
        return "fft"
    if backend == "torch":
        raise ValueError(
            f"fft_backend='torch' cannot transform a {dtype} field of grid {tuple(grid)} "
            f"on {device_type}: torch.fft in half precision needs CUDA, float16 and "
            "power-of-two sizes; use fft_backend='auto' or 'dft'"
        )
    return "dft"


def _forward_dft(x: torch.Tensor, n_modes: Sequence[int]) -> torch.Tensor:
    ndim = len(n_modes)
    grid = x.shape[-ndim:]
    matrix = _dft_matrix("rfft", grid[-1], n_modes[-1], x.dtype, x.device)
    coeffs = products.matmul(x, matrix).unflatten(-1, (-1, 2)) * (1.0 / grid[-1])
    for i in range(ndim - 1):
        matrix = _dft_matrix("fft", grid[i], n_modes[i], x.dtype, x.device)
        coeffs = products.einsum(_dim_equation(ndim, i), coeffs, matrix) * (1.0 / grid[i])
    return coeffs


def _forward_fft(x: torch.Tensor, n_modes: Sequence[int]) -> torch.Tensor:
    grid = x.shape[-len(n_modes):]
    coeffs = torch.fft.rfft(x, dim=-1, norm="forward")[..., : n_modes[-1] // 2 + 1]
    for i in range(len(n_modes) - 1):
        dim, n, m = 2 + i, grid[i], n_modes[i]
        coeffs = torch.fft.fft(coeffs, dim=dim, norm="forward")
        coeffs = torch.cat([coeffs.narrow(dim, n - m // 2, m // 2), coeffs.narrow(dim, 0, m - m // 2)], dim)
    return torch.view_as_real(coeffs)


def _inverse_dft(coeffs: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    ndim = len(grid)
    kept = coeffs.shape[2:-1]
    for i in range(ndim - 1):
        matrix = _dft_matrix("ifft", grid[i], kept[i], coeffs.dtype, coeffs.device)
        coeffs = products.einsum(_dim_equation(ndim, i), coeffs, matrix)
    matrix = _dft_matrix("irfft", grid[-1], 2 * (kept[-1] - 1), coeffs.dtype, coeffs.device)
    return products.matmul(coeffs.flatten(-2), matrix)


def _inverse_fft(coeffs: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    spectrum = torch.view_as_complex(coeffs.contiguous())
    kept = spectrum.shape[2:]
    for i in range(len(grid) - 1):
        dim, n, m = 2 + i, grid[i], kept[i]
        shape = list(spectrum.shape)
        shape[dim] = n - m
        padded = [spectrum.narrow(dim, m // 2, m - m // 2), spectrum.new_zeros(shape), spectrum.narrow(dim, 0, m // 2)]
        spectrum = torch.fft.ifft(torch.cat(padded, dim), dim=dim, norm="forward")
    # The Hermitian projection: after the other dimensions' inverse, the last dimension's
    # 0 (and Nyquist) plane must be real. Im there is what a C2R handles differently
    # from backend to backend, so it is removed here and the call is well posed.
    real_planes = _hermitian_weights(kept[-1], grid[-1], coeffs.dtype, coeffs.device) == 1
    mask = torch.cat([torch.ones_like(real_planes), ~real_planes], dim=-1).to(coeffs.dtype)
    spectrum = torch.view_as_complex(torch.view_as_real(spectrum) * mask)
    return torch.fft.irfft(spectrum, n=grid[-1], dim=-1, norm="forward")


def _dim_equation(ndim: int, dim: int) -> str:
    """einsum contracting spatial ``dim`` (and re/im) of a (b, c, *grid, 2) tensor."""
    grid = _GRID_LETTERS[:ndim]
    out = grid[:dim] + "z" + grid[dim + 1 :]
    return f"bc{grid}r,{grid[dim]}rzs->bc{out}s"


@tables.cached(maxsize=256)
def _hermitian_weights(kept_last: int, n_last: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """How often each coefficient of the last (half-spectrum) dimension counts: 1 at k = 0 and n/2, else 2.

    Shaped to broadcast over (…, kept_last, 2).
    """
    k = torch.arange(kept_last)
    weights = torch.where((k == 0) | (2 * k == n_last), 1.0, 2.0)
    return weights[:, None].to(dtype=dtype, device=device)


def _forward_raw(x: torch.Tensor, n_modes: Sequence[int], backend: str) -> torch.Tensor:
    grid = x.shape[-len(n_modes):]
    if implementation(x.device, x.dtype, grid, backend) == "dft":
        return _forward_dft(x, n_modes)
    with _complex_half_quietly():
        return _forward_fft(x, n_modes)


def _inverse_raw(coeffs: torch.Tensor, grid: Sequence[int], backend: str) -> torch.Tensor:
    if implementation(coeffs.device, coeffs.dtype, grid, backend) == "dft":
        return _inverse_dft(coeffs, grid)
    with _complex_half_quietly():
        return _inverse_fft(coeffs, grid)


class _Forward(torch.autograd.Function):
    """The truncated forward transform, with its adjoint as backward: nothing is saved.

    ``y_k = N⁻¹ Σ_j x_j e^{-2πik·j/n}`` for the kept ``k``; the gradient is
    ``N⁻¹ Re Σ_k g_k e^{+2πik·j/n}``: the inverse transform of ``g`` with the
    half-spectrum coefficients weighted once instead of twice.
    """

    @staticmethod
    def forward(ctx, x, n_modes, backend):
        ctx.grid, ctx.backend = tuple(x.shape[-len(n_modes):]), backend
        return _forward_raw(x, n_modes, backend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad = grad / _hermitian_weights(grad.shape[-2], ctx.grid[-1], grad.dtype, grad.device)
        return _inverse_raw(grad, ctx.grid, ctx.backend) * (1.0 / math.prod(ctx.grid)), None, None


class _Inverse(torch.autograd.Function):
    """The inverse transform, with its adjoint as backward: nothing is saved.

    ``x_j = Σ_k w_k Re(c_k e^{+2πik·j/n})`` (``w_k`` the half-spectrum weights); the
    gradient is ``w_k · N · forward(g)_k``.
    """

    @staticmethod
    def forward(ctx, coeffs, grid, backend):
        ctx.grid, ctx.backend, ctx.kept = tuple(grid), backend, tuple(coeffs.shape[2:-1])
        return _inverse_raw(coeffs, grid, backend)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        n_modes = (*ctx.kept[:-1], 2 * (ctx.kept[-1] - 1))
        coeffs = _forward_raw(grad, n_modes, ctx.backend)
        weights = _hermitian_weights(ctx.kept[-1], ctx.grid[-1], coeffs.dtype, coeffs.device)
        return coeffs * weights * math.prod(ctx.grid), None, None


def forward(x: torch.Tensor, n_modes: Sequence[int], dtype: torch.dtype | None = None,
            backend: str = "auto") -> torch.Tensor:
    """Kept Fourier coefficients of ``x`` (batch, channels, *grid) as (batch, channels, *kept, 2).

    ``dtype``: the working precision (``x`` is rounded to it first); default
    ``x.dtype``. Nothing is saved for backward: the gradient is the adjoint
    transform.
    """
    if dtype is not None:
        x = x.to(dtype)
    return _Forward.apply(x, tuple(n_modes), backend)


def inverse(coeffs: torch.Tensor, grid: Sequence[int], dtype: torch.dtype | None = None,
            backend: str = "auto") -> torch.Tensor:
    """Real field on ``grid`` from kept coefficients (batch, channels, *kept, 2).

    The inverse of :func:`forward` on band-limited fields; frequencies that were
    not kept are zero. ``dtype``: the working precision; default ``coeffs.dtype``.
    """
    if dtype is not None:
        coeffs = coeffs.to(dtype)
    return _Inverse.apply(coeffs, tuple(grid), backend)
