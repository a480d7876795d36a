"""One training step for train and bench, the lint gate, and the CUDA-only lines run with CUDA's calls answered."""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpno import Precision
from mpno.nn.normalized import NormalizedOperator
from mpno.run import bench, profiling
from mpno.run.assembly import optimizer_for
from mpno.run.config import RunConfig
from mpno.run.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def test_lint_finds_nothing():
    """ruff's pyflakes rules (pyproject.toml) over the package, tests, benchmarks and examples: an undefined
    name on a path no test runs (a GPU branch) fails here."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    done = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _tiny_model_and_batch():
    config = bench.configure("tiny")
    torch.manual_seed(0)
    model = config.build()
    x, y, loss = config.data(model, torch.device("cpu"))
    return config, model, (x, y, loss)


@pytest.mark.parametrize("policy", [Precision("mixed", "float16"), Precision("half", "bfloat16"),
                                    Precision("full")])
def test_bench_times_the_step_train_runs(policy):
    config, model, batch = _tiny_model_and_batch()
    model.set_precision(policy)
    trained = _tiny_model_and_batch()[1]
    trained.set_precision(policy)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trained.parameters()))
    x, y, loss = batch
    trainer = Trainer(trained, optimizer_for(RunConfig(), trained)[0], None, 1, loss, schedule=policy)
    step = bench.step_for(config, model, model, batch, policy)
    for _ in range(3):
        step()
        trainer.step(x, y, policy)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), _tiny_model_and_batch()[1].parameters()))
    for (name, a), b in zip(model.named_parameters(), trained.parameters()):
        assert torch.equal(a, b), name


class FakeCuda:
    """Answers torch.cuda's memory calls as a device holding ``allocated`` bytes would."""

    def __init__(self, monkeypatch):
        self.allocated, self.calls = 1000, []
        for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, lambda *a, name=name, **k: self.calls.append(name))
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000)
        monkeypatch.setattr(torch.cuda, "memory_allocated", self.memory_allocated)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")

    def memory_allocated(self, device=None):
        self.allocated += 300  # each call sees what the forward pass in between kept
        return self.allocated


def test_cuda_memory_of_a_training_step_runs(monkeypatch):
    fake = FakeCuda(monkeypatch)
    config, model, batch = _tiny_model_and_batch()
    step = bench.step_for(config, model, model, batch, Precision("mixed", "bfloat16"))
    step()
    assert all(p.grad is not None for p in model.parameters())
    x, y, loss = batch
    result = bench.cuda_memory(step, lambda: model(x), torch.device("cuda"), training=True)
    assert result == {"peak_allocated_bytes": 5000, "activation_bytes": 300}
    assert all(p.grad is None for p in model.parameters())  # the activations are counted without gradients
    assert {"synchronize", "reset_peak_memory_stats"} <= set(fake.calls)
    inference = bench.step_for(dataclasses.replace(config, inference=True), model, model, batch, Precision("full"))
    assert bench.cuda_memory(inference, lambda: model(x), torch.device("cuda"), training=False) == \
        {"peak_allocated_bytes": 5000}
    assert bench.device_name(torch.device("cuda")) == "Fake GPU"
    assert profiling.peak_memory(torch.device("cuda"))["peak_memory_bytes"] == 5000


def test_trainer_keeps_cuda_random_state(monkeypatch):
    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    _, operator, (x, y, loss) = _tiny_model_and_batch()
    model = NormalizedOperator(operator)
    trainer = Trainer(model, optimizer_for(RunConfig(), model)[0], None, 1, loss)
    state = trainer.state()
    assert state["rng"]["cuda"] is saved
    trainer.load_state(state)
    assert restored == [saved]
