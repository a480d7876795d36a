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
from pathlib import Path
from typing import Callable

import torch

from ..checks import modes_per_dim
from ..precision import DTYPES, MODES, UNIT_ROUNDOFF, Precision, compiled
from ..writing import write_text
from . import domains, profiling
from .config import RunConfig
from .step import TrainStep, make_optimizer, one_step
from .reporting import json_safe

@dataclass
class BenchConfig:
    """A model and a batch to time: 2D or 3D or 1D follows ``len(modes)``.

    The model's domain makes the model and its batch (:meth:`mpno.run.domains.GridDomain.bench_batch`):
    random fields on a grid or the sphere; for a point operator, ``batch`` clouds of
    potential flow past ellipsoids, ``grid`` its latent grid and ``channels`` unused.
    """

    model: str = "fno"
    factorization: str | None = None
    rank: float = 0.05
    width: int = 32
    modes: tuple = (16, 16)
    layers: int = 4
    grid: tuple = (64, 64)
    batch: int = 16
    channels: int = 1
    fft_backend: str = "auto"
    inference: bool = False  # time forward passes under no_grad instead of training steps
    compile: bool = False  # time the model compiled with torch.compile(fullgraph=True)

    def build(self) -> torch.nn.Module:
        return domains.of(self.model).bench_model(self)

    def data(self, model: torch.nn.Module, device: torch.device) -> tuple:
        """One training batch and its loss: ``(input, target, loss function)``."""
        return domains.of(self.model).bench_batch(self, model, device)


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


def configure(preset: str, **overrides) -> BenchConfig:
    """The configuration of ``preset`` with the options given (``None``: the preset's); ``modes`` and ``grid``
    take one value for every dimension or one per dimension."""
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    config = dataclasses.replace(PRESETS[preset])
    modes, grid = overrides.pop("modes", None), overrides.pop("grid", None)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if modes:
        config.modes = modes_per_dim(modes, len(modes) if len(modes) > 1 else len(config.modes))
    if grid:
        config.grid = modes_per_dim(grid, len(config.modes), "--resolution")
    return config


def policies_for(precisions: list[str] | None, kept: bool = False) -> list[Precision]:
    """The policies measured: every one of :data:`POLICIES`, or ``full`` and ``precisions`` (not when the report
    is ``kept`` as a baseline, which holds them all)."""
    if not precisions:
        return POLICIES
    if kept:
        raise ValueError("--precisions measures some policies only; a baseline holds them all: drop it")
    chosen = [Precision.from_string(text) for text in precisions]
    return [POLICIES[0]] + [p for p in chosen if p != POLICIES[0]]


def _float64(x):
    """``x`` (a tensor, or a batch of point clouds) in float64."""
    if isinstance(x, torch.Tensor):
        return x.double()
    return dataclasses.replace(x, points=x.points.double(), features=x.features.double(),
                               weights=None if x.weights is None else x.weights.double())


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
        exact_output = exact(_float64(x))
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
                  samples_per_second=config.batch / seconds)
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


#: Where operations are counted: the CPU path, and the accelerator (CUDA) path traced on ``meta`` tensors.
PATHS = {"cpu": "cpu", "accelerator": "meta"}
#: The matrix products among the counted operations.
PRODUCTS = ("mm", "bmm", "addmm", "baddbmm", "convolution", "convolution_backward")


def count_ops(config: BenchConfig, policy: Precision, path: str = "cpu") -> dict:
    """The ATen operations one training step (forward, loss, backward) dispatches in ``policy``, views apart
    (:class:`mpno.run.profiling.OpCounter`), on the CPU path or on the accelerator path (``meta`` tensors,
    which follow mpno's CUDA branches: :mod:`mpno.ops.devices`)."""
    device = torch.device(PATHS[path])
    torch.manual_seed(0)
    model = config.build().to(device)
    model.set_precision(policy.replace(fft_backend=config.fft_backend, stabilizer=policy.stabilizer))
    x, y, loss_fn = config.data(model, device)
    counter = profiling.step_op_counts(model, x, y, loss_fn)
    return {"ops": counter.total, "products": sum(counter.kernels[name] for name in PRODUCTS),
            "kernels": dict(sorted(counter.kernels.items()))}


