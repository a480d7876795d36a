"""Memory, throughput and accuracy of training steps in every precision, and the regression guard
against a saved baseline (``mpno bench``, ``docs/benchmarks.md``)."""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .. import __version__
from ..checks import modes_per_dim
from ..ops import devices
from ..precision import DTYPES, MODES, Precision, compiled
from . import domains, profiling
from .config import RunConfig
from .step import TrainStep, make_optimizer, one_step

@dataclass(frozen=True)
class BenchConfig:
    """A model and a batch to time: 2D or 3D or 1D follows ``len(n_modes)``. The names are ``mpno train``'s.

    The model's domain makes the model and its batch (:meth:`mpno.run.domains.grid.GridDomain.bench_batch`):
    random fields on a grid or the sphere; for a point operator, ``batch_size`` clouds of
    potential flow past ellipsoids, ``resolution`` its latent grid and ``channels`` unused.
    """

    model: str = "fno"
    factorization: str | None = None
    rank: float = 0.05
    hidden_channels: int = 32
    n_modes: tuple = (16, 16)
    n_layers: int = 4
    resolution: tuple = (64, 64)
    batch_size: int = 16
    channels: int = 1
    fft_backend: str = "auto"
    inference: bool = False  # time forward passes under no_grad instead of training steps
    compile: bool = False  # time the model compiled with torch.compile(fullgraph=True)

    def build(self) -> torch.nn.Module:
        return domains.of(self.model).bench_model(self)

    def data(self, model: torch.nn.Module, device: torch.device) -> tuple:
        """One training batch and its loss: ``(input, target, loss function)``."""
        return domains.of(self.model).bench_batch(self, model, device)


#: The names :class:`BenchConfig`'s fields had before they took ``mpno train``'s (baselines may use them).
OLD_NAMES = {"width": "hidden_channels", "modes": "n_modes", "layers": "n_layers", "grid": "resolution",
             "batch": "batch_size"}


def renamed(values: dict) -> dict:
    """``values`` of a :class:`BenchConfig` with the old names of :data:`OLD_NAMES` replaced by the new."""
    return {OLD_NAMES.get(key, key): value for key, value in values.items()}


PRESETS = {
    "ns128": BenchConfig("tfno", "cp", 0.05, 64, (32, 32), 4, (128, 128), 8),  # the paper's Navier–Stokes setting
    "darcy64": BenchConfig("fno", None, 0.05, 32, (16, 16), 4, (64, 64), 16),
    "tiny": BenchConfig("fno", None, 0.05, 8, (8, 8), 2, (32, 32), 2),
    "gino": BenchConfig("gino", None, 0.05, 16, (8, 8, 8), 3, (16, 16, 16), 4),
    "fno-gno": BenchConfig("fno-gno", None, 0.05, 16, (8, 8, 8), 3, (16, 16, 16), 4),  # the gino preset's clouds
    "swe": BenchConfig("sfno", None, 0.05, 32, (32, 32), 4, (64, 128), 8),  # shallow water on a 64×128 sphere
    "uno": BenchConfig("uno", None, 0.05, 32, (16, 16), 4, (64, 64), 16),  # U-NO: 64² → 32² → 16² → 32² → 64²
}
#: Every precision measured, full first (the baseline of the ratios).
POLICIES = [Precision("full")] + [Precision(mode, dtype) for mode in MODES if mode != "full" for dtype in DTYPES]


def configure(preset: str, **options) -> BenchConfig:
    """The configuration of ``preset`` with the options given (``None``: the preset's; the names of
    :data:`OLD_NAMES` are read too); ``n_modes`` and ``resolution`` take one value for every dimension or one
    per dimension."""
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    given = {key: value for key, value in renamed(options).items() if value is not None}
    n_modes = given.pop("n_modes", None)
    resolution = given.pop("resolution", None)
    if n_modes:
        given["n_modes"] = modes_per_dim(n_modes, len(n_modes) if len(n_modes) > 1 else len(base.n_modes))
    dims = len(given.get("n_modes", base.n_modes))
    if resolution:
        given["resolution"] = modes_per_dim(resolution, dims, "--resolution")
    return dataclasses.replace(base, **given)


def policies_for(precisions: list[str] | None, kept: bool = False) -> list[Precision]:
    """The policies measured: every one of :data:`POLICIES`, or ``full`` and ``precisions`` (not when the report
    is ``kept`` as a baseline, which holds them all)."""
    if not precisions:
        return POLICIES
    if kept:
        raise ValueError("--precisions measures some policies only; a baseline holds them all: drop it")
    chosen = [Precision.from_string(text) for text in precisions]
    return [POLICIES[0]] + [p for p in chosen if p != POLICIES[0]]


