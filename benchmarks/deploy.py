"""Inference of an exported operator: throughput per precision and format (eager, ``torch.compile``, a pt2
program run by ``torch.export.load``, an ONNX model run by ONNX Runtime) and how far each exported model's
output lies from the eager model's.

    .venv/bin/python benchmarks/deploy.py [--checkpoint RUN/best.pt] [--batch-size 16] [--grid 64 64]
        [--precisions full mixed/float16 mixed/bfloat16 half/bfloat16] [--repeats 5] [--json FILE]

Without ``--checkpoint``, the FNO of the darcy64 preset (width 32, 16 modes, 4 layers), freshly initialised:
speed and the exported-vs-eager difference do not depend on training. Each precision's program is exported
by ``mpno export`` (the batch and grid dynamic; ONNX where it holds the precision, with ONNX Runtime
installed) and timed at ``--grid`` with ``--batch-size``, the median of ``--repeats`` calls after two
warm-up calls. The difference is ``‖y_exported − y_eager‖ / ‖y_eager‖`` on one batch.
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

import onnxruntime
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
            runners = {"eager": model, "compiled": mpno.compiled(model), "pt2": torch.export.load(out).module()}
            if "bfloat16" not in text:
                onnx = out.with_suffix(".onnx")
                export(str(path), "onnx", str(onnx), precision=text)
                session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
                runners["onnx"] = lambda batch, s=session: torch.from_numpy(
                    s.run(None, {s.get_inputs()[0].name: batch.numpy()})[0])
            row = {"precision": text, "dynamic": report["dynamic"], "export_seconds": report["seconds"]}
            with torch.no_grad():
                eager_y = model(x)
                for name, fn in runners.items():
                    row[f"{name}_vs_eager"] = float((fn(x) - eager_y).norm() / eager_y.norm())
                    row[f"{name}_samples_per_s"] = args.batch_size / median_seconds(fn, x, args.repeats)
            rows.append(row)
            print(f"{text:<16} " + "  ".join(f"{name} {row[f'{name}_samples_per_s']:7.1f}/s "
                                             f"({row[f'{name}_vs_eager']:.1e})" for name in runners), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "checkpoint": str(args.checkpoint) if args.checkpoint else "darcy64 FNO, initialised",
            "batch_size": args.batch_size, "grid": args.grid, "repeats": args.repeats, "mpno": mpno.__version__,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
