"""Data-parallel training: two CPU processes (gloo) reproduce one process with the same global batch."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mpno.run import checkpoint, distributed
from reference import bandlimited


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    for name, n, seed in (("train.pt", 24, 1), ("test.pt", 6, 2)):
        x = bandlimited(n, 1, (16, 16), kmax=3, seed=seed).float()
        torch.save({"x": x, "y": torch.roll(x, 3, -1) + 0.1 * x**2}, root / name)
    return root


def train_command(files, out, batch, *extra, processes=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    return launcher + ["-m", "mpno", "train", "--data-train", str(files / "train.pt"), "--data-test",
                       str(files / "test.pt"), "--modes", "4", "--width", "6", "--layers", "2", "--epochs", "2",
                       "--device", "cpu", "--batch-size", str(batch), "--out", str(out), "--json", *extra]


def run(command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_two_processes_reproduce_one_with_the_same_global_batch(files, tmp_path):
    run(train_command(files, tmp_path / "one", 8, "--precision", "full"), tmp_path)
    two = run(train_command(files, tmp_path / "two", 4, "--precision", "full", processes=2), tmp_path)
    a = checkpoint.load(tmp_path / "one" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "two" / "checkpoint.pt")["model"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    summary = json.loads(two.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 8
    assert two.stdout.count('"test"') == 1  # only process 0 reported
    # Only process 0 wrote files: the same files as the single process, nothing else anywhere.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_a_gino_trains_in_two_processes_as_in_one(tmp_path):
    """Point clouds: each process takes its share of every global batch (neighbourhoods searched per cloud)."""
    from mpno.data import generate

    for name, n, seed in (("clouds.h5", 16, 0), ("test.h5", 4, 1)):
        generate("potential-flow", tmp_path / name, n=n, points=64, seed=seed, progress=False)

    def command(out, batch, processes=1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
            if processes > 1 else [sys.executable]
        return launcher + ["-m", "mpno", "train", "--model", "gino", "--data-train", str(tmp_path / "clouds.h5"),
                           "--data-test", str(tmp_path / "test.h5"), "--n-modes", "4", "--latent-grid", "6",
                           "--radius", "0.5", "--hidden-channels", "4", "--n-layers", "1", "--epochs", "2",
                           "--precision", "full", "--device", "cpu", "--batch-size", str(batch), "--out", str(out),
                           "--json"]

    one = run(command(tmp_path / "one", 8), tmp_path)
    two = run(command(tmp_path / "two", 4, processes=2), tmp_path)
    a = checkpoint.load(tmp_path / "one" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "two" / "checkpoint.pt")["model"]
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) < 1e-5
    summaries = [json.loads(done.stdout.strip().splitlines()[-1]) for done in (one, two)]
    assert summaries[1]["world_size"] == 2 and summaries[1]["global_batch_size"] == 8
    assert summaries[1]["test"]["test.h5"]["l2"] == pytest.approx(summaries[0]["test"]["test.h5"]["l2"], rel=1e-5)


def test_half_precision_two_processes_stay_within_rounding_of_one(files, tmp_path):
    """Same per-sample loss weights, summed gradients: the loss scaler takes the same decisions;
    only the order of float32 sums and the half rounding of partial weight gradients differ."""
    run(train_command(files, tmp_path / "one", 8, "--precision", "half"), tmp_path)
    run(train_command(files, tmp_path / "two", 4, "--precision", "half", processes=2), tmp_path)
    one = checkpoint.load(tmp_path / "one" / "checkpoint.pt")
    two = checkpoint.load(tmp_path / "two" / "checkpoint.pt")
    assert one["scaler"]["scale"] == two["scaler"]["scale"]
    difference = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    assert difference < 1e-3


def _escalation_worker(rank, world, store, root, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(__file__))
    from test_training import _trainer

    trainer = _trainer(root, out, precision="half", epochs=2, nonfinite_patience=2, batch_size=4,
                       data_train=str(root / "train.pt"), data_test=[str(root / "test.pt")])
    trainer.run_dir = out
    if rank == 1:  # a non-finite loss on one process only
        real = trainer.loss
        trainer.loss = lambda p, y: real(p, y) * (math.nan if trainer.model.precision.mode == "half" else 1.0)
    trainer.fit()
    (out / f"history_{rank}.json").write_text(json.dumps(trainer.history))
    dist.destroy_process_group()


def test_a_nonfinite_loss_on_one_process_escalates_every_process(files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mp.start_processes(_escalation_worker, args=(2, tmp_path / "store", files, out), nprocs=2,
                       start_method="spawn")
    histories = [json.loads((out / f"history_{r}.json").read_text()) for r in range(2)]
    assert histories[0] == histories[1]
    escalation = histories[0][1]
    assert escalation["policy"]["mode"] == "mixed" and (escalation["epoch"], escalation["step"]) == (1, 1)
    state = checkpoint.load(out / "checkpoint.pt")
    assert checkpoint.all_finite(state["model"]) and state["floor"] == "mixed"


def test_one_process_needs_no_process_group():
    assert distributed.current() == distributed.SINGLE_PROCESS
    assert distributed.everywhere_true(False, torch.device("cpu")) is False
    assert distributed.sum_everywhere([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
    shares = distributed.rank_batches(10, 4, None, distributed.Context(1, 2, 1))
    assert [(index.tolist(), total) for index, total in shares] == [([4, 5, 6, 7], 8), ([9], 2)]


def test_an_unrolled_forecaster_trains_in_two_processes_as_in_one(tmp_path):
    """Trajectories: windows of two targets, the loss unrolled over them, each process its share."""
    from mpno.data import generate

    generate("burgers", tmp_path / "t.h5", n=8, resolution=32, steps=5, interval=0.1, progress=False)

    def command(out, batch, processes=1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
            if processes > 1 else [sys.executable]
        return launcher + ["-m", "mpno", "train", "--data-train", str(tmp_path / "t.h5"), "--unroll", "2",
                           "--history", "2", "--n-modes", "6", "--hidden-channels", "4", "--n-layers", "1",
                           "--epochs", "2", "--precision", "full", "--device", "cpu", "--batch-size", str(batch),
                           "--out", str(out), "--json"]

    run(command(tmp_path / "one", 4), tmp_path)
    two = run(command(tmp_path / "two", 2, processes=2), tmp_path)
    a = checkpoint.load(tmp_path / "one" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "two" / "checkpoint.pt")["model"]
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) < 1e-5
    assert json.loads(two.stdout.strip().splitlines()[-1])["global_batch_size"] == 4
