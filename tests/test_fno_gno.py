"""FNO-GNO: the geometry on a latent grid, an FNO, a GNO out to the points; every precision against float64,
on potential flow and on the car-CFD reader's clouds, and through every command."""

import copy

import h5py
import numpy as np
import pytest
import torch

import mpno
from mpno import Precision
from mpno.data import generate
from mpno.data.pointclouds import PointCloudBatches, PointClouds, car_cfd
from mpno.nn.fno_gno import cloud_means
from mpno.run import bench
from reference import (json_of, last_layer_amplification, relative_error, rounding_only, spectral_conv_stages,
                       tolerance)
from test_geometry import GNO_HALF_STAGES, _potential_flow_clouds, _subdivided_octahedron, _tiny_gino, _write_ply


def batch_of(model, clouds):
    batch = PointClouds.cat(clouds)
    model.fit_positions(c.points for c in clouds)
    batch.neighbors = model._batch_neighborhoods(batch)
    return batch


def test_the_latent_fno_sees_the_geometry_and_each_clouds_mean_features():
    clouds = _potential_flow_clouds([40, 25])
    batch = PointClouds.cat(clouds)
    assert torch.allclose(cloud_means(batch), torch.stack([c.features.mean(0) for c in clouds]))
    weights = torch.rand(65, dtype=torch.float64)
    weighted = PointClouds(batch.points, batch.features, batch.sizes, weights)
    first = (clouds[0].features * weights[:40, None]).sum(0) / weights[:40].sum()
    assert torch.allclose(cloud_means(weighted)[0], first)
    model = _tiny_gino(mpno.FNOGNO)
    assert model.fno.in_channels == 6 + 1 and not hasattr(model, "gno_in")  # no input GNO: the FNO's input is given
    assert model.gno_out.kernel_kind == "linear"
    assert _tiny_gino(mpno.FNOGNO, kernel="nonlinear").gno_out.kernel_kind == "nonlinear"


def _within_rounding(model, batch, mode, dtype):
    """``model`` in ``mode``/``dtype`` against itself in float64 on ``batch``: output and feature gradients."""
    reference = copy.deepcopy(model).double()
    model.set_precision(rounding_only(mode, dtype))
    x = PointClouds(batch.points.float(), batch.features.float().requires_grad_(), batch.sizes,
                    None if batch.weights is None else batch.weights.float(), batch.neighbors)
    x64 = PointClouds(batch.points.double(), batch.features.double().requires_grad_(), batch.sizes,
                      None if batch.weights is None else batch.weights.double(), batch.neighbors)
    y, y64 = model(x), reference(x64)
    assert y.dtype == torch.float32
    if mode == "full":
        return relative_error(y, y64) < 1e-5
    # The latent FNO (per layer: its spectral path, skip, channel MLP, gate, sums; lifting and projection), the
    # output GNO, the final MLP (2 products).
    stages = len(model.fno.blocks) * (spectral_conv_stages(mode, 3) + 6) + 4 + GNO_HALF_STAGES + 4
    limit = last_layer_amplification(reference, x64) * tolerance(getattr(torch, dtype), stages)
    gx, = torch.autograd.grad(y.square().sum(), (x.features,))
    rx, = torch.autograd.grad(y64.square().sum(), (x64.features,))
    return relative_error(y, y64) < limit and relative_error(gx, rx) < limit


@pytest.mark.parametrize("mode", ["full", "amp", "mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_precision_is_within_the_rounding_tolerance_on_potential_flow(mode, dtype):
    torch.manual_seed(0)
    model = _tiny_gino(mpno.FNOGNO)
    assert _within_rounding(model, batch_of(model, _potential_flow_clouds([50, 30])), mode, dtype)


def _car_data(root):
    """Two meshes in neuraloperator's car-pressure layout (tests/test_geometry.py reads it)."""
    mesh, faces = _subdivided_octahedron()
    rng = np.random.default_rng(0)
    for name, scale in (("001", 1.0), ("002", 1.5)):
        (root / "data" / name).mkdir(parents=True)
        _write_ply(root / "data" / name / "tri_mesh.ply", mesh * scale, faces, binary=True)
        np.save(root / "data" / name / "press.npy", rng.standard_normal(len(mesh)))
    (root / "train.txt").write_text("001,002")
    (root / "test.txt").write_text("002")


@pytest.mark.parametrize("mode, dtype", [("mixed", "float16"), ("half", "bfloat16")])
def test_on_the_car_cfd_readers_clouds_with_their_vertex_areas(tmp_path, mode, dtype):
    _car_data(tmp_path)
    dataset = car_cfd(tmp_path, "train")
    torch.manual_seed(0)
    model = mpno.FNOGNO(3, 1, (4, 4, 4), hidden_channels=6, n_layers=2, latent_grid=6, radius=0.6, kernel_hidden=8)
    model.fit_positions(dataset[i][0].points for i in range(len(dataset)))
    batches = PointCloudBatches(dataset, 2, neighborhoods=model.neighborhoods)
    x, y = batches.batch(range(2))
    assert x.weights is not None and x.sizes == (18, 18)  # the quadrature weights weigh the mean features
    assert _within_rounding(model, x, mode, dtype)


def test_trains_evaluates_predicts_and_benches_from_the_command_line(tmp_path, capsys):
    generate("potential-flow", tmp_path / "p.h5", n=12, points=64, progress=False)
    data, out = tmp_path / "p.h5", tmp_path / "run"
    summary = json_of(capsys, "train", "--model", "fno-gno", "--data-train", data, "--n-modes", "4", "--latent-grid",
                      "6", "--radius", "0.5", "--hidden-channels", "4", "--n-layers", "1", "--epochs", "2",
                      "--batch-size", "4", "--device", "cpu", "--out", out, "-q")
    (errors,) = summary["test"].values()
    assert set(errors) == {"l2"} and 0 < errors["l2"] < 2
    model = mpno.load_model(out / "best.pt")
    assert type(model.operator) is mpno.FNOGNO and model.operator.gno_out.kernel_kind == "linear"
    evaluated = json_of(capsys, "evaluate", out / "best.pt", "--data", data)["test"]["p.h5"]["l2"]
    predicted = json_of(capsys, "predict", out / "best.pt", data, "--out", tmp_path / "q.h5", "-q")
    assert predicted["relative_l2"] == pytest.approx(evaluated, rel=1e-5)
    with h5py.File(tmp_path / "q.h5") as f:
        assert f["prediction"].shape == (12, 64, 1) and list(f["sizes"][:]) == [64] * 12
    config = bench.configure("fno-gno", hidden_channels=4, n_modes=[4], n_layers=1, resolution=[12], batch_size=1)
    row = bench.measure(config, Precision("mixed"), torch.device("cpu"), steps=1, warmup=0)
    assert 0 < row["output_difference_float64"] < 50 * tolerance(torch.float16, 1)
