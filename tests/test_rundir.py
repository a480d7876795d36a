"""Run directories with real processes: one process per run, and nothing lost to ``kill -9``."""

import csv
import signal
import subprocess
import sys

import pytest

from mpno.run import cli, rundir
from reference import TINY, training_process

KILLED_AFTER_SECOND_CHECKPOINT = """
import os, signal, sys
from mpno.run import checkpoint, cli
save, saved = checkpoint.save, []
def save_then_die(state, path):
    save(state, path)
    saved.append(path.name)
    if saved.count("checkpoint.pt") == 2:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
sys.exit(cli.main(sys.argv[1:]))
"""


def metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_a_second_process_is_refused_while_a_run_holds_its_directory(files, tmp_path):
    run = tmp_path / "run"
    first = training_process(files, run)
    try:
        for second in (["--resume", str(run)], ["--data-train", str(files / "train.pt"), "--out", str(run),
                                                 "--overwrite"]):
            done = subprocess.run([sys.executable, "-m", "mpno", "train", *second], capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 2
            assert f"is in use by a running mpno process (pid {first.pid})" in done.stderr
            assert "Traceback" not in done.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    rundir.RunLock(run).acquire().release()  # the kernel released the killed process's lock


def test_kill_9_right_after_a_checkpoint_loses_nothing(files, tmp_path, capsys):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["train", "--data-train", str(files / "train.pt"), *TINY, "--epochs", "4", "--precision", "schedule"]
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_SECOND_CHECKPOINT, *args, "--out", str(killed)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [row["epoch"] for row in metrics(killed)] == ["1", "2"]
    (killed / ".checkpoint.pt.12345.tmp").write_bytes(b"half a checkpoint")  # what a killed write leaves
    assert cli.main(["train", "--resume", str(killed)]) == 0
    assert cli.main([*args, "--out", str(whole)]) == 0
    capsys.readouterr()
    assert not list(killed.glob(".*.tmp"))
    assert metrics(killed) == metrics(whole)  # every epoch once, with the uninterrupted run's numbers
    assert len(metrics(killed)) == 4


@pytest.mark.parametrize("out", [".", "precious"])
def test_overwrite_never_touches_a_directory_mpno_did_not_make(files, tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "train.pt").write_bytes((files / "train.pt").read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main(["train", "--data-train", "precious/train.pt", "--out", out, "--overwrite"]) == 2
    assert "is not an mpno run directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
