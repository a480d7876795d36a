"""Checkpoints carry a digest of their contents: a flipped byte anywhere in their tensors is refused by every
reader, and checkpoints written before digests still load, with a note."""

import random
import shutil
import struct
import zipfile

import pytest
import torch

import mpno
from mpno.run import checkpoint, cli
from mpno.run.experiment import train
from reference import interrupted, quiet, tiny_config


def tensor_bytes(path) -> list[tuple[int, int]]:
    """``(first byte, size)`` in the file of every tensor's storage of a torch checkpoint (zip entries
    ``*/data/N``, stored uncompressed)."""
    spans = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                raw.seek(info.header_offset + 26)
                name_length, extra_length = struct.unpack("<HH", raw.read(4))
                spans.append((info.header_offset + 30 + name_length + extra_length, info.file_size))
    return spans


def flipped(path, position: int, out):
    shutil.copy(path, out)
    with open(out, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x10]))
    return out


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(tiny_config(files, out, epochs=1), log=quiet)
    return out


def test_a_byte_flipped_in_any_tensor_is_refused(run, tmp_path):
    best = run / "best.pt"
    spans = tensor_bytes(best)
    assert spans and checkpoint.load(best)["digest"]["sha256"] == checkpoint.digest(checkpoint.load(best))
    rng = random.Random(0)
    for i in range(20):
        start, size = rng.choice(spans)
        bad = flipped(best, start + rng.randrange(size), tmp_path / f"bad{i}.pt")
        with pytest.raises(checkpoint.CheckpointError, match="its contents changed after it was written"):
            checkpoint.load(bad)
        with pytest.raises(checkpoint.CheckpointError, match="its contents changed after it was written"):
            mpno.load_model(bad)