def run_counts(config: BenchConfig, policies=POLICIES, paths=tuple(PATHS), preset: str | None = None) -> dict:
    """:func:`count_ops` for every policy on every path, with the ratios to ``full`` on the same path."""
    rows = []
    for policy in policies:
        row = {"precision": str(policy), "mode": policy.mode, "dtype": policy.dtype if policy.low_precision else None}
        for path in paths:
            try:
                row[path] = count_ops(config, policy, path)
            except (RuntimeError, ValueError, NotImplementedError) as err:
                row[path] = {"error": str(err).splitlines()[0] if str(err) else type(err).__name__}
        rows.append(row)
    for path in paths:
        full = rows[0][path]
        for row in rows:
            if "ops" in row[path] and "ops" in full:
                row[path]["ratio_to_full"] = row[path]["ops"] / full["ops"]
    return {"preset": preset, "config": asdict(config), "torch": torch.__version__, "paths": list(paths),
            "counted": "one forward pass, loss and backward, after one uncounted step; view-like operations apart",
            "modes": rows}


def count_table(report: dict) -> str:
    """The ``mpno bench --count-ops`` table: operations per step and matrix products, per precision and path."""
    paths = report["paths"]
    header = f"{'precision':<22}" + "".join(f" {path + ' ops':>16} {'× full':>7} {'products':>9}" for path in paths)
    lines = [header]
    for row in report["modes"]:
        line = f"{row['precision']:<22}"
        for path in paths:
            counts = row[path]
            if "error" in counts:
                line += f" {'error':>16} {'':>7} {'':>9}"
                continue
            line += (f" {counts['ops']:>16} {counts.get('ratio_to_full', float('nan')):>7.3f}"
                     f" {counts['products']:>9}")
        lines.append(line)
    errors = [f"{row['precision']} on the {path} path: {row[path]['error']}" for row in report["modes"]
              for path in paths if "error" in row[path]]
    return "\n".join(lines + errors)


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
    return {"preset": preset, "config": asdict(config), "device": device, "device_name": device_name(torch_device),
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


# The regression guard: a saved report (the baseline) against a new one.

#: What :func:`compare` can judge.
JUDGED = ("time", "memory", "accuracy")
#: Step time × full may exceed the baseline's by this fraction (plus the spread of the timings) by default.
TIME_TOLERANCE = 0.10
#: Memory may grow this fraction above the baseline.
MEMORY_TOLERANCE = 0.02
#: The output's difference from float64 may grow to this multiple of the baseline's (or the unit roundoff).
ACCURACY_FACTOR = 2.0
#: What a baseline records of the environment, and a comparison reports when it changed.
ENVIRONMENT_KEYS = ("torch", "cuda", "device_name", "threads")


def _memory_key(report: dict) -> str:
    """The memory figure judged: the CUDA peak allocated, or the bytes saved for backward on the CPU."""
    return "peak_allocated_bytes" if str(report["device"]).startswith("cuda") else "saved_for_backward_bytes"


def save_baseline(report: dict, path: str | Path) -> None:
    """Write ``report`` (from :func:`run`, with its ``preset``) as a baseline for :func:`compare`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_baseline(path: str | Path, preset: str, config: BenchConfig, device: str) -> dict:
    """The baseline in ``path``, checked to be comparable with a run of ``preset`` (``config``) on ``device``.

    Raises ValueError, naming the problem and the fix, for an unreadable, non-JSON or
    incomplete file, or one measured with another preset, configuration or device type.
    """
    fix = f"write one with: mpno bench --preset {preset} --device {device} --save-baseline {path}"
    try:
        baseline = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"--baseline {path}: cannot read it ({err.strerror or err}); {fix}") from None
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(f"--baseline {path} is not JSON ({err}); {fix}") from None
    where = f"--baseline {path} is not a baseline of mpno bench"
    if not isinstance(baseline, dict):
        raise ValueError(f"{where} (a JSON {type(baseline).__name__}, not an object); {fix}")
    missing = [key for key in ("preset", "config", "device", "torch", "modes") if key not in baseline]
    if missing or not isinstance(baseline["modes"], list) or not baseline["modes"] \
            or not isinstance(baseline["config"], dict):
        raise ValueError(f"{where} (missing or malformed: {', '.join(missing) or 'modes, config'}); {fix}")
    other = "or save a baseline of this run with --save-baseline OTHER.json"
    if baseline["preset"] != preset:
        raise ValueError(f"--baseline {path} was measured with --preset {baseline['preset']} and this run is "
                         f"--preset {preset}; compare like with like (--preset {baseline['preset']}), {other}")
    now = json.loads(json.dumps(asdict(config)))
    defaults = json.loads(json.dumps(asdict(BenchConfig())))  # options newer than a baseline: their defaults
    changed = [f"{key} {baseline['config'].get(key, defaults[key])!r} there, {value!r} here"
               for key, value in now.items() if baseline["config"].get(key, defaults[key]) != value]
    if changed:
        raise ValueError(f"--baseline {path} was measured with other options ({'; '.join(changed)}); give the "
                         f"same options, {other}")
    kind, there = device.split(":")[0], str(baseline["device"]).split(":")[0]
    if kind != there:
        raise ValueError(f"--baseline {path} was measured on {there} and this run is on {kind}; memory is "
                         f"measured differently there: use --device {there}, {other}")
    memory = _memory_key(baseline)
    for i, row in enumerate(baseline["modes"]):
        if not isinstance(row, dict) or not isinstance(row.get("precision"), str):
            raise ValueError(f"{where} (modes[{i}] has no precision); {fix}")
        if "error" in row:
            continue
        quartiles = row.get("step_seconds_quartiles")
        bad = [key for key in ("step_seconds", memory, "output_difference_float64") if not _is_number(row.get(key))]
        if not (isinstance(quartiles, list) and len(quartiles) == 2 and all(map(_is_number, quartiles))):
            bad.append("step_seconds_quartiles")
        if bad:
            raise ValueError(f"{where} (mode {row['precision']} lacks {', '.join(bad)}, or they are not numbers); "
                             f"{fix}")
    return baseline


def _spread(row: dict) -> float:
    """The interquartile range of a mode's step times, relative to their median."""
    low, high = row["step_seconds_quartiles"]
    return (high - low) / row["step_seconds"]


def compare(current: dict, baseline: dict, judge=JUDGED,
            time_tolerance: float = TIME_TOLERANCE) -> tuple[list[dict], list[str]]:
    """Each mode of ``current`` against ``baseline`` (two :func:`run` reports of the same configuration).

    Returns the rows of the table (``precision``, ``metric``, ``current``, ``baseline``,
    ``limit``: ``None`` where the metric is shown but not judged, ``ok``) and one
    sentence per regression. Judged where named in ``judge``:

    * ``time``: the median step time as a ratio to ``full`` in the same run (so a
      slower or faster machine does not count) may exceed the baseline's ratio by
      ``time_tolerance`` plus the spread of the timings (the relative interquartile
      ranges of the mode and of ``full``, the larger of the two runs'). Absolute
      times are shown, never judged.
    * ``memory``: the CUDA peak allocated, or the bytes saved for backward on the
      CPU, may exceed the baseline's by 2%.
    * ``accuracy``: the output's relative difference from the float64 model may
      reach the larger of 2× the baseline's and the unit roundoff of the mode's
      dtype (float32 for ``full``).
    """
    rows, failures = [], []

    def add(precision, metric, now, then, limit=None, message=None):
        ok = None if limit is None else bool(now <= limit)  # a NaN fails
        rows.append({"precision": precision, "metric": metric, "current": now, "baseline": then, "limit": limit,
                     "ok": ok})
        if ok is False:
            failures.append(f"{precision}: {message()}")

    before = {row["precision"]: row for row in baseline["modes"]}
    full_now, full_then = current["modes"][0], baseline["modes"][0]
    ratios = "error" not in full_now and "error" not in full_then
    memory = _memory_key(current)
    label = "peak MiB" if memory == "peak_allocated_bytes" else "saved for backward MiB"
    for row in current["modes"]:
        precision, then = row["precision"], before.pop(row["precision"], None)
        if then is None or "error" in row or "error" in then:
            add(precision, "not in the baseline" if then is None else "error now" if "error" in row
                else "error in the baseline", None, None)
            if then is not None and "error" in row and "error" not in then:
                failures.append(f"{precision}: failed now ({row['error']}); it ran in the baseline")
            continue
        add(precision, "step ms", row["step_seconds"] * 1e3, then["step_seconds"] * 1e3)
        if ratios and precision != full_now["precision"]:
            ratio, ratio_then = (r["step_seconds"] / f["step_seconds"] for r, f in ((row, full_now), (then, full_then)))
            spread = max(_spread(row) + _spread(full_now), _spread(then) + _spread(full_then))
            limit = ratio_then * (1 + time_tolerance + spread) if "time" in judge else None
            add(precision, "step time × full", ratio, ratio_then, limit,
                lambda: f"a step takes {ratio:.3f}× full's time, the baseline {ratio_then:.3f}×; limit {limit:.3f} "
                        f"= baseline × (1 + {time_tolerance:.0%} tolerance + {spread:.1%} spread of the timings)")
        used, used_then = row[memory], then[memory]
        limit = used_then * (1 + MEMORY_TOLERANCE) if "memory" in judge else None
        add(precision, label, used / 2**20, used_then / 2**20, None if limit is None else limit / 2**20,
            lambda: f"{label} {used / 2**20:.3f}, the baseline {used_then / 2**20:.3f}; limit {limit / 2**20:.3f} "
                    f"(+{MEMORY_TOLERANCE:.0%})")
        error, error_then = row["output_difference_float64"], then["output_difference_float64"]
        dtype = row.get("dtype") or "float32"
        u = UNIT_ROUNDOFF[DTYPES.get(dtype, torch.float32)]
        limit = max(ACCURACY_FACTOR * error_then, u) if "accuracy" in judge else None
        add(precision, "output diff vs float64", error, error_then, limit,
            lambda: f"the output differs from the float64 model's by {error:.3e}, the baseline by {error_then:.3e}; "
                    f"limit {limit:.3e}, the larger of {ACCURACY_FACTOR:g}× the baseline and the unit roundoff "
                    f"of {dtype} ({u:.3e})")
    for precision in before:
        failures.append(f"{precision}: in the baseline but not measured now")
    return rows, failures


def check_guard(baseline: str | None, save_baseline: str | None, judge, time_tolerance: float | None) -> None:
    """Refuse guard options that judge nothing (no ``baseline``) or a negative tolerance."""
    if baseline is None and (judge or time_tolerance is not None):
        raise ValueError("--judge and --time-tolerance judge a comparison: add --baseline FILE.json")
    if time_tolerance is not None and not time_tolerance >= 0:
        raise ValueError(f"--time-tolerance {time_tolerance} must be a fraction ≥ 0, e.g. 0.1 for 10%")


def guard(report: dict, baseline: dict, path: str, judge=None, time_tolerance: float | None = None
          ) -> tuple[str, list[str]]:
    """``report`` against ``baseline`` (read from ``path``) on ``judge`` (default :data:`JUDGED`): the text
    ``mpno bench --baseline`` prints and the regressions; the comparison is added to ``report``."""
    judge = judge or JUDGED
    tolerance = TIME_TOLERANCE if time_tolerance is None else time_tolerance
    rows, failures = compare(report, baseline, judge, tolerance)
    changes = environment_changes(report, baseline)
    report["comparison"] = {"baseline": path, "judged": list(judge), "time_tolerance": tolerance, "rows": rows,
                            "failures": failures, "environment_changes": changes}
    text = "\n".join([f"\nagainst {path} (judged: {', '.join(judge)}):", comparison_table(rows),
                      "environment changed: " + "; ".join(changes) if changes else "environment: unchanged",
                      "\n".join([f"{len(failures)} regression(s):", *failures]) if failures else "no regression"])
    return text, failures


def environment_changes(current: dict, baseline: dict) -> list[str]:
    """What differs between the environments of two reports, e.g. ``"torch 2.12.0 → 2.13.0"``."""
    return [f"{key} {baseline.get(key)} → {current.get(key)}" for key in ENVIRONMENT_KEYS
            if baseline.get(key) != current.get(key)]


def comparison_table(rows: list[dict]) -> str:
    """The table of :func:`compare`: current and baseline per mode and metric, the limit and the verdict."""
    lines = [f"{'precision':<20} {'metric':<24} {'current':>10} {'baseline':>10} {'limit':>10}  verdict"]
    for row in rows:
        fmt = ".2e" if row["metric"].startswith("output") else ".4g"
        shown = [format(row[k], fmt) if row[k] is not None else "—" for k in ("current", "baseline", "limit")]
        verdict = {None: "shown", True: "ok", False: "REGRESSED"}[row["ok"]]
        lines.append(f"{row['precision']:<20} {row['metric']:<24} {shown[0]:>10} {shown[1]:>10} {shown[2]:>10}  "
                     f"{verdict}")
    return "\n".join(lines)
