"""The operations one training step dispatches, per precision, on the CPU path and on the accelerator path
traced with ``meta`` tensors (``mpno bench --count-ops``)."""

from __future__ import annotations

from dataclasses import asdict

import torch

from ..precision import Precision
from . import profiling
from .bench import POLICIES, BenchConfig

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