def _relative_difference(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output.double() - reference.double()).norm() / reference.double().norm()).item()


def measure(config: BenchConfig, policy: Precision, device: torch.device, steps: int = 10, warmup: int = 3) -> dict:
    """Time and memory of training steps (forward, loss, backward, AdamW step) in ``policy``, or of
    forward passes under ``no_grad`` with ``config.inference``.

    Also the relative difference of the output from the same model and input in
    full precision (with the same stabilizer, so that only rounding differs), in
    float32 (``output_relative_difference``) and in float64 (``output_difference_float64``).
    """
    torch.manual_seed(0)
    eager = config.build().to(device)
    policy = policy.replace(fft_backend=config.fft_backend, stabilizer=policy.stabilizer)
    x, y, loss_fn = config.data(eager, device)
    model = compiled(eager) if config.compile else eager
    full = Precision("full", stabilizer=policy.stabilizer, fft_backend=config.fft_backend)
    exact = copy.deepcopy(eager).double()
    exact.set_precision(full)
    with torch.no_grad():  # the same function in full precision (same stabilizer), float64 and float32
        exact_output = exact(domains.of(config.model).in_float64(x))
        eager.set_precision(full)
        reference = eager(x)
        eager.set_precision(policy)
        output = model(x)
    result = {"precision": str(policy), "mode": policy.mode, "dtype": policy.dtype if policy.low_precision else None,
              "compiled": config.compile,
              "output_relative_difference": _relative_difference(output, reference),
              "output_difference_float64": _relative_difference(output, exact_output)}
    del exact, exact_output, reference, output
    step = step_for(config, eager, model, (x, y, loss_fn), policy)
    training = not config.inference
    if device.type == "cpu":
        result.update(cpu_memory(step, lambda: loss_fn(model(x), y), training))
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        result.update(cuda_memory(step, lambda: model(x), device, training))
    times = sorted(profiling.timings(step, steps, warmup=0, device=device))
    seconds = times[len(times) // 2]
    result.update(step_seconds=seconds, step_seconds_quartiles=[times[len(times) // 4], times[3 * len(times) // 4]],
                  samples_per_second=config.batch_size / seconds)
    return result


def cpu_memory(step: Callable[[], object], forward: Callable[[], object], training: bool) -> dict:
    """Memory of a first ``step()`` on the CPU: the bytes ``forward()`` saves for backward (``training``), the
    process's peak resident memory and its increase over the step."""
    result = {}
    if training:
        result["saved_for_backward_bytes"] = profiling.saved_tensor_bytes(forward)
    base = profiling.current_rss_bytes()
    profiling.reset_peak_rss()
    step()  # the first step allocates everything a step needs
    result["peak_rss_bytes"] = profiling.peak_rss_bytes()
    result["peak_rss_increase_bytes"] = result["peak_rss_bytes"] - base
    return result


def cuda_memory(step: Callable[[], object], forward: Callable[[], object], device: torch.device,
                training: bool) -> dict:
    """Memory of a warm ``step()`` on a CUDA device: the peak allocated, and (``training``) the bytes that a
    ``forward()`` keeps allocated, which are the activations saved for backward (``step`` sets the gradients
    to ``None`` first, as a training step does)."""
    result = {"peak_allocated_bytes": profiling.cuda_peak_bytes(step, device)}
    if training:
        step.zero_grad()
        before = torch.cuda.memory_allocated(device)
        out = forward()
        result["activation_bytes"] = torch.cuda.memory_allocated(device) - before
        del out
    return result


class _Step:
    """A timed step: ``step()`` runs it; ``zero_grad()`` drops the gradients it left (training only)."""

    def __init__(self, run: Callable[[], object], train_step: TrainStep | None = None):
        self.run, self.train_step = run, train_step

    def __call__(self):
        return self.run()

    def zero_grad(self) -> None:
        if self.train_step is not None:
            self.train_step.zero_grad()


def step_for(config: BenchConfig, eager: torch.nn.Module, model: torch.nn.Module, batch: tuple,
             policy: Precision) -> _Step:
    """One timed step of ``model`` (``eager``, or it compiled) on ``batch`` = ``(x, y, loss_fn)``: the training
    step ``mpno train`` runs (:class:`mpno.run.step.TrainStep`, with ``mpno train``'s default optimizer), or with
    ``config.inference`` a forward pass under ``no_grad`` (``eager`` put in eval mode)."""
    x, y, loss_fn = batch
    if config.inference:
        eager.eval()

        def inference_step():
            with torch.no_grad():
                model(x)
        return _Step(inference_step)
    optimizer = make_optimizer(RunConfig.optimizer, eager, RunConfig.lr, RunConfig.weight_decay)
    train_step = TrainStep(model, eager, optimizer, one_step(loss_fn))
    return _Step(lambda: train_step(x, y, policy), train_step)


def measure_isolated(config: BenchConfig, policy: Precision, device: str, steps: int) -> dict:
    """:func:`measure` in a fresh interpreter, so that memory peaks do not leak between modes."""
    payload = json.dumps({"config": asdict(config), "policy": asdict(policy), "device": device, "steps": steps,
                          "threads": torch.get_num_threads()})
    code = ("import json, sys, torch; from mpno.run import bench; from mpno.precision import Precision; "
            "a = json.loads(sys.argv[1]); torch.set_num_threads(a['threads']); "
            "r = bench.measure(bench.BenchConfig(**a['config']), Precision(**a['policy']), "
            "torch.device(a['device']), a['steps']); print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return {"precision": str(policy), "error": reason}
    return json.loads(done.stdout.strip().splitlines()[-1])


MEMORY_KEYS = ("peak_allocated_bytes", "activation_bytes", "saved_for_backward_bytes", "peak_rss_bytes",
               "peak_rss_increase_bytes")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(config: BenchConfig, device: str = "cpu", steps: int = 10, isolate: bool | None = None,
        policies=POLICIES, progress=None, preset: str | None = None) -> dict:
    """Measure every policy; ratios of each figure to ``full``. CPU runs each mode in a fresh process."""
    torch_device = torch.device(device)
    isolate = torch_device.type == "cpu" if isolate is None else isolate
    rows = []
    for policy in policies:
        if isolate:
            row = measure_isolated(config, policy, device, steps)
        else:
            try:
                row = measure(config, policy, torch_device, steps)
            except (RuntimeError, ValueError) as err:
                row = {"precision": str(policy), "error": str(err).splitlines()[0]}
            if torch_device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        if progress:
            progress(row)
    full = rows[0]
    for row in rows:
        if "error" in row or "error" in full:
            continue
        row["ratios_to_full"] = {key: row[key] / full[key] for key in ("step_seconds", "samples_per_second",
                                                                         *MEMORY_KEYS) if key in row and full.get(key)}
    hardware = {}
    if torch_device.type == "cpu":
        hardware = {"cpu_matrix_units": devices.cpu_matrix_units(), "native_bfloat16": devices.native_bfloat16_cpu()}
    return {"preset": preset, "config": asdict(config), "mpno": __version__, "device": device,
            "device_name": device_name(torch_device), **hardware,
            "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "steps": steps, "isolated": isolate, "modes": rows}


def table(report: dict) -> str:
    """The ``mpno bench`` table."""
    memory = [k for k in MEMORY_KEYS if any(k in row for row in report["modes"])]
    short = {"peak_allocated_bytes": "peak MiB", "activation_bytes": "activ. MiB",
             "saved_for_backward_bytes": "saved MiB", "peak_rss_bytes": "RSS MiB",
             "peak_rss_increase_bytes": "step RSS MiB"}
    header = f"{'precision':<22} {'step ms':>9} {'samples/s':>10} " + " ".join(f"{short[k]:>11}" for k in memory)
    header += f" {'× full time':>11} {'× full mem':>10} {'out diff':>9} {'f64 diff':>9}"
    lines = [header]
    for row in report["modes"]:
        if "error" in row:
            lines.append(f"{row['precision']:<22} error: {row['error']}")
            continue
        ratios = row.get("ratios_to_full", {})
        lines.append(f"{row['precision']:<22} {row['step_seconds'] * 1e3:>9.2f} {row['samples_per_second']:>10.1f} "
                     + " ".join(f"{row[k] / 2**20:>11.1f}" for k in memory)
                     + f" {ratios.get('step_seconds', float('nan')):>11.3f}"
                     + f" {ratios.get(memory[0], float('nan')):>10.3f} {row['output_relative_difference']:>9.1e}"
                     + f" {row['output_difference_float64']:>9.1e}")
    return "\n".join(lines)
