"""Bad input, tried as a user would: every case ends in one clear message (exit 2, or an exception
naming the problem), never a traceback, and no file outside the run's own directory changes."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import mpno
from mpno.data import DataError
from mpno.run import checkpoint, cli
from mpno.run.experiment import train
from reference import quiet, smooth_pairs, snapshot, the_error, tiny_config


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of good and broken files: data, checkpoints, configs."""
    root = tmp_path_factory.mktemp("bad")
    x, y = smooth_pairs(16, 16, seed=1)
    torch.save({"x": x, "y": y}, root / "train.pt")
    torch.save({"x": x, "y": y}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    np.savez(root / "train.npz", x=x.numpy(), y=y.numpy())
    mpno.data.generate("darcy", root / "darcy.h5", n=4, resolution=16, progress=False)
    for name in ("train.pt", "legacy.pt", "train.npz", "darcy.h5"):
        data = (root / name).read_bytes()
        (root / f"truncated_{name}").write_bytes(data[: len(data) // 3])
    nan = x.clone()
    nan[2, 0, 3, 3] = float("nan")
    torch.save({"x": nan, "y": y}, root / "nan.pt")
    torch.save({"x": x[:, :, 0, :].clone(), "y": y[:, :, 0, :].clone()}, root / "one_d.pt")
    torch.save({"x": x[..., :2, :2].clone(), "y": y[..., :2, :2].clone()}, root / "tiny_grid.pt")
    torch.save({"x": x.repeat(1, 2, 1, 1), "y": y}, root / "two_channels.pt")
    torch.save({"weights": torch.zeros(3)}, root / "not_a_checkpoint.pt")
    (root / "a_file").write_text("not a directory")
    (root / "bad_lr.yaml").write_text("lr: abc\n")
    (root / "bogus.toml").write_text("bogus = 3\n")
    (root / "modes_text.toml").write_text('n_modes = "many"\n')
    train(tiny_config(root, root / "run", data_test=[], epochs=1), log=quiet)
    state = checkpoint.load(root / "run" / "checkpoint.pt")
    state["operator"]["arguments"]["hidden_channels"] = 9
    checkpoint.save(state, root / "edited.pt")  # as mpno writes it, digest and all: the checks behind the digest
    data = (root / "run" / "checkpoint.pt").read_bytes()
    (root / "truncated_checkpoint.pt").write_bytes(data[: len(data) // 2])
    precious = root / "precious"
    precious.mkdir()
    torch.save({"x": x, "y": y}, precious / "data.pt")
    _files_of_the_wrong_kind(root, x, y, state)
    _runs_that_cannot_be_resumed(root, x, y, state)
    return root


class Payload:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def _files_of_the_wrong_kind(root, x, y, state):
    """Complex, text and scalar arrays, point clouds, sphere data, checkpoints with NaN, files that are not
    what a command expects, a malicious pickle, a YAML syntax error."""
    torch.save({"x": x.to(torch.complex64), "y": y}, root / "complex.pt")
    with h5py.File(root / "complex.h5", "w") as f:
        f["x"], f["y"] = x.numpy().astype(np.complex64), y.numpy()
    with h5py.File(root / "strings.h5", "w") as f:
        f["x"], f["y"] = np.array([b"text"] * 16), y.numpy()
    with h5py.File(root / "scalar.h5", "w") as f:
        f["x"], f["y"] = np.float32(3.0), y.numpy()
    mpno.data.generate("potential-flow", root / "clouds.h5", n=2, points=32, progress=False)
    with h5py.File(root / "clouds.h5") as f, h5py.File(root / "nan_sizes.h5", "w") as g:
        for key in ("points", "normals", "flow", "cp"):
            g[key] = f[key][()]
        g["sizes"] = np.array([np.nan, 32.0])
    sphere = torch.randn(4, 3, 8, 16)
    for name, grid in (("legendre.h5", "legendre-gauss"), ("equi.h5", "equiangular"), ("healpix.h5", "healpix")):
        with h5py.File(root / name, "w") as f:
            f["x"], f["y"] = sphere.numpy(), (2 * sphere).numpy()
            f.attrs.update({"mpno_format": 1, "spatial_dims": 2, "grid": grid})
    train(tiny_config(root, root / "sfno_run", data_train=str(root / "legendre.h5"), data_test=[], model="sfno",
                      epochs=1), log=quiet)
    nan = {**state, "model": {k: v.clone() for k, v in state["model"].items()}}
    next(v for v in nan["model"].values() if v.is_floating_point()).view(-1)[0] = float("inf")
    checkpoint.save(nan, root / "nan_weights.pt")
    torch.save({"x": Payload(), "y": y}, root / "evil.pt")
    os.link(root / "darcy.h5", root / "darcy_hardlink.h5")
    (root / "syntax.yaml").write_text("lr: [1, 2\nepochs: 3\n")


def _runs_that_cannot_be_resumed(root, x, y, state):
    """Copies of a run whose checkpoint has NaN weights or no options, and a run whose data changed."""
    for name, edited in (("nan_run", {**state, "model": {k: torch.full_like(v, float("nan")) if v.is_floating_point()
                                                         else v for k, v in state["model"].items()}}),
                         ("no_config_run", {k: v for k, v in state.items() if k != "config"})):
        shutil.copytree(root / "run", root / name)
        checkpoint.save(edited, root / name / "checkpoint.pt")
    torch.save({"x": x, "y": y}, root / "changing.pt")
    train(tiny_config(root, root / "changed_run", data_train=str(root / "changing.pt"), data_test=[], epochs=1),
          log=quiet)
    torch.save({"x": x.repeat(1, 2, 1, 1), "y": y}, root / "changing.pt")  # now two input channels


# (command line, with {d} for the folder of files; text the message must contain)
COMMANDS = [
    # generate
    ("generate heat --resolution 16 --n 2 --out {d}/out/g.h5", "invalid choice: 'heat'"),
    ("generate darcy --resolution 16 --n 0 --out {d}/out/g.h5", "n=0"),
    ("generate darcy --resolution 2 --n 2 --out {d}/out/g.h5", "resolution=2"),
    ("generate darcy --resolution 16 --n 2 --coarsen 5 --out {d}/out/g.h5", "coarsen=5"),
    ("generate darcy --resolution 16 --n 2 --out {d}/out/g.txt", "give a .h5 path"),
    ("generate darcy --resolution 16 --n 2 --out {d}/darcy.h5", "--overwrite"),
    ("generate darcy --resolution 16 --n 2 --out {d}/a_file/g.h5", "a_file"),
    ("generate darcy --resolution 16 --n 2 --set porosity=1 --out {d}/out/g.h5", "porosity"),
    ("generate darcy --resolution 100000 --n 2 --out {d}/out/g.h5", "needs at least"),
    ("generate shallow-water --resolution 30000 --n 1 --out {d}/out/g.h5", "lower --resolution or --batch-size"),
    ("generate heat\x1b[31m --resolution 16 --n 2 --out {d}/out/g.h5", "invalid choice: 'heat"),
    # train: options out of range or of the wrong kind
    ("train --data-train {d}/train.pt --epochs 0 --out {d}/out/r", "epochs=0"),
    ("train --data-train {d}/train.pt --batch-size -3 --out {d}/out/r", "batch_size=-3"),
    ("train --data-train {d}/train.pt --lr -1 --out {d}/out/r", "lr=-1"),
    ("train --data-train {d}/train.pt --grad-clip -1 --out {d}/out/r", "grad_clip=-1"),
    ("train --data-train {d}/train.pt --n-modes 0 --out {d}/out/r", "n_modes=0"),
    ("train --data-train {d}/train.pt --hidden-channels 0 --out {d}/out/r", "hidden_channels=0"),
    ("train --data-train {d}/train.pt --epochs ten --out {d}/out/r", "epochs='ten' is not a number"),
    ("train --data-train {d}/train.pt --precision quarter --out {d}/out/r", "mode='quarter'"),
    ("train --data-train {d}/train.pt --precision half:nan,full:1 --out {d}/out/r", "'nan' is not a positive"),
    ("train --data-train {d}/train.pt --precision half:-0.5,full:1.5 --out {d}/out/r", "'-0.5' is not a positive"),
    ("train --data-train {d}/train.pt --dtype float8 --out {d}/out/r", "dtype='float8'"),
    ("train --data-train {d}/train.pt --model unet --out {d}/out/r", "model='unet'"),
    ("train --data-train {d}/train.pt --factorization svd --out {d}/out/r", "factorization='svd'"),
    ("train --data-train {d}/train.pt --model tfno --rank 1.5 --out {d}/out/r", "rank=1.5"),
    ("train --data-train {d}/train.pt --test-fraction 1.5 --out {d}/out/r", "test_fraction=1.5"),
    ("train --data-train {d}/train.pt --spatial-dims 5 --out {d}/out/r", "spatial_dims=5"),
    ("train --data-train {d}/train.pt --domain-padding 2 --out {d}/out/r", "domain_padding=2"),
    ("train --data-train {d}/train.pt --seed -1 --out {d}/out/r", "seed=-1"),
    ("train --data-train {d}/train.pt --device cuda:7 --out {d}/out/r", "device='cuda:7'"),
    ("train --data-train {d}/train.pt --model sfno --precision auto --out {d}/out/r", "precision='auto' audits"),
    ("train --data-train {d}/train.pt --model sfno --n-modes 20 --out {d}/out/r", "lmax=20 is too fine"),
    ("train --data-train {d}/train.pt --n-modes 40 --out {d}/out/r", "fewer than the model's modes (40); lower --n-mo"),
    ("train --data-train {d}/train.pt --device meta --out {d}/out/r", "device='meta' is not supported"),
    ("train --data-train {d}/train.pt --device banana --out {d}/out/r", "device='banana' is not supported"),
    ("train --data-train {d}/train.pt --hidden-channels 200000 --out {d}/out/r", "needs at least"),
    ("train --data-train {d}/train.pt --n-modes 8 --n-layers 1 --hidden-channels 50000 --out {d}/out/r",
     "lower --hidden-channels"),
    ("train --data-train {d}/train.pt --model gino --out {d}/out/r",
     "train.pt is a data file of fields on a grid, but a data file of point clouds is expected here"),
    # train: data files
    ("train --data-train {d}/missing.h5 --out {d}/out/r", "missing.h5: no such file"),
    ("train --data-train {d}/truncated_darcy.h5 --out {d}/out/r", "truncated_darcy.h5: cannot be read"),
    ("train --data-train {d}/truncated_train.pt --out {d}/out/r", "truncated_train.pt: cannot be read"),
    ("train --data-train {d}/truncated_legacy.pt --out {d}/out/r", "truncated_legacy.pt: cannot be read"),
    ("train --data-train {d}/truncated_train.npz --out {d}/out/r", "truncated_train.npz: cannot be read"),
    ("train --data-train {d}/nan.pt --out {d}/out/r", "nan.pt: 'x' sample 2 holds NaN"),
    ("train --data-train {d}/train.pt --data-test {d}/nan.pt --n-modes 4 --out {d}/out/r", "nan.pt: 'x' sample 2"),
    ("train --data-train {d}/one_d.pt --out {d}/out/r", "--spatial-dims 1"),
    ("train --data-train {d}/train.pt --data-test {d}/two_channels.pt --n-modes 4 --out {d}/out/r",
     "two_channels.pt: samples of shape"),
    ("train --data-train {d}/complex.pt --out {d}/out/r", "complex.pt: 'x' holds complex numbers"),
    ("train --data-train {d}/complex.h5 --out {d}/out/r", "complex.h5: 'x' holds complex numbers"),
    ("train --data-train {d}/strings.h5 --out {d}/out/r", "strings.h5: 'x' holds text values, not numbers"),
    ("train --data-train {d}/scalar.h5 --out {d}/out/r", "scalar.h5: 'x' is a single value"),
    ("train --data-train {d}/evil.pt --out {d}/out/r", "evil.pt: holds Python objects other than tensors"),
    ("train --data-train {d}/nan_sizes.h5 --model gino --out {d}/out/r", "nan_sizes.h5: 'sizes' must hold"),
    ("train --data-train {d}/clouds.h5 --out {d}/out/r",
     "clouds.h5 is a data file of point clouds, but a data file of fields on a grid is expected here"),
    ("train --data-train {d}/run/best.pt --out {d}/out/r", "best.pt is an mpno checkpoint (a trained model), but"),
    ("train --data-train {d}/legendre.h5 --model sfno --grid equiangular --out {d}/out/r",
     "--grid equiangular conflicts with {d}/legendre.h5, which declares the legendre-gauss grid"),
    ("train --data-train {d}/healpix.h5 --model sfno --out {d}/out/r", "declares the grid 'healpix'"),
    ("train --data-train {d}/legendre.h5 --model sfno --eval-losses h1 --out {d}/out/r",
     "eval_losses=['h1'] does not apply to model='sfno'"),
    ("train --data-train {d}/clouds.h5 --model gino --loss mse --out {d}/out/r", "loss='mse' does not apply to model="),
    ("train --data-train {d}/darcy.h5 --model sfno --out {d}/out/r", "darcy.h5 holds darcy data, which mpno "
     "generates on the unit square or cube, not on the sphere"),
    ("evaluate {d}/sfno_run/best.pt --data-test {d}/darcy.h5", "darcy.h5 holds darcy data"),
    ("train --data-train {d}/legendre.h5 --data-test {d}/equi.h5 --model sfno --out {d}/out/r",
     "the data files declare different grids"),
    # train: run directories and config files
    ("train --data-train {d}/train.pt --out {d}/a_file", "a_file is a file"),
    ("train --data-train {d}/train.pt --out {d} --overwrite", "is not an mpno run directory"),
    ("train --data-train {d}/precious/data.pt --out {d}/precious --overwrite", "is not an mpno run directory"),
    ("train --data-train {d}/train.pt --out {d}/run", "--resume"),
    ("train --config {d}/bad_lr.yaml --out {d}/out/r", "bad_lr.yaml: lr='abc' is not a number"),
    ("train --config {d}/bogus.toml --out {d}/out/r", "bogus.toml: unknown option 'bogus'"),
    ("train --config {d}/modes_text.toml --out {d}/out/r", "n_modes='many' is not a number"),
    ("train --config {d}/missing.toml", "missing.toml: no such config file"),
    ("train --resume {d}/nowhere", "--resume {d}/nowhere: no such run directory"),
    ("train --resume {d}/precious", "precious/checkpoint.pt: no checkpoint there"),
    ("train --resume {d}/run --hidden-channels 8", "drop --hidden-channels"),
    ("train --resume {d}/run", "has finished its 1 epochs"),
    ("train --resume {d}/nan_run --epochs 2", "nan_run/checkpoint.pt: the weights hold NaN or inf"),
    ("train --resume {d}/no_config_run --epochs 2", "no_config_run/checkpoint.pt: lacks its run options"),
    ("train --resume {d}/changed_run --epochs 2", "changed_run: the data changed since the run was interrupted"),
    ("train --resume {d}/changed_run --epochs 2 --allow-changed-data", "changed_run: the data no longer match the run"),
    ("train --config {d}/syntax.yaml", "syntax.yaml: cannot parse (line 2, column 7: expected ','"),
    ("train --config {d}/\x1b[2Jmissing.yaml", "missing.yaml: no such config file"),
    # evaluate
    ("evaluate {d}/missing.pt --data-test {d}/train.pt", "missing.pt: no checkpoint there"),
    ("evaluate {d}/edited.pt --data-test {d}/train.pt", "edited.pt: the weights do not fit"),
    ("evaluate {d}/truncated_checkpoint.pt --data-test {d}/train.pt", "corrupt or truncated checkpoint"),
    ("evaluate {d}/not_a_checkpoint.pt --data-test {d}/train.pt", "not an mpno checkpoint"),
    ("evaluate {d}/run/best.pt --data-test {d}/train.pt --batch-size -3", "--batch-size -3"),
    ("evaluate {d}/run/best.pt --data-test {d}/two_channels.pt", "two_channels.pt: samples of shape"),
    ("evaluate {d}/run/best.pt --data-test {d}/train.pt --x-key u", "no key 'u'"),
    ("evaluate {d}/run/best.pt --data-test {d}/train.pt --x-key \x1b[31mu\x1b[0m", "no key 'u'"),
    ("evaluate {d}/nan_weights.pt --data-test {d}/train.pt", "nan_weights.pt: the weights hold NaN or inf"),
    ("evaluate {d}/evil.pt --data-test {d}/train.pt", "evil.pt: holds Python objects other than tensors"),
    ("evaluate {d}/legendre.h5 --data-test {d}/train.pt",
     "legendre.h5 is a data file of fields on the sphere, but a checkpoint"),
    ("evaluate {d}/run/best.pt --data-test {d}/clouds.h5",
     "clouds.h5 is a data file of point clouds, but a data file of fields on a grid is expected here"),
    ("evaluate {d}/run/best.pt --data-test {d}/run/checkpoint.pt", "checkpoint.pt is an mpno checkpoint"),
    ("evaluate {d}/sfno_run/best.pt --data-test {d}/equi.h5",
     "the model's grid legendre-gauss conflicts with {d}/equi.h5, which declares the equiangular grid"),
    ("evaluate {d}/run/best.pt --data-test {d}/train.pt --device meta", "device='meta' is not supported"),
    # predict
    ("predict {d}/run/best.pt {d}/train.pt --out {d}/out/p.txt", "give a .h5 path"),
    ("predict {d}/not_a_checkpoint.pt {d}/train.pt --out {d}/out/p.h5", "not an mpno checkpoint"),
    ("predict {d}/run/best.pt {d}/train.pt --out {d}/out/p.h5 --batch-size 0", "--batch-size 0"),
    ("predict {d}/run/best.pt {d}/truncated_train.pt --out {d}/out/p.h5", "cannot be read"),
    ("predict {d}/run/best.pt {d}/train.pt --out {d}/darcy.h5", "darcy.h5 already exists"),
    ("predict {d}/run/best.pt {d}/darcy.h5 --out {d}/darcy.h5 --overwrite", "is the input {d}/darcy.h5"),
    ("predict {d}/run/best.pt {d}/darcy.h5 --out {d}/darcy_hardlink.h5 --overwrite", "is the input"),
    ("predict {d}/train.pt {d}/run/best.pt --out {d}/out/p.h5", "the arguments are swapped"),
    ("predict {d}/darcy.h5 {d}/train.pt --out {d}/out/p.h5",
     "darcy.h5 is a data file of fields on a grid, but a checkpoint (checkpoint.pt or best.pt of a run)"),
    ("predict {d}/nan_weights.pt {d}/train.pt --out {d}/out/p.h5", "nan_weights.pt: the weights hold NaN"),
    ("predict {d}/run/best.pt {d}/complex.h5 --out {d}/out/p.h5", "complex.h5: 'x' holds complex numbers"),
    ("predict {d}/run/best.pt {d}/train.pt --out {d}/out/p.h5 --device xla", "device='xla' is not supported"),
    # bounds
    ("bounds {d}/train.pt --samples 0", "--samples 0"),
    ("bounds {d}/train.pt --modes 0", "--modes"),
    ("bounds {d}/tiny_grid.pt", "tiny_grid.pt: grid (2, 2)"),
    ("bounds {d}/missing.h5", "missing.h5: no such file"),
    ("bounds {d}/run/best.pt", "best.pt is an mpno checkpoint (a trained model), but a data file of fields"),
    ("bounds {d}/clouds.h5", "clouds.h5 is a data file of point clouds, but a data file of fields on a grid"),
    ("bounds {d}/train.pt --model {d}/nan_weights.pt", "nan_weights.pt: the weights hold NaN"),
    ("bounds {d}/legendre.h5 --checkpoint {d}/run/best.pt", "legendre.h5 holds fields on the sphere; mpno bounds audits "
     "Fourier coefficients on the cube"),
    ("bounds {d}/legendre.h5", "legendre.h5: the sphere's audit estimates the discretisation error on nested "
     "equiangular grids, and legendre-gauss grids do not nest"),
    ("bounds {d}/equi.h5", "equi.h5: an equiangular grid (8, 16) nests only with odd nlat and even nlon"),
    ("bounds {d}/darcy.h5 --checkpoint {d}/sfno_run/best.pt", "darcy.h5 holds darcy data, which mpno generates on the "
     "unit square or cube, not on the sphere"),
    # bench
    ("bench --preset huge", "--preset 'huge'"),
    ("bench --preset tiny --steps 0", "--steps"),
    ("bench --preset tiny --grid 32 32 32", "--resolution=[32, 32, 32]"),  # --grid: the old spelling
    ("bench --preset tiny --device meta", "device='meta' is not supported"),
]


@pytest.mark.parametrize("command, message", COMMANDS, ids=[c[0].split(" --out")[0][:60] for c in COMMANDS])
def test_a_bad_command_gets_one_clear_line(bad, command, message, capsys):
    before = snapshot(bad)
    argv = command.format(d=bad).split()
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message.format(d=bad) in the_error(err)  # one line,
    assert "Traceback" not in err
    assert "\x1b" not in err and "weights_only" not in err  # with no escape codes and no advice to unpickle
    assert snapshot(bad) == before


API = [
    (lambda: mpno.FNO(0, 1, (4, 4)), ValueError, "in_channels=0"),
    (lambda: mpno.FNO((16, 16), 1, 1), ValueError, "mpno's order is (in_channels, out_channels, n_modes, ...)"),
    (lambda: mpno.SFNO((8, 8), 1, 1), ValueError, "write SFNO(in_channels, out_channels, n_modes=(8, 8), ...)"),
    (lambda: setattr(mpno.TFNO(1, 1, (4, 4)), "n_modes", (2, 2)), AttributeError,
     "TFNO.n_modes is fixed when the model is built"),
    (lambda: setattr(mpno.SFNO(1, 1, (4, 4)).blocks[0].conv, "n_modes", (2, 2)), AttributeError,
     "SphericalConv.n_modes is fixed"),
    (lambda: mpno.FNO(1, 1, (4, 4))(torch.randn(2, 3, 8, 8)), ValueError, "expects 1 input channels"),
    (lambda: mpno.FNO(1, 1, (8, 8))(torch.randn(2, 1, 4, 8)), ValueError, "fewer than n_modes[0]=8"),
    (lambda: mpno.SpectralConv(2, 2, (4, 4), factorization="svd"), ValueError, "factorization='svd'"),
    (lambda: mpno.Precision(mode="quarter"), ValueError, "mode='quarter'"),
    (lambda: mpno.PrecisionSchedule.parse("half:abc"), ValueError, "'abc' is not a fraction"),
    (lambda: mpno.load_model("missing_checkpoint.pt"), checkpoint.CheckpointError, "no checkpoint there"),
    (lambda: mpno.UnitGaussianNormalizer.fit([]), ValueError, "no samples"),
    (lambda: mpno.data.OperatorDataset("missing_data.h5"), DataError, "no such file"),
]


@pytest.mark.parametrize("call, kind, message", API, ids=[m for _, _, m in API])
def test_bad_python_calls_raise_a_clear_error(call, kind, message):
    with pytest.raises(kind, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        call()


def test_sfno_trains_on_the_grid_its_data_file_declares(bad):
    state = checkpoint.load(bad / "sfno_run" / "checkpoint.pt")  # legendre.h5 declares legendre-gauss; no --grid
    assert state["operator"]["arguments"]["grid"] == "legendre-gauss" == state["config"]["grid"]
    assert json.loads((bad / "sfno_run" / "config.json").read_text())["grid"] == "legendre-gauss"


def test_load_model_refuses_weights_that_are_not_finite(bad):
    with pytest.raises(checkpoint.CheckpointError, match="nan_weights.pt: the weights hold NaN or inf"):
        mpno.load_model(bad / "nan_weights.pt")


def test_a_run_that_failed_before_it_started_can_be_rerun_without_overwrite(bad, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", "--data-train", str(bad / "nan.pt"), "--out", str(out)]) == 2
    capsys.readouterr()
    assert cli.main(["train", "--data-train", str(bad / "train.pt"), "--n-modes", "4", "--hidden-channels", "4",
                     "--n-layers", "1", "--epochs", "1", "--device", "cpu", "--out", str(out), "-q"]) == 0
    assert (out / "checkpoint.pt").exists()


def test_overwrite_removes_only_what_mpno_wrote(bad, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--data-train", str(bad / "train.pt"), "--n-modes", "4", "--hidden-channels", "4",
            "--n-layers", "1", "--epochs", "1", "--device", "cpu", "--out", str(out), "-q"]
    assert cli.main(args) == 0
    (out / "notes.txt").write_text("mine")
    assert cli.main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint.pt").exists()


def test_a_run_that_never_gets_a_finite_error_fails_with_advice(bad, tmp_path, capsys):
    out = tmp_path / "r"
    code = cli.main(["train", "--data-train", str(bad / "train.pt"), "--n-modes", "4", "--hidden-channels", "4",
                     "--n-layers", "1", "--epochs", "2", "--device", "cpu", "--precision", "half",
                     "--dtype", "bfloat16", "--lr", "1e6", "--nonfinite-patience", "1", "--out", str(out), "-q",
                     "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "lower the learning rate" in captured.err and "Traceback" not in captured.err
    assert not (out / "best.pt").exists() and "Infinity" not in captured.out
