"""The trainer and the train/evaluate commands, on tiny data."""

import json
import math

import pytest
import torch

from mpno import NormalizedOperator, UnitGaussianNormalizer
from mpno.data import DataError
from mpno.precision import Precision, PrecisionSchedule
from mpno.run import checkpoint, cli, profiling
from mpno.run.config import RunConfig
from mpno.bounds import choose_precision
from mpno.run.assembly import model_for, operator_for
from mpno.run.evaluation import evaluate_checkpoint
from mpno.run.experiment import train, trainer_for
from mpno.run.resolve import open_run
from mpno.precision import UNIT_ROUNDOFF
from mpno.run.trainer import SWITCH_WARNING
from reference import interrupted, quiet, smooth_pairs, tiny_config


def test_schedule_switches_at_the_right_epochs(files, tmp_path):
    summary = train(tiny_config(files, tmp_path / "run", precision="schedule"), log=quiet)
    modes = [(h["epoch"], h["policy"]["mode"]) for h in summary["precision_history"]]
    assert modes == [(1, "half"), (2, "mixed"), (4, "full")]  # 25% / 50% / 25% of 4 epochs
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[1].split("/")[0] for r in rows[1:]] == ["half", "mixed", "mixed", "full"]
    assert PrecisionSchedule.parse("schedule").starts(8) == [0, 2, 6]


def test_run_directory_holds_everything(files, tmp_path):
    summary = train(tiny_config(files, tmp_path / "run", epochs=2), log=quiet)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "curves.png",
            "samples_test16.png", "samples_test32.png"} <= names
    assert set(summary["test"]) == {"test16.pt", "test32.pt"}
    assert all(set(v) == {"l2", "h1"} and all(math.isfinite(x) for x in v.values()) for v in summary["test"].values())
    assert summary["grids"] == {"test16.pt": [16, 16], "test32.pt": [32, 32]}


def _trainer(files, tmp_path, **overrides):
    config = tiny_config(files, tmp_path, **overrides)
    run = open_run(config.validate(), quiet)
    train_set = run.train
    torch.manual_seed(0)
    operator = operator_for(config, 1, 1, (4, 4))
    model = NormalizedOperator(operator, UnitGaussianNormalizer.fit(x for x, _ in train_set),
                               UnitGaussianNormalizer.fit(y for _, y in train_set))
    return trainer_for(run, model, run_dir=None, log=quiet)


@pytest.mark.parametrize("precision, dtype, scaled", [("half", "float16", True), ("mixed", "float16", True),
                                                      ("half", "bfloat16", False), ("full", "float16", False)])
def test_grad_scaler_is_used_with_float16_only(files, tmp_path, precision, dtype, scaled):
    trainer = _trainer(files, tmp_path, precision=precision, dtype=dtype, epochs=1)
    calls = []
    real = trainer.train_step.scaler.scale
    trainer.train_step.scaler.scale = lambda loss: calls.append(1) or real(loss)
    trainer.fit()
    assert bool(calls) is scaled


