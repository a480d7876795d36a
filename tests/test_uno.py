"""U-NO: its U of grids, the resampling in Fourier space, every precision against float64, every command."""

import copy

import h5py
import pytest
import torch

import mpno
from mpno import Precision
from mpno.nn.uno import resample
from mpno.run import bench
from reference import (bandlimited, forward_stages, inverse_stages, json_of, last_layer_amplification,
                       relative_error, rounding_only, spectral_conv_stages, tolerance)

CONFIGS = [((48,), (12,)), ((32, 32), (8, 8)), ((24, 20), (8, 6)), ((16, 12, 8), (8, 6, 4))]


def model_and_reference(modes, **kwargs):
    model = mpno.UNO(2, 3, modes, hidden_channels=4, n_layers=4, **kwargs)
    return model, copy.deepcopy(model).double()


def test_the_layers_encode_on_coarser_grids_and_decode_back_with_skips_across():
    model = mpno.UNO(1, 1, (8, 8), hidden_channels=4, n_layers=5)
    assert model.scalings == [0.5, 0.5, 1.0, 2.0, 2.0]
    assert model.grids((32, 32)) == [(32, 32), (16, 16), (8, 8), (8, 8), (16, 16), (32, 32)]
    assert model.layer_modes == [(4, 4), (2, 2), (2, 2), (2, 2), (4, 4)]  # scaled by the coarsest grid touched
    assert model.widths == [8, 16, 16, 8, 4] and model.skips == {4: 0, 3: 1}
    assert [block.conv.in_channels for block in model.blocks] == [4, 8, 16, 16 + 16, 8 + 8]
    for grid in ((36, 28), (8, 9)):  # any grid that carries n_modes: each level carries its layers' modes
        x = torch.randn(2, 1, *grid)
        assert model(x).shape == x.shape
    with pytest.raises(ValueError, match=r"fewer than n_modes\[0\]=8"):
        model(torch.randn(1, 1, 7, 9))
    with pytest.raises(ValueError, match=r"scalings=\[0.5\] is not supported; give 2 factors"):
        mpno.UNO(1, 1, (8, 8), n_layers=2, scalings=[0.5])


@pytest.mark.parametrize("size, target", [(32, 16), (16, 32), (24, 40), (33, 16)])
def test_resampling_in_fourier_space_is_exact_for_the_frequencies_both_grids_resolve(size, target):
    kmax = (min(size, target) - 1) // 2
    fine = bandlimited(2, 3, (size, 2 * size), kmax=kmax, seed=1)
    expected = bandlimited(2, 3, (target, 2 * target), kmax=kmax, seed=1)  # the same function on the other grid
    resampled = resample(fine, (target, 2 * target), Precision("full"))
    assert resampled.dtype == torch.float64 and relative_error(resampled, expected) < 1e-12


def test_gradcheck_in_float64():
    model = mpno.UNO(1, 1, (4, 4), hidden_channels=2, n_layers=3, channel_mlp=False).double()
    x = torch.randn(1, 1, 8, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


@pytest.mark.parametrize("mode", ["full", "amp", "mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid, modes", CONFIGS)
def test_every_precision_is_within_the_rounding_tolerance(mode, dtype, grid, modes):
    model, ref = model_and_reference(modes)
    model.set_precision(rounding_only(mode, dtype))
    half = model.precision.half_dtype
    x = torch.randn(2, 2, *grid, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    y, y64 = model(x), ref(x64)
    assert y.shape == (2, 3, *grid) and y.dtype == torch.float32
    if mode == "full":
        assert relative_error(y, y64) < 1e-5
        return
    # Per layer: the spectral path, the skip's product and its resampling (a transform each way, or the
    # float32 transform rounded once), the channel MLP (2 products), gate and sums; lifting, projection and the
    # bridge across the U: 2 products each. Errors carried through layers add.
    ndim = len(grid)
    resampling = (forward_stages(ndim) if mode == "half" else 1) + inverse_stages(ndim)
    stages = len(model.blocks) * (spectral_conv_stages(mode, ndim) + resampling + 6) + 6
    kappa = last_layer_amplification(ref, x64)
    assert relative_error(y, y64) < kappa * tolerance(half, stages)
    gx, = torch.autograd.grad(y.square().sum(), (x,))
    rx, = torch.autograd.grad(y64.square().sum(), (x64,))
    assert relative_error(gx, rx) < kappa * tolerance(half, stages + 1)


def test_trains_evaluates_predicts_and_benches_from_the_command_line(tmp_path, capsys):
    x = bandlimited(16, 1, (16, 16), kmax=3, seed=0).float()
    torch.save({"x": x, "y": torch.roll(x, 2, -1) + 0.1 * x**2}, tmp_path / "d.pt")
    data, out = tmp_path / "d.pt", tmp_path / "run"
    summary = json_of(capsys, "train", "--model", "uno", "--data-train", data, "--n-modes", "8", "--hidden-channels",
                      "4", "--n-layers", "3", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--out", out,
                      "-q")
    (errors,) = summary["test"].values()
    assert set(errors) == {"l2", "h1"} and 0 < errors["l2"] < 2
    model = mpno.load_model(out / "best.pt")
    assert type(model.operator) is mpno.UNO and model.operator.scalings == [0.5, 1.0, 2.0]
    evaluated = json_of(capsys, "evaluate", out / "best.pt", "--data", data)["test"]["d.pt"]["l2"]
    predicted = json_of(capsys, "predict", out / "best.pt", data, "--out", tmp_path / "p.h5", "-q")
    assert predicted["relative_l2"] == pytest.approx(evaluated, rel=1e-5)
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["prediction"].shape == (16, 1, 16, 16)
    config = bench.configure("uno", hidden_channels=4, n_modes=[8], n_layers=2, resolution=[16], batch_size=2)
    row = bench.measure(config, Precision("mixed"), torch.device("cpu"), steps=1, warmup=0)
    assert 0 < row["output_difference_float64"] < 50 * tolerance(torch.float16, 1)
