"""A run directory cannot be turned against its user, no command loses data, and Ctrl-C or a full disk leave
nothing half-written: links planted at every name mpno writes, outputs that are inputs, killed writers,
SIGINT, and writes that fail for want of space."""

import builtins
import dataclasses
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mpno
from mpno import writing
from mpno.data import GENERATORS, darcy
from mpno.nn.normalized import NormalizedOperator
from mpno.run import checkpoint, cli, guard, rundir
from mpno.run.config import RunConfig
from mpno.run.experiment import train
from mpno.run.plots import plot_curves
from mpno.run.reporting import MetricsLog
from reference import TINY, quiet, the_error, tiny_config, training_process

#: Every name mpno writes in a run directory (TensorBoard's is a directory).
RUN_NAMES = (".lock", rundir.MARKER, "config.json", "metrics.csv", "summary.json", "checkpoint.pt", "best.pt",
             "curves.png", "samples_test16.png", "tensorboard")


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    """A finished one-epoch run on the tiny files (``--resume RUN --epochs 2`` extends it)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    train(tiny_config(files, out, data_test=[str(files / "test16.pt")], epochs=1), log=quiet)
    return out


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def plant(link: Path, outside: Path) -> tuple[Path, str]:
    """A link at ``link`` to a precious file (or, for ``tensorboard``, a directory holding one) outside;
    returns the precious file and its hash."""
    outside.mkdir(exist_ok=True)
    target = outside / f"precious_{link.name.strip('.')}"
    if link.name == "tensorboard":
        target.mkdir(exist_ok=True)
        (target / "notes.txt").write_text("mine")
        watched = target / "notes.txt"
    else:
        target.write_bytes(b"precious bytes " + link.name.encode())
        watched = target
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)
    return watched, digest(watched)


def untouched(watched: Path, before: str, outside: Path) -> bool:
    """The precious file is as it was, and nothing was added beside it."""
    extra = [p for p in outside.rglob("*") if p.is_file() and not p.name.startswith(("precious", "notes"))]
    return digest(watched) == before and not extra


def main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


# -- links ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RUN_NAMES)
def test_resuming_a_run_with_a_link_at_any_of_its_names_is_refused(run, tmp_path, capsys, name):
    copy = tmp_path / "given"
    shutil.copytree(run, copy, symlinks=True)
    watched, before = plant(copy / name, tmp_path / "outside")
    code, err = main(["train", "--resume", copy, "--epochs", "2"], capsys)
    assert code == 2 and "is a symbolic link" in the_error(err) and name in the_error(err)
    assert "Traceback" not in err
    assert untouched(watched, before, tmp_path / "outside")


def test_overwriting_a_run_replaces_links_and_never_writes_their_targets(run, files, tmp_path, capsys):
    copy = tmp_path / "given"
    shutil.copytree(run, copy, symlinks=True)
    planted = {name: plant(copy / name, tmp_path / "outside") for name in RUN_NAMES
               if name not in (".lock", rundir.MARKER)}  # those two refuse the directory: the next test
    code, err = main(["train", "--data-train", files / "train.pt", "--data-test", files / "test16.pt", *TINY,
                      "--epochs", "1", "--tensorboard", "--out", copy, "--overwrite"], capsys)
    assert code == 0, err
    for name, (watched, before) in planted.items():
        assert untouched(watched, before, tmp_path / "outside"), name
        assert not (copy / name).is_symlink()
    assert mpno.load_model(copy / "checkpoint.pt") is not None


@pytest.mark.parametrize("name, kind", [(".lock", "symlink"), (".lock", "hard link"), (rundir.MARKER, "symlink")])
def test_a_run_directory_with_a_planted_lock_or_marker_is_refused(run, files, tmp_path, capsys, name, kind):
    copy, precious = tmp_path / "given", tmp_path / "precious.txt"
    shutil.copytree(run, copy, symlinks=True)
    precious.write_text("do not truncate me")
    (copy / name).unlink()
    (copy / name).symlink_to(precious) if kind == "symlink" else os.link(precious, copy / name)
    code, err = main(["train", "--data-train", files / "train.pt", *TINY, "--epochs", "1", "--out", copy,
                      "--overwrite"], capsys)
    assert code == 2 and (name in the_error(err) or "not an mpno run directory" in the_error(err))
    assert precious.read_text() == "do not truncate me"


def _writers(tmp_path: Path):
    """Every writer of mpno, each writing the file ``name`` in ``tmp_path``."""
    state = {"model": {"w": torch.ones(2)}, "operator": {}}
    rows = [{"epoch": "1", "train_loss": "0.5", "precision": "full"}]

    def metrics(path):
        MetricsLog(path.parent, tensorboard=False).append(rows[0])

    def hdf5(path):
        with writing.new_hdf5(path) as output:
            output.file["x"] = np.zeros(3)

    return {
        "checkpoint.pt": lambda path: checkpoint.save(state, path),
        "config.json": lambda path: RunConfig().save(path),
        "summary.json": lambda path: writing.write_text(path, "{}"),
        "metrics.csv": metrics,
        "curves.png": lambda path: plot_curves(rows, path),
        "baseline.json": lambda path: guard.save_baseline({"preset": "tiny"}, path),
        "data.h5": hdf5,
    }


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json", "summary.json", "metrics.csv", "curves.png",
                                  "baseline.json", "data.h5"])
def test_every_writer_refuses_a_link_and_never_follows_one_at_its_temporary_name(tmp_path, name):
    write = _writers(tmp_path)[name]
    watched, before = plant(tmp_path / name, tmp_path / "outside")
    with pytest.raises(writing.LinkError, match="is a symbolic link"):
        write(tmp_path / name)
    assert untouched(watched, before, tmp_path / "outside")
    (tmp_path / name).unlink()
    temporary = writing.temporary_path(tmp_path / name)  # where the content goes first
    watched, before = plant(temporary, tmp_path / "outside")
    write(tmp_path / name)
    assert untouched(watched, before, tmp_path / "outside")
    assert (tmp_path / name).is_file() and not (tmp_path / name).is_symlink()


OUTPUTS = [
    "generate darcy --resolution 8 --n 2 --out {link} --overwrite",
    "generate darcy --resolution 8 --n 2 --coarsen 4 --out {d}/g.h5 --overwrite",  # {link} is g_4.h5
    "generate potential-flow --n 1 --points 8 --out {link} --overwrite",
    "predict {run}/best.pt {files}/test16.pt --out {link} --overwrite",
    "bounds {files}/test16.pt --plot {link}",
]


@pytest.mark.parametrize("command", OUTPUTS, ids=[c.split(" --")[0] for c in OUTPUTS])
def test_outputs_of_generate_predict_and_bounds_are_never_written_through_a_link(run, files, tmp_path, capsys,
                                                                                 command):
    link = tmp_path / ("g_4.h5" if "coarsen" in command else "out.png" if "--plot" in command else "out.h5")
    watched, before = plant(link, tmp_path / "outside")
    argv = command.format(link=link, d=tmp_path, run=run, files=files).split()
    code, err = main(argv, capsys)
    assert code == 2 and f"{link} is a symbolic link" in the_error(err)
    assert untouched(watched, before, tmp_path / "outside")
    assert not list(tmp_path.glob(".*.tmp"))


# -- data loss ------------------------------------------------------------------------------------------

def test_predict_replaces_an_existing_output_only_when_asked(run, files, tmp_path, capsys):
    out = tmp_path / "p.h5"
    out.write_bytes(b"earlier predictions")
    code, err = main(["predict", run / "best.pt", files / "test16.pt", "--out", out], capsys)
    assert code == 2 and "already exists" in the_error(err) and "--overwrite" in the_error(err)
    assert out.read_bytes() == b"earlier predictions"
    code, err = main(["predict", run / "best.pt", files / "test16.pt", "--out", out, "--overwrite", "-q"], capsys)
    assert code == 0, err
    with h5py.File(out) as f:
        assert f["prediction"].shape == (8, 1, 16, 16)


def test_generate_removes_what_killed_writers_left_and_keeps_what_live_ones_write(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".g.h5.{int(dead.stdout)}.tmp"  # a generate killed with -9 leaves this behind
    busy = tmp_path / f".g.h5.{os.getppid()}.tmp"  # another process still writing
    other = tmp_path / f".notes.h5.{int(dead.stdout)}.tmp"  # not ours to judge
    for file in (orphan, busy, other):
        file.write_bytes(b"half a file")
    code, err = main(["generate", "darcy", "--resolution", "8", "--n", "2", "--out", tmp_path / "g.h5"], capsys)
    assert code == 0, err
    assert not orphan.exists() and busy.exists() and other.exists()
    assert (tmp_path / "g.h5").is_file()


# -- Ctrl-C -------------------------------------------------------------------------------------------------

def test_ctrl_c_stops_training_with_one_line_saying_how_to_resume(files, tmp_path, capsys):
    out = tmp_path / "run"
    process = training_process(files, out)
    try:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert the_error(err) == (f"mpno train: interrupted; {out} keeps its last completed epoch; continue with: "
                              f"mpno train --resume {out}")
    assert not list(out.glob(".*.tmp"))
    done = checkpoint.load(out / "checkpoint.pt")["epoch"]
    assert main(["train", "--resume", out, "--epochs", done + 1], capsys)[0] == 0
    assert len((out / "metrics.csv").read_text().splitlines()) == done + 2  # header, each epoch once


def _interrupted_on_second_call(original):
    """``original``, sending this process a real SIGINT from its second call."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    return interrupted


