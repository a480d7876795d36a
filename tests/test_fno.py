"""The FNO in every precision and dimension, against float64."""

import copy

import pytest
import torch

import mpno
from mpno import Precision
from mpno.nn.layers import grid_coordinates
from reference import (CUDA, bandlimited, last_layer_amplification, relative_error, saved_dtypes, spectral_conv_stages,
                       tolerance)

CONFIGS = [((64,), (16,)), ((32, 32), (8, 8)), ((48, 40), (12, 10)), ((12, 10, 8), (6, 6, 4))]


def model_and_reference(modes, **kwargs):
    model = mpno.FNO(2, 3, modes, hidden_channels=8, n_layers=3, **kwargs)
    return model, copy.deepcopy(model).double()


@pytest.mark.parametrize("grid, modes", CONFIGS)
def test_full_matches_float64(grid, modes):
    model, ref = model_and_reference(modes)
    x = torch.randn(2, 2, *grid)
    y = model(x)
    assert y.shape == (2, 3, *grid) and y.dtype == torch.float32
    assert relative_error(y, ref(x.double())) < 1e-5


def test_gradcheck_in_float64():
    model = mpno.FNO(1, 1, (4, 4), hidden_channels=3, n_layers=2).double()
    x = torch.randn(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


@pytest.mark.parametrize("mode", ["amp", "mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid, modes", CONFIGS)
def test_low_precision_is_within_the_rounding_tolerance(mode, dtype, grid, modes):
    model, ref = model_and_reference(modes)
    model.set_precision(Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype))
    half = model.precision.half_dtype
    x = torch.randn(2, 2, *grid)
    x64 = x.double()
    y = model(x)
    assert y.dtype == torch.float32
    # Per layer: the spectral path plus skip, channel MLP (2 products), gate and sums;
    # lifting and projection: 2 products each. Errors carried through layers add.
    layers = len(model.blocks)
    stages = layers * (spectral_conv_stages(mode, len(grid)) + 6) + 4
    kappa = last_layer_amplification(ref, x64)
    assert relative_error(y, ref(x64)) < kappa * tolerance(half, stages)


def test_discretisation_invariance_on_a_bandlimited_input():
    """Output at 64² sampled at the 32² points equals the output at 32².

    Every linear part is exactly invariant (see the SpectralConv and grid tests
    below); the GELUs create harmonics above the kept modes that alias
    differently on the two grids. For inputs with |k| ≤ 3 and 12 modes that
    aliasing measured 1e-4 to 7e-4 of the output over seeds, so we allow 2e-3.
    """
    model = mpno.FNO(2, 1, (12, 12), hidden_channels=16, n_layers=4).double()
    fine = bandlimited(2, 2, (64, 64), kmax=3)
    assert relative_error(model(fine)[..., ::2, ::2], model(fine[..., ::2, ::2])) < 2e-3


def test_spectral_conv_is_exactly_invariant_on_bandlimited_input():
    conv = mpno.SpectralConv(2, 2, (12, 12)).double()
    fine = bandlimited(2, 2, (64, 64), kmax=5)
    assert relative_error(conv(fine)[..., ::2, ::2], conv(fine[..., ::2, ::2])) < 1e-12


def test_grid_embedding_samples_the_same_coordinates_on_every_grid():
    fine = grid_coordinates(torch.zeros(1, 1, 64, 48))
    coarse = grid_coordinates(torch.zeros(1, 1, 32, 24))
    assert torch.equal(fine[..., ::2, ::2], coarse)
    assert fine[0, 0, 1, 0] == 1 / 64 and fine[0, 1, 0, 1] == 1 / 48


def test_runs_on_a_grid_other_than_the_training_one():
    model = mpno.FNO(1, 1, (8, 8), hidden_channels=4, n_layers=2)
    for grid in ((8, 8), (32, 32), (33, 17)):
        assert model(torch.randn(1, 1, *grid)).shape == (1, 1, *grid)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"skip": "identity"},
        {"skip": "soft-gating"},
        {"channel_mlp": False},
        {"positional_embedding": False},
        {"domain_padding": 0.25},
    ],
)
def test_variants_match_float64(kwargs):
    model, ref = model_and_reference((8, 8), **kwargs)
    x = torch.randn(2, 2, 24, 20)
    assert relative_error(model(x), ref(x.double())) < 1e-5


