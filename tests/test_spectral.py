"""SpectralConv in every precision against a float64 reference."""

import copy

import pytest
import torch

from mpno import Precision, SpectralConv
from mpno.ops.stabilizers import stabilize
from reference import (CUDA, hermitian_field, kept_index, relative_error, saved_dtypes, spectral_conv_stages,
                       tolerance)

GRIDS = [((32, 32), (8, 8)), ((48, 40), (12, 10)), ((64,), (16,)), ((8, 12, 10), (4, 6, 6))]


def conv_and_reference(grid_modes, channels=8):
    _, modes = grid_modes
    conv = SpectralConv(channels, channels, modes)
    with torch.no_grad():
        conv.bias.normal_()
    return conv, copy.deepcopy(conv).double()


@pytest.mark.parametrize("grid_modes", GRIDS)
def test_full_matches_float64(grid_modes):
    conv, ref = conv_and_reference(grid_modes)
    x = torch.randn(3, 8, *grid_modes[0])
    y = conv(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert relative_error(y, ref(x.double())) < 1e-5


def independent_reference(conv: SpectralConv, x: torch.Tensor) -> torch.Tensor:
    """``F⁻¹(R · F(x)) + bias`` in float64, written with torch.fft's complex transforms only."""
    grid = x.shape[2:]
    spectrum = torch.fft.fftn(x.double(), dim=tuple(range(2, x.ndim)), norm="forward")
    for dim, index in enumerate(kept_index(grid, conv.n_modes)):
        spectrum = spectrum.index_select(2 + dim, index)
    weight = conv.complex_weight.detach().to(torch.complex128)
    product = torch.einsum("bi...,io...->bo...", spectrum, weight)
    return hermitian_field(product, grid) + conv.bias.detach().double().view(-1, *([1] * len(grid)))


@pytest.mark.parametrize("grid_modes", GRIDS + [((10, 8), (10, 8)), ((9, 7), (6, 6))])
@pytest.mark.parametrize("backend", ["torch", "dft"])
@pytest.mark.parametrize("factorization", [None, "cp"])
def test_float64_matches_an_independent_reference(grid_modes, backend, factorization):
    grid, modes = grid_modes
    conv = SpectralConv(4, 5, modes, factorization=factorization, rank=0.5,
                        precision=Precision("full", fft_backend=backend)).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 4, *grid, dtype=torch.float64)
    assert relative_error(conv(x), independent_reference(conv, x)) < 1e-12


def test_gradcheck_in_float64():
    conv = SpectralConv(2, 3, (4, 4)).double()
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(conv, {"weight": w}, (x,)),
                                    (conv.weight.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("mode", ["mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid_modes", GRIDS)
def test_low_precision_is_within_the_rounding_tolerance(mode, dtype, grid_modes):
    grid, modes = grid_modes
    conv, ref = conv_and_reference(grid_modes)
    conv.precision = Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype)
    half = conv.precision.half_dtype
    x = torch.randn(3, 8, *grid, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    y, y64 = conv(x), ref(x64)
    assert y.dtype == half
    stages = spectral_conv_stages(mode, len(grid))
    assert relative_error(y, y64) < tolerance(half, stages)

    probe = torch.randn_like(y64)
    gx, gw = torch.autograd.grad((y.float() * probe).sum(), (x, conv.weight))
    rx, rw = torch.autograd.grad((y64 * probe).sum(), (x64, ref.weight))
    assert gw.dtype == torch.float32  # master weights keep their dtype
    # The backward pass rounds at the transposed stages, plus the incoming gradient.
    assert relative_error(gx, rx) < tolerance(half, stages + 1)
    assert relative_error(gw, rw) < tolerance(half, stages + 1)


@pytest.mark.parametrize("mode", ["mixed", "half"])
def test_only_half_tensors_are_saved_for_backward(mode):
    """Inside an FNO the layer's input is half (the real layers ran in half)."""
    conv = SpectralConv(4, 4, (8, 8), precision=mode)
    x = torch.randn(2, 4, 32, 24, dtype=torch.float16, requires_grad=True)
    assert saved_dtypes(lambda: conv(x)) == {torch.float16}


def test_overflow_is_real_and_each_stabilizer_prevents_it():
    conv = SpectralConv(4, 4, (16, 16))
    ref = copy.deepcopy(conv).double()
    x = 1.5e3 * (1 + 0.1 * torch.randn(2, 4, 64, 64))  # 64 points * 1.5e3 > 65504
    conv.precision = Precision("half", stabilizer=None)
    assert not torch.isfinite(conv(x)).all()
    for name in ("tanh", "clip_hard", "clip_sigma"):
        conv.precision = Precision("half", stabilizer=name)
        y = conv(x)
        assert torch.isfinite(y).all(), name
        # The stabilizer acts on the half input, before the transform and nothing else.
        expected = ref(stabilize(x.half(), name).double())
        assert relative_error(y, expected) < tolerance(torch.float16, spectral_conv_stages("half", 2)), name


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 4, 32), r"n_modes=\(8, 8\) \(2 spatial dims\) and expects input \(batch, 4, H, W\)"),
        ((2, 3, 32, 32), "expects 4 input channels"),
        ((2, 4, 32, 6), r"6 points along spatial dim 1, fewer than n_modes\[1\]=8"),
    ],
)
def test_bad_input_gets_a_clear_error(shape, message):
    conv = SpectralConv(4, 4, (8, 8))
    with pytest.raises(ValueError, match=message):
        conv(torch.randn(shape))


def test_bad_arguments_get_a_clear_error():
    with pytest.raises(ValueError, match="n_modes"):
        SpectralConv(4, 4, (8, 8, 8, 8))
    with pytest.raises(ValueError, match="in_channels=0"):
        SpectralConv(0, 4, (8,))
    with pytest.raises(ValueError, match="integer|floating-point"):
        SpectralConv(4, 4, (8,))(torch.ones(1, 4, 16, dtype=torch.int64))


def test_weight_shape_follows_the_neuraloperator_convention():
    conv = SpectralConv(3, 5, (16, 16))
    assert conv.complex_weight.shape == (3, 5, 16, 9)
    assert conv.complex_weight.dtype == torch.complex64


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid", [(64, 64), (48, 40)])
def test_cuda_matches_float64_and_the_cpu_emulation(mode, dtype, grid):
    conv = SpectralConv(16, 16, (16, 16))
    ref = copy.deepcopy(conv).double()
    policy = Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype)
    conv.precision = policy
    x = torch.randn(4, 16, *grid)
    tol = tolerance(policy.half_dtype, spectral_conv_stages(mode, 2))
    on_cpu = conv(x)
    on_gpu = conv.to(CUDA)(x.to(CUDA)).cpu()
    exact = ref(x.double())
    assert relative_error(on_gpu, exact) < tol
    assert relative_error(on_gpu, on_cpu) < 2 * tol