@pytest.mark.parametrize("command", ["generate", "predict"])
def test_ctrl_c_in_generate_or_predict_leaves_no_partial_file(run, files, tmp_path, capsys, monkeypatch, command):
    out = tmp_path / "out.h5"
    if command == "generate":
        solve = _interrupted_on_second_call(darcy.generate_batch)
        monkeypatch.setitem(GENERATORS, "darcy", dataclasses.replace(darcy.GENERATOR, solve=solve))
        argv = ["generate", "darcy", "--resolution", "8", "--n", "6", "--batch-size", "2", "--out", out]
    else:
        monkeypatch.setattr(NormalizedOperator, "forward", _interrupted_on_second_call(NormalizedOperator.forward))
        argv = ["predict", run / "best.pt", files / "test16.pt", "--batch-size", "2", "-q", "--out", out]
    code, err = main(argv, capsys)
    assert code == 130 and the_error(err) == f"mpno {command}: interrupted; no partial file was left behind"
    assert list(tmp_path.iterdir()) == []


# -- a full disk --------------------------------------------------------------------------------------------

class FullDisk:
    """A file on a device that fills up after ``room`` bytes."""

    room = 4096

    def __init__(self, file):
        self.file, self.written = file, 0

    def write(self, data):
        self.written += len(data)
        if self.written > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def full_disk(monkeypatch):
    """Every file mpno writes (opened from a descriptor by :mod:`mpno.writing`) is on a full device."""
    def opened(file, *args, **kwargs):
        opened_file = builtins.open(file, *args, **kwargs)
        return FullDisk(opened_file) if isinstance(file, int) else opened_file

    monkeypatch.setattr(writing, "open", opened, raising=False)


