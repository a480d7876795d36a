"""Generating data sets and reading the formats users have."""

import dataclasses
import pickle

import h5py
import numpy as np
import pytest
import torch

from mpno import data
from mpno.data import DataError, OperatorDataset, split_indices
from mpno.data import darcy as darcy_module


@pytest.fixture(scope="module")
def darcy_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "darcy.h5"
    return data.generate("darcy", out, n=6, resolution=32, seed=1, coarsen=[16], progress=False)


def test_generated_file_holds_inputs_outputs_grid_and_parameters(darcy_files):
    fine, coarse = darcy_files
    with h5py.File(fine) as f:
        assert f["x"].shape == f["y"].shape == (6, 1, 32, 32)
        assert np.allclose(f["grid_0"][:], np.arange(32) / 32)
        assert f.attrs["equation"] == "darcy" and f.attrs["seed"] == 1 and f.attrs["resolution"] == 32
        assert '"a_high": 12.0' in f.attrs["params"]
    sample = OperatorDataset(fine)[2]
    assert set(sample[0].unique().tolist()) <= {3.0, 12.0}
    assert (sample[1] >= 0).all() and sample[1][0, 0].abs().max() == 0  # u = 0 on the boundary
    ds_fine, ds_coarse = OperatorDataset(fine), OperatorDataset(coarse)
    for i in range(6):
        assert torch.equal(ds_coarse[i][0], ds_fine[i][0][:, ::2, ::2])
        assert torch.equal(ds_coarse[i][1], ds_fine[i][1][:, ::2, ::2])


def test_generation_is_deterministic_and_independent_of_batch_size(tmp_path, darcy_files):
    again = data.generate("darcy", tmp_path / "again.h5", n=6, resolution=32, seed=1, batch_size=4, progress=False)[0]
    first, second = OperatorDataset(darcy_files[0]), OperatorDataset(again)
    assert all(torch.equal(first[i][0], second[i][0]) and torch.equal(first[i][1], second[i][1]) for i in range(6))
    other = data.generate("darcy", tmp_path / "other.h5", n=1, resolution=32, seed=2, progress=False)[0]
    assert not torch.equal(OperatorDataset(other)[0][0], first[0][0])


def test_navier_stokes_and_burgers_files(tmp_path):
    ns = data.generate("navier-stokes", tmp_path / "ns.h5", n=2, resolution=16, time=0.5, snapshots=5,
                       dt=0.01, progress=False)[0]
    assert OperatorDataset(ns).shapes == ((1, 16, 16), (5, 16, 16))
    b = data.generate("burgers", tmp_path / "b.h5", n=3, resolution=64, time=0.1, progress=False)[0]
    assert OperatorDataset(b).shapes == ((1, 64), (1, 64))
    assert OperatorDataset(b).spatial_dims == 1


def test_a_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    real = darcy_module.generate_batch
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("solver crashed")
        return real(*args, **kwargs)

    monkeypatch.setitem(data.GENERATORS, "darcy", dataclasses.replace(darcy_module.GENERATOR, solve=failing))
    with pytest.raises(RuntimeError, match="solver crashed"):
        data.generate("darcy", tmp_path / "d.h5", n=4, resolution=16, batch_size=2, coarsen=[8], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_not_overwritten_unless_asked(tmp_path):
    out = tmp_path / "d.h5"
    data.generate("darcy", out, n=1, resolution=16, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        data.generate("darcy", out, n=1, resolution=16, progress=False)
    data.generate("darcy", out, n=2, resolution=16, progress=False, overwrite=True)
    assert len(OperatorDataset(out)) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"equation": "heat"}, "equation='heat'.*darcy"),
        ({"coarsen": [12]}, "coarsen=12 must divide"),
        ({"kappa": 1.0}, r"unknown darcy parameters \['kappa'\]"),
        ({"tau": "3"}, "darcy parameter tau='3': expected a number"),
        ({"equation": "navier-stokes", "forced": "false"}, "forced='false': expected true or false"),
        ({"out": "d.npz"}, "give a .h5 path"),
    ],
)
def test_bad_generation_arguments(tmp_path, kwargs, message):
    args = {"equation": "darcy", "out": tmp_path / "d.h5", "n": 1, "resolution": 16} | kwargs
    if isinstance(args["out"], str):
        args["out"] = tmp_path / args["out"]
    with pytest.raises(ValueError, match=message):
        data.generate(**args)


