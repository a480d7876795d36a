"""Inference of an exported operator: throughput per precision and format (eager, ``torch.compile``, a pt2
program run by ``torch.export.load``) and how far each exported program's output lies from the eager model's.

    .venv/bin/python benchmarks/deploy.py [--checkpoint RUN/best.pt] [--batch-size 16] [--grid 64 64]
        [--precisions full mixed/float16 mixed/bfloat16 half/bfloat16] [--repeats 5] [--json FILE]

Without ``--checkpoint``, the FNO of the darcy64 preset (width 32, 16 modes, 4 layers), freshly initialised:
speed and the exported-vs-eager difference do not depend on training. Each precision's program is exported
by ``mpno export`` (the batch and grid dynamic) and timed at ``--grid`` with ``--batch-size``, the median
of ``--repeats`` calls after two warm-up calls. The difference is ``max |y_exported - y_eager| / max |y_eager|``
on one batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mpno
from mpno import Precision
from mpno.nn.normalized import NormalizedOperator
from mpno.nn.registry import build_operator
from mpno.run import checkpoint
from mpno.run.export import export


def median_seconds(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(2):
            fn(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--precisions", nargs="+", default=["full", "mixed/float16", "mixed/bfloat16", "half/bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint
        if path is None:
            torch.manual_seed(0)
            model = NormalizedOperator(build_operator("fno", 1, 1, (16, 16), hidden_channels=32, n_layers=4))
            path = Path(tmp) / "darcy64.pt"
            checkpoint.save({"model": model.state_dict(), "operator": model.spec(),
                             "precision": dataclasses.asdict(model.precision)}, path)
        base = mpno.load_model(path)
        x = torch.randn(args.batch_size, base.operator.in_channels, *args.grid,
                        generator=torch.Generator().manual_seed(1))
        rows = []
        for text in args.precisions:
            model = mpno.load_model(path)
            model.set_precision(Precision.from_string(text))
            out = Path(tmp) / f"{text.replace('/', '_')}.pt2"
            report = export(str(path), "pt2", str(out), precision=text)
            program = torch.export.load(out).module()
            compiled = torch.compile(model)
            with torch.no_grad():
                eager_y, program_y = model(x), program(x)
            row = {"precision": text, "dynamic": report["dynamic"], "export_seconds": report["seconds"],
                   "relative_difference": float((program_y - eager_y).abs().max() / eager_y.abs().max())}
            for name, fn in (("eager", model), ("compiled", compiled), ("pt2", program)):
                row[f"{name}_samples_per_s"] = args.batch_size / median_seconds(fn, x, args.repeats)
            rows.append(row)
            print(f"{text:<16} eager {row['eager_samples_per_s']:7.1f}/s  compiled {row['compiled_samples_per_s']:7.1f}/s"
                  f"  pt2 {row['pt2_samples_per_s']:7.1f}/s  pt2 vs eager {row['relative_difference']:.2e}",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "checkpoint": str(args.checkpoint) if args.checkpoint else "darcy64 FNO, initialised",
            "batch_size": args.batch_size, "grid": args.grid, "repeats": args.repeats, "mpno": mpno.__version__,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
