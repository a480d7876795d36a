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
  precision PyTorch runs only what the dtype's record says
  (:attr:`mpno.dtypes.DtypeInfo.torch_fft`: float16 on CUDA at power-of-two sizes).
* ``"dft"``: the kept modes as matrix products with precomputed twiddle
  matrices (exact for any size, tensor-core friendly, and the only half path on
  the CPU, for bfloat16 and for other sizes).

:func:`implementation` says which one runs by default. Both round to the
working dtype at the same points: the input, the
*unnormalised* partial sums after each dimension (so a half dtype overflows exactly
when ``n_i * |x|`` exceeds its largest finite value, :attr:`mpno.dtypes.DtypeInfo.largest`,
65504 in float16, along some dimension, with either implementation), and the normalised result.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from . import products, tables
from .devices import kernels
from .. import dtypes

_GRID_LETTERS = "hijklmn"  # spatial dimensions in einsum equations (up to 7)


def _complex_half_quietly():
    """cuFFT's half-precision results are complex32, which PyTorch flags as experimental on
    creation; mpno only views them as real pairs. The filter lasts for the call only. (Under
    ``torch.compile`` the call is traced, not run: nothing to filter, and no filter to trace.)"""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _quiet_complex_half()


@contextlib.contextmanager
def _quiet_complex_half():
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
    # n as a tensor, and zeros set by where: ops an exported graph (ONNX too) holds for a symbolic n
    angle = (2 * math.pi / n) * torch.remainder(k * j, torch.full((), n, dtype=torch.int64)).to(torch.float64)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.where(cos.abs() < 1e-12, 0.0, cos), torch.where(sin.abs() < 1e-12, 0.0, sin)


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

    ``"auto"``: torch.fft wherever it can run, in both directions (the dtype's
    record says where: :meth:`mpno.dtypes.DtypeInfo.torch_fft_runs`); the DFT
    elsewhere (in half precision: the CPU, bfloat16, float16 sizes that are not
    powers of two). Both compute the same operator (the module docstring).
    """
    device_type = kernels(device)
    if backend == "dft":
        return "dft"
    record = dtypes.info(dtype)
    if record.torch_fft_runs(device_type, grid):
        return "fft"
    if backend == "torch":
        raise ValueError(
            f"fft_backend='torch' cannot transform a {dtype} field of grid {tuple(grid)} "
            f"on {device_type}: torch.fft runs {record.name} {record.torch_fft_where()}; "
            "use fft_backend='auto' or 'dft'"
        )
    return "dft"


def _forward_dft(x: torch.Tensor, n_modes: Sequence[int]) -> torch.Tensor:
    ndim = len(n_modes)
    x = x.contiguous()  # the products contract the trailing grid dimensions of (batch, channels, *grid)
    grid = x.shape[-ndim:]
    matrix = _dft_matrix("rfft", grid[-1], n_modes[-1], x.dtype, x.device)
    coeffs = products.matmul(x, matrix).unflatten(-1, (-1, 2)) * (1.0 / grid[-1])
    for i in range(ndim - 1):
        matrix = _dft_matrix("fft", grid[i], n_modes[i], x.dtype, x.device)
        coeffs = products.einsum(_dim_equation(ndim, i), coeffs, matrix) * (1.0 / grid[i])
    return coeffs


def _forward_fft(x: torch.Tensor, n_modes: Sequence[int]) -> torch.Tensor:
    """torch.fft along the grid dimensions of ``x`` viewed as (batch, *grid, channels): with activations in
    channels-last memory (:func:`mpno.nn.layers.channels_last`) that view is contiguous, and so are the
    coefficients it returns, viewed as (batch, channels, *kept, 2)."""
    ndim = len(n_modes)
    x = x.movedim(1, -1)
    dims = tuple(range(1, ndim + 1))
    if dtypes.info(x.dtype).half:  # one dimension at a time: each unnormalised partial sum is rounded (cuFFT)
        coeffs = torch.fft.rfft(x, dim=ndim, norm="forward").narrow(ndim, 0, n_modes[-1] // 2 + 1)
        for dim in dims[:-1]:
            coeffs = torch.fft.fft(coeffs, dim=dim, norm="forward")
    else:
        coeffs = torch.fft.rfftn(x, dim=dims, norm="forward").narrow(ndim, 0, n_modes[-1] // 2 + 1)
    for dim, m in zip(dims[:-1], n_modes[:-1]):
        n = coeffs.shape[dim]
        coeffs = torch.cat([coeffs.narrow(dim, n - m // 2, m // 2), coeffs.narrow(dim, 0, m - m // 2)], dim)
    return torch.view_as_real(coeffs).movedim(-2, 1)


def _inverse_dft(coeffs: torch.Tensor, grid: Sequence[int], norm: str = "forward") -> torch.Tensor:
    ndim = len(grid)
    coeffs = coeffs.contiguous()  # (batch, channels, *kept, 2), as the products contract it
    kept = coeffs.shape[2:-1]
    for i in range(ndim - 1):
        matrix = _dft_matrix("ifft", grid[i], kept[i], coeffs.dtype, coeffs.device)
        coeffs = products.einsum(_dim_equation(ndim, i), coeffs, matrix)
    matrix = _dft_matrix("irfft", grid[-1], 2 * (kept[-1] - 1), coeffs.dtype, coeffs.device)
    field = products.matmul(coeffs.flatten(-2), matrix)
    if norm == "backward":
        field = field * (1.0 / math.prod(grid))
    return field.movedim(1, -1).contiguous().movedim(-1, 1)  # channels-last, as the other path returns it


def _inverse_fft(coeffs: torch.Tensor, grid: Sequence[int], norm: str = "forward") -> torch.Tensor:
    """torch.fft on the kept coefficients viewed as (batch, *kept, channels): the other dimensions zero-padded,
    their negative frequencies rolled to the end, and inverted; the Hermitian projection; the last dimension's
    C2R (which pads it). Returns a field in channels-last memory. ``norm="backward"`` divides each
    dimension's sums by its size."""
    ndim = len(grid)
    kept = coeffs.shape[2:-1]
    pairs = coeffs.movedim(1, -2)  # (batch, *kept, channels, 2)
    if ndim > 1:
        widths = [0, 0, 0, 0, 0, 0]
        for n, m in zip(reversed(grid[:-1]), reversed(kept[:-1])):
            widths += [0, n - m]
        pairs = torch.roll(F.pad(pairs, widths), [-(m // 2) for m in kept[:-1]], tuple(range(1, ndim)))
    spectrum = torch.view_as_complex(pairs if pairs.stride(-1) == 1 else pairs.contiguous())
    if ndim > 1 and dtypes.info(coeffs.dtype).half:  # each dimension's partial sums rounded, as in the forward
        for dim in range(1, ndim):
            spectrum = torch.fft.ifft(spectrum, dim=dim, norm=norm)
    elif ndim > 1:
        spectrum = torch.fft.ifftn(spectrum, dim=tuple(range(1, ndim)), norm=norm)
    # The Hermitian projection: after the other dimensions' inverse, the last dimension's 0 (and Nyquist)
    # plane must be real. Im there is what a C2R handles differently from backend to backend, so it is
    # removed here and the call is well posed.
    spectrum = torch.view_as_complex(torch.view_as_real(spectrum) * _real_planes(kept[-1], grid[-1], coeffs.dtype,
                                                                                  coeffs.device))
    return torch.fft.irfft(spectrum, n=grid[-1], dim=ndim, norm=norm).movedim(-1, 1)


def _dim_equation(ndim: int, dim: int) -> str:
    """einsum contracting spatial ``dim`` (and re/im) of a (b, c, *grid, 2) tensor."""
    grid = _GRID_LETTERS[:ndim]
    out = grid[:dim] + "z" + grid[dim + 1 :]
    return f"bc{grid}r,{grid[dim]}rzs->bc{out}s"


@tables.cached(maxsize=256)
def _hermitian_weights(kept_last: int, n_last: int, dtype: torch.dtype, device: torch.device,
                       scale: float = 1.0, reciprocal: bool = False) -> torch.Tensor:
    """How often each coefficient of the last (half-spectrum) dimension counts, ``w_k`` = 1 at k = 0 and
    n/2, else 2, times ``scale`` (``scale / w_k`` with ``reciprocal``). Shaped to broadcast over (…, kept_last, 2)."""
    k = torch.arange(kept_last)
    weights = torch.where((k == 0) | (2 * k == n_last), 1.0, 2.0).double()
    weights = scale / weights if reciprocal else weights * scale
    return weights[:, None].to(dtype=dtype, device=device)


@tables.cached(maxsize=256)
def _real_planes(kept_last: int, n_last: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(kept_last, 1, 2): 0 on the imaginary part of the 0 and Nyquist planes, 1 elsewhere; it multiplies
    kept half-spectrum coefficients viewed as (…, frequency, channels, re/im)."""
    k = torch.arange(kept_last)
    mask = torch.ones(len(k), 1, 2)
    mask[:, 0, 1] = torch.where((k == 0) | (2 * k == n_last), 0.0, 1.0)
    return mask.to(dtype=dtype, device=device)


def _forward_raw(x: torch.Tensor, n_modes: Sequence[int], backend: str) -> torch.Tensor:
    grid = x.shape[-len(n_modes):]
    if implementation(x.device, x.dtype, grid, backend) == "dft":
        return _forward_dft(x, n_modes)
    with _complex_half_quietly():
        return _forward_fft(x, n_modes)


def _inverse_raw(coeffs: torch.Tensor, grid: Sequence[int], backend: str, norm: str = "forward") -> torch.Tensor:
    if implementation(coeffs.device, coeffs.dtype, grid, backend) == "dft":
        return _inverse_dft(coeffs, grid, norm)
    with _complex_half_quietly():
        return _inverse_fft(coeffs, grid, norm)


def _adjoint_of_forward(grad: torch.Tensor, grid: Sequence[int], dtype: torch.dtype, backend: str) -> torch.Tensor:
    """``N⁻¹ Re Σ_k g_k e^{+2πik·j/n}`` over the kept ``k``, in ``dtype``: the gradient of :func:`forward`.

    The inverse transform of ``g`` with the half-spectrum coefficients weighted
    once instead of twice (a product with a cached table of ``1 / w_k`` in
    ``dtype``, which also brings a half gradient to ``dtype``), each dimension's
    sums divided by its size.
    """
    grad = grad * _hermitian_weights(grad.shape[-2], grid[-1], dtype, grad.device, reciprocal=True)
    return _inverse_raw(grad, grid, backend, norm="backward")


class _Forward(torch.autograd.Function):
    """The truncated forward transform (its result rounded to ``result_dtype`` if given), with its adjoint as
    backward: nothing is saved.

    ``y_k = N⁻¹ Σ_j x_j e^{-2πik·j/n}`` for the kept ``k``; the gradient is
    ``N⁻¹ Re Σ_k g_k e^{+2πik·j/n}`` (:func:`_adjoint_of_forward`), computed in
    the dtype of ``x``.
    """

    @staticmethod
    def forward(ctx, x, n_modes, backend, result_dtype):
        ctx.grid, ctx.backend, ctx.dtype = tuple(x.shape[-len(n_modes):]), backend, x.dtype
        coeffs = _forward_raw(x, n_modes, backend)
        return coeffs if result_dtype is None else coeffs.to(result_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return _adjoint_of_forward(grad, ctx.grid, ctx.dtype, ctx.backend), None, None, None


class _Inverse(torch.autograd.Function):
    """The inverse transform, with its adjoint as backward: nothing is saved.

    ``x_j = Σ_k w_k Re(c_k e^{+2πik·j/n})`` (``w_k`` the half-spectrum weights); the
    gradient is ``w_k · N · forward(g)_k``, the factor one product with a cached
    table where ``w_k N`` is exact in the working dtype.
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
        size = math.prod(ctx.grid)
        weights = _hermitian_weights(ctx.kept[-1], ctx.grid[-1], coeffs.dtype, coeffs.device, size)
        if dtypes.info(coeffs.dtype).half and not _exact(2 * size, coeffs.dtype):
            weights = _hermitian_weights(ctx.kept[-1], ctx.grid[-1], coeffs.dtype, coeffs.device)
            return coeffs * weights * size, None, None  # N rounded with the product
        return coeffs * weights, None, None


def _exact(value: float, dtype: torch.dtype) -> bool:
    """Whether the positive number ``value`` is exactly representable in ``dtype`` (a normal number): at most
    its largest value, with a mantissa of at most ``log2(1/u)`` bits (``u`` its unit roundoff)."""
    record = dtypes.info(dtype)
    mantissa, _ = math.frexp(value)
    return value <= record.largest and (mantissa / record.unit_roundoff).is_integer()


def forward(x: torch.Tensor, n_modes: Sequence[int], dtype: torch.dtype | None = None,
            backend: str = "auto", result_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Kept Fourier coefficients of ``x`` (batch, channels, *grid) as (batch, channels, *kept, 2).

    ``dtype``: the working precision (``x`` is rounded to it first); default
    ``x.dtype``. ``result_dtype``: round the coefficients to this dtype at the
    end (mode ``mixed``: computed in float32, rounded to half). Nothing is saved
    for backward: the gradient is the adjoint transform, in the working precision.
    """
    if dtype is not None:
        x = x.to(dtype)
    result_dtype = None if result_dtype == x.dtype else result_dtype
    return _Forward.apply(x, tuple(n_modes), backend, result_dtype)


def inverse(coeffs: torch.Tensor, grid: Sequence[int], dtype: torch.dtype | None = None,
            backend: str = "auto") -> torch.Tensor:
    """Real field on ``grid`` from kept coefficients (batch, channels, *kept, 2).

    The inverse of :func:`forward` on band-limited fields; frequencies that were
    not kept are zero. ``dtype``: the working precision; default ``coeffs.dtype``.
    """
    if dtype is not None:
        coeffs = coeffs.to(dtype)
    return _Inverse.apply(coeffs, tuple(grid), backend)