def test_neuraloperator_pt_layout_with_bool_inputs(tmp_path):
    path = tmp_path / "darcy_train_16.pt"
    x = torch.rand(5, 16, 16) > 0.5
    y = torch.randn(5, 1, 16, 16)
    torch.save({"x": x, "y": y}, path)
    ds = OperatorDataset(path)
    assert ds.shapes == ((1, 16, 16), (1, 16, 16))
    assert ds[3][0].dtype == torch.float32 and torch.equal(ds[3][0][0], x[3].float())
    assert torch.equal(ds[3][1], y[3])


class NotATensor:
    pass


def test_pickles_that_weights_only_rejects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": NotATensor(), "y": torch.zeros(1)}, f, protocol=2)
    with pytest.raises(DataError, match="evil.pt.*will not unpickle"):
        OperatorDataset(path)


def test_pdebench_darcy_and_time_series_layouts(tmp_path):
    darcy_path = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(darcy_path, "w") as f:
        f["nu"] = np.random.rand(4, 8, 8).astype("float32")
        f["tensor"] = np.random.rand(4, 1, 8, 8).astype("float32")
        f["x-coordinate"] = np.linspace(0, 1, 8)
    ds = OperatorDataset(darcy_path)
    assert ds.shapes == ((1, 8, 8), (1, 8, 8)) and len(ds) == 4
    series = tmp_path / "1D_Burgers_Sols_Nu0.001.hdf5"
    values = np.random.rand(3, 11, 32).astype("float32")
    with h5py.File(series, "w") as f:
        f["tensor"] = values
        f["t-coordinate"] = np.linspace(0, 2, 12)
        f["x-coordinate"] = np.linspace(0, 1, 32)
    ds = OperatorDataset(series, spatial_dims=1, time_in=0, time_out=-1)
    assert torch.equal(ds[1][0][0], torch.from_numpy(values[1, 0]))
    assert torch.equal(ds[1][1][0], torch.from_numpy(values[1, 10]))
    with pytest.raises(DataError, match="time_out=20 is outside the 11 snapshots"):
        OperatorDataset(series, spatial_dims=1, time_out=20)


def test_npz_named_arrays(tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, inputs=np.random.rand(3, 2, 8, 8), outputs=np.random.rand(3, 8, 8))
    ds = OperatorDataset(path, x_key="inputs", y_key="outputs")
    assert ds.shapes == ((2, 8, 8), (1, 8, 8))
    with pytest.raises(DataError, match=r"no key 'x'.*\['inputs', 'outputs'\].*x_key="):
        OperatorDataset(path)


def test_bad_files_name_the_file_the_key_and_the_problem(tmp_path):
    mismatched = tmp_path / "counts.pt"
    torch.save({"x": torch.zeros(3, 8, 8), "y": torch.zeros(4, 8, 8)}, mismatched)
    with pytest.raises(DataError, match="counts.pt: 'x' has 3 samples but 'y' has 4"):
        OperatorDataset(mismatched)
    grids = tmp_path / "grids.pt"
    torch.save({"x": torch.zeros(3, 8, 8), "y": torch.zeros(3, 16, 16)}, grids)
    with pytest.raises(DataError, match=r"grids.pt: input 'x' is on grid \(8, 8\) but output 'y' on \(16, 16\)"):
        OperatorDataset(grids)
    nan = tmp_path / "nan.pt"
    y = torch.zeros(3, 8, 8)
    y[2, 4, 4] = float("nan")
    torch.save({"x": torch.zeros(3, 8, 8), "y": y}, nan)
    ds = OperatorDataset(nan)
    ds[1]
    with pytest.raises(DataError, match="nan.pt: 'y' sample 2 holds NaN or inf"):
        ds[2]
    disguised = tmp_path / "really_npz.h5"
    np.savez(tmp_path / "really_npz.npz", x=np.zeros(2))
    (tmp_path / "really_npz.npz").rename(disguised)
    with pytest.raises(DataError, match="really_npz.h5: the extension says HDF5 but the content is a npz file"):
        OperatorDataset(disguised)
    with pytest.raises(DataError, match="no such file"):
        OperatorDataset(tmp_path / "missing.h5")
    wrong_rank = tmp_path / "rank.pt"
    torch.save({"x": torch.zeros(3, 2, 2, 8, 8), "y": torch.zeros(3, 8, 8)}, wrong_rank)
    with pytest.raises(DataError, match="'x' has shape .* spatial_dims="):
        OperatorDataset(wrong_rank)


