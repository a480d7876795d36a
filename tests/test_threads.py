"""``--threads``: every command sets torch's CPU threads, and says when fewer cores are free than it uses."""

import json
import os

import pytest
import torch

from mpno.run import cli, threads
from reference import quiet, tiny_config


@pytest.fixture
def restore_threads():
    count = torch.get_num_threads()
    yield
    torch.set_num_threads(count)


def busy(monkeypatch, cores: int, load: float) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


def test_a_busy_machine_gets_one_line_suggesting_threads(monkeypatch, restore_threads):
    busy(monkeypatch, cores=8, load=6.5)
    lines = []
    assert threads.use_threads(4, lines.append) == 4 == torch.get_num_threads()
    assert lines == ["torch computes with 4 threads, but only about 1.5 of this machine's 8 cores are free "
                     "(load average 6.5): --threads 2 may run much faster"]
    lines.clear()
    assert threads.use_threads(2, lines.append) == 2 and lines == []  # as many as are free
    busy(monkeypatch, cores=2, load=0.3)
    assert threads.use_threads(2, lines.append) == 2 and lines == []  # a little load is no reason
    busy(monkeypatch, cores=2, load=3.0)
    assert threads.use_threads(1, lines.append) == 1 and lines == []  # no fewer than one to suggest
    busy(monkeypatch, cores=2, load=5.0)
    assert threads.use_threads(2, lines.append, device_type="cuda") == 2 and lines == []  # CPU threads matter less
    with pytest.raises(ValueError, match="--threads 0: give a positive int"):
        threads.use_threads(0, lines.append)


def test_threads_from_the_command_line_and_the_run_config(files, tmp_path, monkeypatch, capsys, restore_threads):
    busy(monkeypatch, cores=4, load=3.5)
    out = tmp_path / "run"
    assert cli.main(["train", "--data-train", str(files / "train.pt"), "--n-modes", "4", "--hidden-channels", "4",
                     "--n-layers", "1", "--epochs", "1", "--device", "cpu", "--out", str(out), "-q",
                     "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2
    assert "torch computes with 2 threads, but only about 0.5 of this machine's 4 cores" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["threads"] == 2
    torch.set_num_threads(3)
    config = tiny_config(files, tmp_path / "lib", epochs=1)  # threads unset: torch's count, recorded
    from mpno.run.experiment import train

    train(config, log=quiet)
    assert json.loads((tmp_path / "lib" / "config.json").read_text())["threads"] == 3
    for command in (["evaluate", str(out / "best.pt"), "--data", str(files / "test16.pt")],
                    ["predict", str(out / "best.pt"), str(files / "test16.pt"), "--out", str(tmp_path / "p.h5"), "-q"],
                    ["generate", "burgers", "--resolution", "16", "--n", "2", "--out", str(tmp_path / "b.h5")]):
        torch.set_num_threads(2)
        assert cli.main([*command, "--threads", "1"]) == 0, command
        assert torch.get_num_threads() == 1
        assert "--threads" not in capsys.readouterr().err  # one thread: no fewer to suggest
    assert cli.build_parser().parse_args(["bench", "--threads", "3"]).threads == 3  # mpno bench sets it alike
