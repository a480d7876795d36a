"""Truncated transforms: both implementations against the DFT's definition, in every precision."""

import math

import pytest
import torch

from mpno.ops import transforms
from reference import (CUDA, bandlimited, forward_stages, hermitian_field, inverse_stages, relative_error,
                       tolerance)

CASES = [((32,), (8,)), ((48, 40), (12, 10)), ((9, 7), (9, 7)), ((16, 12, 10), (6, 6, 5))]


def definition(x: torch.Tensor, n_modes) -> torch.Tensor:
    """Kept coefficients straight from (1/N) Σ_j x_j exp(-2πi k·j/n), as complex128."""
    out = x.to(torch.complex128)
    ndim = len(n_modes)
    for i, (n, m) in enumerate(zip(x.shape[2:], n_modes)):
        last = i == ndim - 1
        freqs = torch.arange(m // 2 + 1) if last else torch.arange(-(m // 2), m - m // 2)
        j = torch.arange(n)
        matrix = torch.exp(-2j * math.pi * freqs[:, None].double() * j[None, :].double() / n) / n
        out = torch.movedim(torch.tensordot(out, matrix.T, dims=([2 + i], [0])), -1, 2 + i)
    return out


@pytest.mark.parametrize("grid, modes", CASES)
@pytest.mark.parametrize("backend", ["torch", "dft"])
def test_forward_matches_the_definition(grid, modes, backend):
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    coeffs = transforms.forward(x, modes, backend=backend)
    assert coeffs.shape == (2, 3, *transforms.kept_shape(modes), 2)
    assert torch.allclose(torch.view_as_complex(coeffs.contiguous()), definition(x, modes), atol=1e-13)


@pytest.mark.parametrize("grid, modes", CASES)
def test_inverse_recovers_a_bandlimited_field_with_both_backends(grid, modes):
    x = bandlimited(2, 2, grid, kmax=min((m + 1) // 2 - 1 for m in modes))  # all kept, both signs
    coeffs = transforms.forward(x, modes)
    for backend in ("torch", "dft"):
        assert relative_error(transforms.inverse(coeffs, grid, backend=backend), x) < 1e-12


def test_inverse_evaluates_the_same_coefficients_on_a_finer_grid():
    coarse = bandlimited(1, 1, (16, 16), kmax=3)
    fine = bandlimited(1, 1, (32, 32), kmax=3)
    coeffs = transforms.forward(coarse, (8, 8))
    assert relative_error(transforms.inverse(coeffs, (32, 32)), fine) < 1e-12


# Even and odd sizes, with the last dimension's Nyquist plane kept ((8,), (8,)) and not.
PROJECTION_CASES = [((16,), (8,)), ((8,), (8,)), ((9,), (8,)), ((12, 10), (6, 10)), ((11, 9), (7, 8)),
                    ((10, 7), (10, 6)), ((8, 6, 7), (4, 6, 4)), ((6, 5, 8), (5, 4, 8))]


@pytest.mark.parametrize("grid, modes", PROJECTION_CASES)
@pytest.mark.parametrize("backend", ["torch", "dft"])
def test_inverse_is_the_hermitian_projection_of_any_kept_spectrum(grid, modes, backend):
    """Random coefficients: Im on the 0/Nyquist planes and unpaired ±k entries, as after the weights."""
    coeffs = torch.randn(2, 3, *transforms.kept_shape(modes), 2, dtype=torch.float64)
    field = transforms.inverse(coeffs, grid, backend=backend)
    expected = hermitian_field(torch.view_as_complex(coeffs), grid)
    assert relative_error(field, expected) < 1e-13


def irfft_keeping_imaginary_planes(real_irfft):
    """A C2R that, unlike pocketfft, lets Im of the 0 and Nyquist bins into its output (one convention
    a C2R may follow for input that is not Hermitian-consistent)."""

    def irfft(spectrum, n=None, dim=-1, norm=None):
        scale = 1.0 if norm == "forward" else 1.0 / n  # "backward" (the default) divides the sums by n
        out = real_irfft(spectrum, n=n, dim=dim, norm=norm).movedim(dim, -1)
        spectrum = spectrum.movedim(dim, -1)
        out = out + spectrum[..., :1].imag * scale
        if n % 2 == 0 and spectrum.shape[-1] > n // 2:
            out = out + spectrum[..., n // 2 : n // 2 + 1].imag * (-1.0) ** torch.arange(n) * scale
        return out.movedim(-1, dim)

    return irfft


def test_a_c2r_that_keeps_imaginary_dc_changes_neither_outputs_nor_gradients(monkeypatch):
    import mpno

    model = mpno.FNO(1, 1, (8, 8), hidden_channels=6, n_layers=2).double()
    model.set_precision(mpno.Precision("full", fft_backend="torch"))
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)

    def output_and_gradient():
        x.grad = None
        out = model(x)
        out.square().sum().backward()
        return out.detach(), x.grad.clone()

    before = output_and_gradient()
    keeping = irfft_keeping_imaginary_planes(torch.fft.irfft)
    bad = torch.randn(1, 1, 16, 9, dtype=torch.complex128)  # the emulation does differ on such input
    assert relative_error(keeping(bad, n=16, norm="forward"), torch.fft.irfft(bad, n=16, norm="forward")) > 1e-2
    monkeypatch.setattr(torch.fft, "irfft", keeping)
    after = output_and_gradient()
    assert relative_error(after[0], before[0]) < 1e-13
    assert relative_error(after[1], before[1]) < 1e-13


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grid, modes", [((64, 64), (16, 16)), ((48, 40), (12, 10)), ((128,), (32,))])
def test_half_transforms_round_only_where_stated(dtype, grid, modes):
    x = torch.randn(4, 8, *grid, dtype=torch.float64)
    ndim = len(grid)
    coeffs = transforms.forward(x, modes, dtype=dtype)
    assert coeffs.dtype == dtype
    reference = transforms.forward(x, modes)
    assert relative_error(coeffs, reference) < tolerance(dtype, forward_stages(ndim))
    field = transforms.inverse(reference, grid, dtype=dtype)
    assert field.dtype == dtype
    exact = transforms.inverse(reference.to(dtype).double(), grid)
    assert relative_error(field, exact) < tolerance(dtype, inverse_stages(ndim))


def test_float16_overflows_when_a_partial_sum_exceeds_65504():
    """The unnormalised sum along one dimension is rounded to half, as cuFFT does."""
    for value, finite in ((1000.0, True), (1100.0, False)):  # 64 * value = 64000 vs 70400
        x = torch.full((1, 1, 64, 64), value)
        coeffs = transforms.forward(x, (8, 8), dtype=torch.float16, backend="dft")
        assert bool(torch.isfinite(coeffs).all()) is finite


def test_torch_backend_refuses_half_on_cpu_with_advice():
    with pytest.raises(ValueError, match="fft_backend='auto' or 'dft'"):
        transforms.forward(torch.randn(1, 1, 16), (4,), dtype=torch.float16, backend="torch")


@pytest.mark.gpu
@pytest.mark.parametrize("grid, modes", [((64, 64), (16, 16)), ((128, 128), (32, 32)), ((128,), (32,)),
                                         ((96, 80), (16, 16)), ((16, 8, 32), (8, 8, 8))])
@pytest.mark.parametrize("backend", ["auto", "dft"])
def test_half_transforms_on_cuda(grid, modes, backend):
    x = torch.randn(8, 64, *grid, dtype=torch.float64)
    reference = transforms.forward(x, modes)
    coeffs = transforms.forward(x.to(CUDA), modes, dtype=torch.float16, backend=backend)
    assert coeffs.dtype == torch.float16 and coeffs.is_cuda
    assert relative_error(coeffs.cpu(), reference) < tolerance(torch.float16, forward_stages(len(grid)))
    field = transforms.inverse(reference.to(CUDA), grid, dtype=torch.float16, backend=backend)
    exact = transforms.inverse(reference.half().double(), grid)
    assert relative_error(field.cpu(), exact) < tolerance(torch.float16, inverse_stages(len(grid)))


@pytest.mark.gpu
@pytest.mark.parametrize("grid, modes", [((128, 128), (32, 32)), ((256, 256), (32, 32)), ((96, 96), (32, 32))])
@pytest.mark.parametrize("backend", ["torch", "dft"])
def test_float32_transforms_on_cuda_match_float64(grid, modes, backend):
    """The shapes where an unprojected spectrum made cuFFT's C2R differ from pocketfft's by 2%."""
    x = torch.randn(8, 64, *grid, dtype=torch.float64)
    exact = transforms.forward(x, modes)
    assert relative_error(transforms.forward(x.float().to(CUDA), modes, backend=backend).cpu(), exact) < 1e-5
    coeffs = torch.randn_like(exact)  # not Hermitian-consistent on the 0 plane, as after the weights
    field = transforms.inverse(coeffs, grid)
    assert relative_error(transforms.inverse(coeffs.float().to(CUDA), grid, backend=backend).cpu(), field) < 1e-5


@pytest.mark.gpu
def test_full_precision_transforms_ignore_tf32():
    """With TF32 matmuls allowed, "auto" float32 transforms (cuFFT) keep float32 accuracy."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        x = torch.randn(8, 64, 128, 128, dtype=torch.float64)
        exact = transforms.forward(x, (32, 32))
        assert relative_error(transforms.forward(x.float().to(CUDA), (32, 32)).cpu(), exact) < 1e-5
        field = transforms.inverse(exact, (128, 128))
        assert relative_error(transforms.inverse(exact.float().to(CUDA), (128, 128)).cpu(), field) < 1e-5
    finally:
        matmul.fp32_precision = saved


@pytest.mark.gpu
def test_cufft_and_dft_overflow_alike():
    for value, finite in ((1000.0, True), (1100.0, False)):
        x = torch.full((1, 1, 64, 64), value, device=CUDA)
        for backend in ("torch", "dft"):
            coeffs = transforms.forward(x, (8, 8), dtype=torch.float16, backend=backend)
            assert bool(torch.isfinite(coeffs).all()) is finite, backend

