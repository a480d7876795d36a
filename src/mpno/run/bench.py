"""Memory and throughput of training steps in every precision (``mpno bench``, ``docs/benchmarks.md``)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass

import torch

from ..nn import losses
from ..nn.models import FNO, build_operator
from ..precision import Precision
from . import profiling


@dataclass
class BenchConfig:
    """A model and a batch to time: 2D or 3D or 1D follows ``len(modes)``."""

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

    def build(self) -> FNO:
        return build_operator(self.model, self.channels, self.channels, tuple(self.modes),
                              factorization=self.factorization, hidden_channels=self.width,
                              n_layers=self.layers, rank=self.rank)


PRESETS = {
    "ns128": BenchConfig("tfno", "cp", 0.05, 64, (32, 32), 4, (128, 128), 8),  # the paper's Navier–Stokes setting
    "darcy64": BenchConfig("fno", None, 0.05, 32, (16, 16), 4, (64, 64), 16),
    "tiny": BenchConfig("fno", None, 0.05, 8, (8, 8), 2, (32, 32), 2),
}
#: Every precision measured, full first (the baseline of the ratios).
POLICIES = [Precision("full")] + [Precision(mode, dtype) for mode in ("amp", "mixed", "half")
                                  for dtype in ("float16", "bfloat16")]


def measure(config: BenchConfig, policy: Precision, device: torch.device, steps: int = 10, warmup: int = 3) -> dict:
    """Time and memory of training steps (forward, loss, backward, AdamW step) in ``policy``.

    Also the relative difference of the output from the same model and input in
    full precision (with the same stabilizer, so that only rounding differs).
    """
    torch.manual_seed(0)
    model = config.build().to(device)
    policy = policy.replace(fft_backend=config.fft_backend, stabilizer=policy.stabilizer)
    x = torch.randn(config.batch, config.channels, *config.grid, device=device)
    y = torch.randn(config.batch, config.channels, *config.grid, device=device)
    with torch.no_grad():  # the same function in full precision (same stabilizer) as the reference
        model.set_precision(Precision("full", stabilizer=policy.stabilizer, fft_backend=config.fft_backend))
        reference = model(x)
        model.set_precision(policy)
        output = model(x)
    loss_fn = losses.LpLoss(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=policy.mode != "full" and policy.dtype == "float16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_fn(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()

    result = {"precision": str(policy), "mode": policy.mode, "dtype": None if policy.mode == "full" else policy.dtype,
              "output_relative_difference": ((output.double() - reference.double()).norm()
                                             / reference.double().norm()).item()}
    if device.type == "cpu":  # the first step allocates everything a step needs
        result["saved_for_backward_bytes"] = profiling.saved_tensor_bytes(lambda: loss_fn(model(x), y))
        base = profiling.current_rss_bytes()
        profiling.reset_peak_rss()
        step()
        result["peak_rss_bytes"] = profiling.peak_rss_bytes()
        result["peak_rss_increase_bytes"] = result["peak_rss_bytes"] - base
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        result["peak_allocated_bytes"] = profiling.cuda_peak_bytes(step, device)
        optimizer.zero_grad(set_to_none=True)
        before = torch.cuda.memory_allocated(device)
        out = model(x)
        result["activation_bytes"] = torch.cuda.memory_allocated(device) - before
        del out
    seconds = profiling.median_seconds(step, steps, warmup=0, device=device)
    result.update(step_seconds=seconds, samples_per_second=config.batch / seconds)
    return result


def measure_isolated(config: BenchConfig, policy: Precision, device: str, steps: int) -> dict:
    """:func:`measure` in a fresh interpreter, so that memory peaks do not leak between modes."""
    payload = json.dumps({"config": asdict(config), "policy": asdict(policy), "device": device, "steps": steps})
    code = ("import json, sys, torch; from mpno.run import bench; from mpno.precision import Precision; "
            "a = json.loads(sys.argv[1]); "
            "r = bench.measure(bench.BenchConfig(**a['config']), Precision(**a['policy']), "
            "torch.device(a['device']), a['steps']); print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return {"precision": str(policy), "error": reason}
    return json.loads(done.stdout.strip().splitlines()[-1])


MEMORY_KEYS = ("peak_allocated_bytes", "activation_bytes", "saved_for_backward_bytes", "peak_rss_bytes",
               "peak_rss_increase_bytes")


def run(config: BenchConfig, device: str = "cpu", steps: int = 10, isolate: bool | None = None,
        policies=POLICIES, progress=None) -> dict:
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
    gpu = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None
    return {"config": asdict(config), "device": device, "gpu": gpu, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "steps": steps, "modes": rows}


def table(report: dict) -> str:
    """The ``mpno bench`` table."""
    memory = [k for k in MEMORY_KEYS if any(k in row for row in report["modes"])]
    short = {"peak_allocated_bytes": "peak MiB", "activation_bytes": "activ. MiB",
             "saved_for_backward_bytes": "saved MiB", "peak_rss_bytes": "RSS MiB",
             "peak_rss_increase_bytes": "step RSS MiB"}
    header = f"{'precision':<22} {'step ms':>9} {'samples/s':>10} " + " ".join(f"{short[k]:>11}" for k in memory)
    header += f" {'× full time':>11} {'× full mem':>10} {'out diff':>9}"
    lines = [header]
    for row in report["modes"]:
        if "error" in row:
            lines.append(f"{row['precision']:<22} error: {row['error']}")
            continue
        ratios = row.get("ratios_to_full", {})
        lines.append(f"{row['precision']:<22} {row['step_seconds'] * 1e3:>9.2f} {row['samples_per_second']:>10.1f} "
                     + " ".join(f"{row[k] / 2**20:>11.1f}" for k in memory)
                     + f" {ratios.get('step_seconds', float('nan')):>11.3f}"
                     + f" {ratios.get(memory[0], float('nan')):>10.3f} {row['output_relative_difference']:>9.1e}")
    return "\n".join(lines)