def test_nonfinite_steps_are_skipped_and_raise_the_precision(files, tmp_path):
    trainer = _trainer(files, tmp_path, precision="half", epochs=2, nonfinite_patience=2)
    real = trainer.loss
    trainer.loss = lambda p, y: real(p, y) * (math.nan if trainer.model.precision.mode == "half" else 1.0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    row = trainer.train_epoch(0)
    assert row["skipped_steps"] == 2  # two skipped, then mixed for the rest
    assert trainer.floor == "mixed" and trainer.model.precision.mode == "mixed"
    escalation = trainer.history[-1]
    assert escalation["policy"]["mode"] == "mixed" and "2 consecutive non-finite steps" in escalation["reason"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    trainer.train_epoch(1)  # the schedule says half, the floor keeps mixed
    assert trainer.model.precision.mode == "mixed"


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_nonfinite_gradients_are_skipped_without_a_scaler(files, tmp_path):
    trainer = _trainer(files, tmp_path, precision="half", dtype="bfloat16", epochs=1, nonfinite_patience=100)
    weight = trainer.model.operator.projection.fc2.weight
    handle = weight.register_hook(lambda g: torch.full_like(g, math.nan))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    row = trainer.train_epoch(0)
    handle.remove()
    assert row["skipped_steps"] == len(trainer.train_batches)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_full_precision_failure_stops_with_advice(files, tmp_path):
    trainer = _trainer(files, tmp_path, precision="full", epochs=1, nonfinite_patience=1)
    trainer.loss = lambda p, y: torch.tensor(math.nan)
    with pytest.raises(RuntimeError, match="non-finite steps in full precision"):
        trainer.train_epoch(0)


def test_resume_reaches_the_same_weights(files, tmp_path, monkeypatch):
    whole = train(tiny_config(files, tmp_path / "whole", precision="schedule"), log=quiet)
    interrupted(tiny_config(files, tmp_path / "parts", precision="schedule"), 2, monkeypatch)
    assert checkpoint.load(tmp_path / "parts" / "checkpoint.pt")["epoch"] == 2
    resumed = train(RunConfig(device="cpu"), resume=str(tmp_path / "parts"), log=quiet)
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "parts" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]
    assert resumed["precision_history"] == whole["precision_history"]
    rows = (tmp_path / "parts" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5  # header and one row per epoch, none repeated


def test_evaluate_reproduces_the_final_evaluation(files, tmp_path):
    summary = train(tiny_config(files, tmp_path / "run", epochs=2), log=quiet)
    report = evaluate_checkpoint(str(tmp_path / "run" / "checkpoint.pt"),
                                 [str(files / "test16.pt"), str(files / "test32.pt")], device="cpu")
    assert report["grids"] == summary["grids"] and report["precision"] == summary["precision_history"][-1]["precision"]
    for name in report["test"]:
        for loss, value in report["test"][name].items():
            assert value == pytest.approx(summary["test"][name][loss], rel=1e-6)


def test_bad_input_gets_a_clear_error_and_nothing_is_overwritten(files, tmp_path, capsys):
    small = tmp_path / "small.pt"
    torch.save({"x": torch.zeros(4, 1, 3, 3), "y": torch.zeros(4, 1, 3, 3)}, small)
    with pytest.raises(DataError, match="small.pt: grid .* fewer than the model's modes"):
        train(tiny_config(files, tmp_path / "r1", data_test=[str(small)]), log=quiet)
    two_channels = tmp_path / "pair.pt"
    torch.save({"x": torch.zeros(4, 2, 16, 16), "y": torch.zeros(4, 1, 16, 16)}, two_channels)
    with pytest.raises(DataError, match=r"pair.pt: samples of shape \(2, 16, 16\) .*channels and spatial dims"):
        train(tiny_config(files, tmp_path / "r2", data_test=[str(two_channels)]), log=quiet)

    run = tmp_path / "done"
    train(tiny_config(files, run, epochs=1), log=quiet)
    before = (run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--data-train", str(files / "train.pt"), "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train", "--resume", str(empty)]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    (run / "checkpoint.pt").write_bytes(before[: len(before) // 2])
    assert cli.main(["train", "--resume", str(run)]) == 2
    assert "corrupt or truncated checkpoint" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--hidden-channels", "8"]) == 2
    assert "drop --hidden-channels" in capsys.readouterr().err


def test_weights_with_nan_are_never_saved(files, tmp_path):
    trainer = _trainer(files, tmp_path, epochs=1)
    trainer.run_dir = tmp_path
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.nan)
    with pytest.raises(RuntimeError, match="refusing to save"):
        trainer.save("checkpoint.pt")
    assert not (tmp_path / "checkpoint.pt").exists()


def test_auto_precision_picks_from_the_data_audit_and_logs_why(files, tmp_path):
    messages = []
    summary = train(tiny_config(files, tmp_path / "auto", precision="auto", epochs=1), log=messages.append)
    chosen = summary["precision_history"][0]["policy"]
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert (saved["precision"], saved["dtype"]) == (chosen["mode"], chosen["dtype"])
    assert summary["precision_auto"].startswith(str(Precision(chosen["mode"], chosen["dtype"])))
    assert any(m.startswith("precision=auto chose") for m in messages)
    config = tiny_config(files, tmp_path / "again", epochs=1)  # the same audit by hand: the same choice
    run = open_run(config.validate(), quiet)
    train_set = run.train
    torch.manual_seed(config.seed)
    model = model_for(run.config, train_set)
    fields = torch.stack([train_set[i][0] for i in range(len(train_set))])
    policy, _ = choose_precision(fields, (4, 4), model=model)
    assert (policy.mode, policy.dtype) == (chosen["mode"], chosen["dtype"]) and policy.mode in ("mixed", "full")


@pytest.mark.gpu
def test_trainer_runs_the_schedule_on_cuda(tmp_path):
    x, y = smooth_pairs(16, 32, seed=1)
    torch.save({"x": x, "y": y}, tmp_path / "train.pt")
    config = RunConfig(data_train=str(tmp_path / "train.pt"), n_modes=[8], hidden_channels=16, n_layers=2, epochs=4, precision="schedule",
                       batch_size=4, device="cuda", out=str(tmp_path / "run"), tensorboard=False)
    summary = train(config, log=lambda message: None)
    assert [h["policy"]["mode"] for h in summary["precision_history"]] == ["half", "mixed", "full"]
    assert all(math.isfinite(v) for values in summary["test"].values() for v in values.values())
    assert summary["memory_kind"] == "CUDA peak allocated"


def test_a_schedule_whose_phases_share_a_stabilizer_has_no_jump_at_the_switch(files, tmp_path):
    messages = []
    trainer = _trainer(files, tmp_path, precision="half/tanh:0.5,mixed/tanh:0.5", epochs=2)
    trainer.log = messages.append
    rows = [trainer.train_epoch(0), trainer.train_epoch(1)]
    assert trainer.history[1]["precision"] == "mixed/float16/tanh" and "switch_change" not in rows[0]
    # Same function: only the forward transform's rounding differs (a few float16 stages).
    assert rows[1]["switch_change"] == trainer.history[1]["switch_change"] < 10 * UNIT_ROUNDOFF[torch.float16]
    assert not messages
    with torch.no_grad():  # activations of order 10, where tanh is far from the identity
        trainer.model.operator.lifting.fc2.weight.mul_(20)
    same = trainer.switch_change(Precision.from_string("half/tanh"), Precision.from_string("mixed/tanh"))
    tanh_off = trainer.switch_change(Precision.from_string("half/tanh"), Precision("mixed"))
    assert same < 10 * UNIT_ROUNDOFF[torch.float16] and tanh_off > max(100 * same, SWITCH_WARNING)
    assert len(messages) == 1 and "expect the loss to jump" in messages[0]


def test_resume_extends_a_finished_run_as_if_it_had_been_longer(files, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(files, run, epochs=2, precision="half:0.5,mixed:0.5"), log=quiet)
    assert cli.main(["train", "--resume", str(run)]) == 2
    assert "has finished its 2 epochs; pass --epochs N" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "already trained 2 epochs" in capsys.readouterr().err
    summary = train(RunConfig(device="cpu"), resume=str(run), epochs=4, log=quiet)
    assert summary["epochs"] == 4 and checkpoint.load(run / "checkpoint.pt")["epoch"] == 4
    assert json.loads((run / "config.json").read_text())["epochs"] == 4
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    epochs = [int(r[header.index("epoch")]) for r in rows[1:]]
    lrs = [float(r[header.index("lr")]) for r in rows[1:]]
    assert epochs == [1, 2, 3, 4]
    # The cosine rate of a 4-epoch run from epoch 3 on: lr·(1 + cos(π·2/4))/2, then lr·(1 + cos(3π/4))/2.
    assert lrs[2:] == pytest.approx([5e-3 / 2, 5e-3 * (1 + math.cos(3 * math.pi / 4)) / 2])
    # The precision phases of the 4-epoch schedule: epochs 3 and 4 are the mixed half.
    assert [r[header.index("precision")] for r in rows[1:]] == ["half/float16/tanh", "mixed/float16",
                                                                "mixed/float16", "mixed/float16"]


def test_every_epoch_prints_a_line_when_output_is_not_a_terminal(files, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "mpno", "train", "--data-train", str(files / "train.pt"), "--n-modes", "4",
               "--hidden-channels", "4", "--n-layers", "1", "--epochs", "2", "--device", "cpu",
               "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all("mixed/float16" in line and "train " in line and "l2 " in line and "lr " in line for line in lines)
    assert "\r" not in done.stderr  # no progress bars in a log
    quiet_run = subprocess.run(command[:-1] + [str(tmp_path / "quiet"), "-q"], capture_output=True, text=True,
                               timeout=300)
    assert quiet_run.returncode == 0 and "epoch 1/2" not in quiet_run.stderr


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(files, tmp_path):
    """mpno train --compile: the same losses as eager training (the compiled model rounds where eager does)."""
    eager = train(tiny_config(files, tmp_path / "eager", epochs=1), log=quiet)
    compiled = train(tiny_config(files, tmp_path / "compiled", epochs=1, compile=True), log=quiet)
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["compile"] is True
    for name, losses in eager["test"].items():
        for loss, value in losses.items():
            assert compiled["test"][name][loss] == pytest.approx(value, rel=8 * UNIT_ROUNDOFF[torch.float16])


def test_release_freed_memory_hands_freed_heap_pages_back():
    """What the trainer calls after each epoch: freed heap pages leave the process's resident memory."""
    if not profiling.release_freed_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")

    def resident() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    pieces = [torch.ones(16384) for _ in range(3000)]  # 64 KiB each, below glibc's mmap threshold: on the heap
    last = pieces[-1]  # kept: the freed pieces below it cannot simply shrink the heap
    del pieces
    before = resident()
    assert profiling.release_freed_memory()
    assert before - resident() > 100 * 2**20, "fewer than 100 of the 188 MiB freed came back"
    assert last.sum().item() == 16384