def test_every_command_refuses_an_altered_checkpoint(run, files, tmp_path, capsys):
    start, size = tensor_bytes(run / "best.pt")[0]
    bad = str(flipped(run / "best.pt", start + size // 2, tmp_path / "bad.pt"))
    data = str(files / "test16.pt")
    for argv in (["evaluate", bad, "--data", data], ["predict", bad, data, "--out", str(tmp_path / "p.h5")],
                 ["bounds", data, "--checkpoint", bad]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"mpno {argv[0]}: error: {bad}: its contents changed after it was written"), err
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    flipped(run / "checkpoint.pt", tensor_bytes(run / "checkpoint.pt")[0][0] + 3, resumed / "checkpoint.pt")
    assert cli.main(["train", "--resume", str(resumed), "--epochs", "2"]) == 2
    assert "its contents changed after it was written" in capsys.readouterr().err


def test_a_checkpoint_without_a_digest_loads_with_a_note(run, tmp_path, capsys):
    state = checkpoint.load(run / "best.pt")
    del state["digest"]
    torch.save(state, tmp_path / "old.pt")  # as an mpno before digests wrote it
    capsys.readouterr()
    model = mpno.load_model(tmp_path / "old.pt")
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert "old.pt: written by an mpno that recorded no digest; its contents are not verified" in \
        capsys.readouterr().err


def _interrupted_run(files, tmp_path, monkeypatch):
    """A run on copies of the tiny files, killed after its first epoch: (its directory, its training file)."""
    data = tmp_path / "data"
    shutil.copytree(files, data)
    interrupted(tiny_config(data, tmp_path / "run", epochs=2), 1, monkeypatch)
    return tmp_path / "run", data / "train.pt"


@pytest.mark.parametrize("change", ["replace", "truncate", "append"])
def test_resume_refuses_changed_training_data_unless_allowed(files, tmp_path, monkeypatch, change):
    import hashlib
    import json

    from mpno.data import DataError
    from mpno.run.config import RunConfig
    from reference import smooth_pairs

    run_dir, train_file = _interrupted_run(files, tmp_path, monkeypatch)
    recorded = json.loads((run_dir / "config.json").read_text())["data_files"]
    assert recorded[0]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert recorded[0]["size"] == train_file.stat().st_size and len(recorded) == 3
    content = train_file.read_bytes()
    if change == "replace":
        x, y = smooth_pairs(24, 16, seed=7)
        torch.save({"x": x, "y": y}, train_file)
    elif change == "truncate":
        train_file.write_bytes(content[:-100])
    else:
        train_file.write_bytes(content + b"\0" * 10)
    with pytest.raises(DataError, match=rf"the data changed since the run was interrupted \({train_file.resolve()}: "):
        train(RunConfig(device="cpu"), resume=str(run_dir), log=quiet)
    if change == "replace":  # the other changes leave a file that cannot be trained on
        summary = train(RunConfig(device="cpu"), resume=str(run_dir), log=quiet, allow_changed_data=True)
        assert summary["resumed_with_changed_data"] and summary["epochs"] == 2
        events = json.loads((run_dir / "config.json").read_text())["resumed_with_changed_data"]
        assert events[0]["epoch"] == 1 and "contents differ" in events[0]["changes"][0]


def test_an_untouched_file_resumes_whatever_its_modification_time(files, tmp_path, monkeypatch):
    import os

    from mpno.run.config import RunConfig

    run_dir, train_file = _interrupted_run(files, tmp_path, monkeypatch)
    os.utime(train_file, (1, 1))  # touched, not changed
    assert train(RunConfig(device="cpu"), resume=str(run_dir), log=quiet)["resumed_with_changed_data"] == []


def test_a_read_only_home_is_named_read_only_not_full(tmp_path):
    """The default example on a HOME mounted read-only, no cache set: the message says read-only."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(home)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        env = {key: value for key, value in os.environ.items() if key != "MPNO_CACHE"}
        done = subprocess.run([sys.executable, "-m", "mpno", "train", "--out", str(tmp_path / "run")],
                              env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2
        error = done.stderr.strip().splitlines()[-1]
        assert f"cannot be written: {home} is on a read-only file system" in error and "no space" not in error
    finally:
        subprocess.run(["umount", str(home)], check=True)


def test_every_result_says_what_produced_it(run, files, tmp_path, capsys):
    import hashlib
    import json

    import h5py

    best, data = str(run / "best.pt"), str(files / "test16.pt")
    sha = hashlib.sha256(open(best, "rb").read()).hexdigest()
    data_sha = hashlib.sha256(open(data, "rb").read()).hexdigest()
    for argv in (["evaluate", best, "--data", data, "--json"],
                 ["predict", best, data, "--out", str(tmp_path / "p.h5"), "--json"],
                 ["bounds", data, "--checkpoint", best, "--json"]):
        assert cli.main(argv) == 0
        produced = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["provenance"]
        assert produced["mpno"] == mpno.__version__ and produced["torch"] == torch.__version__
        assert produced["device"] == "cpu" and produced["precision"].startswith("mixed")
        assert produced["checkpoint"]["sha256"] == sha and produced["data_files"][0]["sha256"] == data_sha
    with h5py.File(tmp_path / "p.h5") as f:
        assert json.loads(f.attrs["provenance"])["checkpoint"]["sha256"] == sha


def test_inputs_outside_the_training_data_are_reported_or_refused(tmp_path, capsys):
    import json

    import h5py

    from mpno.data import generate

    generate("potential-flow", tmp_path / "p.h5", n=12, points=64, progress=False)
    assert cli.main(["train", "--model", "gino", "--data-train", str(tmp_path / "p.h5"), "--n-modes", "4",
                     "--latent-grid", "6", "--radius", "0.5", "--hidden-channels", "4", "--n-layers", "1",
                     "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "g"), "-q"]) == 0
    shutil.copy(tmp_path / "p.h5", tmp_path / "big.h5")
    with h5py.File(tmp_path / "big.h5", "r+") as f:
        f["points"][...] = 10 * f["points"][...]  # clouds ten times larger than any training cloud
    best, big = str(tmp_path / "g" / "best.pt"), str(tmp_path / "big.h5")
    capsys.readouterr()
    assert cli.main(["predict", best, big, "--out", str(tmp_path / "b.h5"), "--json"]) == 0
    captured = capsys.readouterr()
    said = json.loads(captured.out.strip().splitlines()[-1])["outside_training"]["big.h5"]
    assert "lie outside the box the model's position map was fitted on" in said and f"{big}: {said}" in captured.err
    assert cli.main(["evaluate", best, "--data", big, "--strict"]) == 2
    assert "refused (--strict)" in capsys.readouterr().err
    assert cli.main(["evaluate", best, "--data", str(tmp_path / "p.h5"), "--strict", "--json"]) == 0  # its own data
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["outside_training"] == {}


def test_grid_inputs_far_outside_the_training_range_are_reported(run, files, tmp_path, capsys):
    import json

    data = torch.load(files / "test16.pt")
    torch.save({"x": 1000 * data["x"], "y": data["y"]}, tmp_path / "loud.pt")
    assert cli.main(["evaluate", str(run / "best.pt"), "--data", str(tmp_path / "loud.pt"), "--json"]) == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["outside_training"]["loud.pt"]
    assert said.startswith("inputs beyond 10 standard deviations of the training inputs (channel 0 up to ")


def test_a_generated_file_whose_array_changed_is_refused(run, tmp_path, capsys):
    import h5py

    from mpno.data import DataError, generate
    from mpno.data.files import verify_arrays

    path = generate("darcy", tmp_path / "d.h5", n=8, resolution=16, progress=False)[0]
    assert verify_arrays(path) == ["x", "y"]
    with h5py.File(path, "r+") as f:
        f["y"][3, 0, 5, 5] += 1e-3  # one value, after mpno wrote the file
    with pytest.raises(DataError, match="d.h5: the values of 'y' changed after mpno wrote the file"):
        verify_arrays(path)
    for argv in (["train", "--data-train", str(path), "--out", str(tmp_path / "r")],
                 ["evaluate", str(run / "best.pt"), "--data", str(path)]):
        assert cli.main(argv) == 2
        assert "d.h5: the values of 'y' changed after mpno wrote the file" in capsys.readouterr().err