def test_lazy_hdf5_reads_in_dataloader_workers(darcy_files):
    ds = OperatorDataset(darcy_files[0])
    serial = torch.cat([y for _, y in torch.utils.data.DataLoader(ds, batch_size=2)])
    parallel = torch.cat([y for _, y in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)])
    assert torch.equal(serial, parallel)


def test_subsampling_and_splitting(darcy_files):
    ds = OperatorDataset(darcy_files[0], subsample=2)
    assert ds.shapes == ((1, 16, 16), (1, 16, 16))
    with pytest.raises(DataError, match="not divisible by subsample=3"):
        OperatorDataset(darcy_files[0], subsample=3)
    train, test = split_indices(10, 0.3, seed=4)
    assert len(test) == 3 and sorted(train + test) == list(range(10))
    assert split_indices(10, 0.3, seed=4) == (train, test)
    assert ds.subset([1, 0])[0][1].shape == (1, 16, 16)
    with pytest.raises(DataError, match="leaves no training"):
        split_indices(10, 10)


def test_generate_off_a_terminal_prints_a_line_per_chunk_of_samples(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mpno", "generate", "darcy", "--resolution", "8", "--n", "40",
                           "--batch-size", "8", "--out", str(tmp_path / "d.h5"), "--threads", "1"],
                          capture_output=True, text=True, timeout=120)  # stderr is a pipe, not a terminal
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("darcy 8: ")]
    assert [line.split()[2] for line in lines] == ["8/40", "16/40", "24/40", "32/40", "40/40"], done.stderr
    assert all(line.endswith(" s") and "samples" in line for line in lines)


def test_progress_lines_come_every_twentieth_of_the_samples(capsys):
    from mpno.data.progress import Progress

    with Progress(100, "job") as progress:  # capsys: stderr is not a terminal
        for _ in range(40):
            progress.update(2)
        progress.update(20)
    counts = [line.split()[1] for line in capsys.readouterr().err.splitlines()]
    assert counts == [f"{k}/100" for k in (6, 10, 16, 20, 26, 30, 36, 40, 46, 50, 56, 60, 66, 70, 76, 80, 100)]
    with Progress(10, "quiet", show=False) as progress:
        progress.update(10)
    assert capsys.readouterr().err == ""


def test_generate_reports_each_batch_before_solving_the_next(tmp_path, capsys, monkeypatch):
    """Progress moves while the job runs, and one batch at a time is in memory: no batch is solved before the
    previous one is written and counted."""
    events = []
    solve = darcy_module.GENERATOR.solve

    def recorded(resolution, seed, indices, **params):
        events.append(f"solve {indices.start}")
        return solve(resolution, seed, indices, **params)

    import importlib

    from mpno.data import progress

    generation = importlib.import_module("mpno.data.generate")  # the module (mpno.data.generate is the function)
    monkeypatch.setitem(generation.GENERATORS, "darcy", dataclasses.replace(darcy_module.GENERATOR, solve=recorded))

    update = progress.Progress.update
    monkeypatch.setattr(progress.Progress, "update", lambda self, count: (events.append(f"count {count}"),
                                                                           update(self, count)))
    data.generate("darcy", tmp_path / "d.h5", n=6, resolution=16, batch_size=2, progress=False)
    assert events == ["solve 0", "count 2", "solve 2", "count 2", "solve 4", "count 2"]