def test_domain_padding_pads_the_spectral_grid():
    model = mpno.FNO(1, 1, (8, 8), hidden_channels=4, n_layers=1, domain_padding=0.25)
    seen = []
    model.blocks[0].conv.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[2:]))
    assert model(torch.randn(1, 1, 16, 32)).shape == (1, 1, 16, 32)
    assert tuple(seen[0]) == (20, 40)


def test_spectral_weights_have_neuraloperator_shapes():
    model = mpno.FNO(1, 1, (16, 16), hidden_channels=32, n_layers=4)
    assert all(b.conv.complex_weight.shape == (32, 32, 16, 9) for b in model.blocks)
    assert mpno.FNO(1, 1, (16,), hidden_channels=8).blocks[0].conv.complex_weight.shape == (8, 8, 9)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 2, 32), r"expects input \(batch, 2, H, W\)"),
        ((2, 5, 32, 32), "expects 2 input channels"),
        ((2, 2, 4, 32), r"fewer than n_modes\[0\]=8"),
    ],
)
def test_bad_input_gets_a_clear_error(shape, message):
    model = mpno.FNO(2, 1, (8, 8), hidden_channels=4, n_layers=1)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"skip": "residual"}, "skip='residual'.*'soft-gating'"),
        ({"n_modes": (8, 8, 8, 8)}, "n_modes"),
        ({"hidden_channels": 0}, "hidden_channels=0"),
        ({"precision": "quarter"}, "mode='quarter'"),
        ({"domain_padding": 2.0}, "domain_padding=2.0"),
    ],
)
def test_bad_arguments_get_a_clear_error(kwargs, message):
    args = {"in_channels": 1, "out_channels": 1, "n_modes": (8, 8)} | kwargs
    with pytest.raises(ValueError, match=message):
        mpno.FNO(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["full", "amp", "mixed", "half"])
def test_fno_trains_on_cuda_in_every_mode(mode):
    model = mpno.FNO(1, 1, (16, 16), hidden_channels=16, n_layers=2, precision=mode).to(CUDA)
    x = torch.randn(4, 1, 64, 64, device=CUDA)
    out = model(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    if mode in ("mixed", "half"):
        conv = model.blocks[0].conv
        h = torch.randn(4, 16, 64, 64, device=CUDA, dtype=torch.float16, requires_grad=True)
        assert saved_dtypes(lambda: conv(h)) == {torch.float16}



def test_autocast_runs_a_full_model_as_amp_and_keeps_an_explicit_policy():
    model, ref = model_and_reference((8, 8))
    x = torch.randn(2, 2, 16, 16)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x)
        out.square().mean().backward()
    assert model.precision == Precision("full")
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        model.set_precision(Precision("amp", "bfloat16"))
        assert torch.equal(out.detach(), model(x))
        stages = len(model.blocks) * (spectral_conv_stages("amp", 2) + 6) + 4
        assert relative_error(out, ref(x.double())) < last_layer_amplification(ref, x.double()) * tolerance(
            torch.bfloat16, stages)
        model.set_precision(Precision("mixed", "float16"))
        mixed = model(x)
        with torch.autocast("cpu", torch.bfloat16):
            assert torch.equal(model(x), mixed)


@pytest.mark.gpu
def test_autocast_float16_on_cuda_runs_as_amp():
    model = mpno.FNO(1, 1, (16, 16), hidden_channels=16, n_layers=2).to(CUDA)
    x = torch.randn(4, 1, 64, 64, device=CUDA)
    with torch.autocast("cuda", torch.float16):
        out = model(x)
        out.square().mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        model.set_precision(Precision("amp", "float16"))
        assert relative_error(out, model(x)) < 1e-6