DISK_FULL = [
    ("train --data-train {files}/train.pt " + " ".join(TINY) + " --epochs 1 --out {d}/run", "best.pt"),
    ("generate darcy --resolution 16 --n 4 --out {d}/g.h5", "g.h5"),
    ("generate potential-flow --n 4 --points 64 --out {d}/g.h5", "g.h5"),
    ("predict {run}/best.pt {files}/test16.pt -q --out {d}/p.h5", "p.h5"),
]


@pytest.mark.parametrize("command, file", DISK_FULL, ids=[c[0].split(" --")[0] for c in DISK_FULL])
def test_a_full_disk_is_named_and_leaves_no_partial_file(run, files, tmp_path, capsys, monkeypatch, command, file):
    full_disk(monkeypatch)
    code, err = main(command.format(files=files, run=run, d=tmp_path).split(), capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{file}: no space left on " in the_error(err)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name == file]
    assert leftovers == []


def test_hdf5_on_a_really_full_device_fails_cleanly_without_crashing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:  # the up-front space check is bypassed, to reach the device's own ENOSPC inside HDF5
        script = ("import sys; from mpno.data import generate; from mpno.run import cli; "
                  "generate.require_space = lambda *a: None; sys.exit(cli.main(sys.argv[1:]))")
        done = subprocess.run([sys.executable, "-c", script, "generate", "darcy", "--resolution", "32", "--n", "64",
                               "--out", str(disk / "g.h5")], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr  # not -11: HDF5 is never left to crash at exit
        assert "g.h5: no space left on tmpfs" in the_error(done.stderr)
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_hdf5_output_reports_the_failed_write_when_checked(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(writing.NoSpaceError, match="no space left on"):
        with writing.new_hdf5(tmp_path / "big.h5") as output:
            output.file["x"] = np.zeros(10_000)
            output.file.flush()
            output.check()
    assert list(tmp_path.iterdir()) == []
