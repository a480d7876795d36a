"""Where a CPU step's time goes, by kind of operation, in each precision.

Profiles the training steps (or, with ``--inference``, the forward passes) of an
``mpno bench`` preset and sums each operation's own CPU time into: the Fourier
transforms, the products (matrix products and convolutions: what native
bfloat16 makes faster), casts and copies, and the rest (elementwise operations,
reductions, the optimizer). With the step time per kind in ``full`` and in a
half precision, it shows how much of a step a faster product can save.

    python benchmarks/cpu_time_by_kind.py [--preset darcy64] [--precisions full mixed/bfloat16] [--steps 5]
        [--inference] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from mpno.precision import Precision
from mpno.run import bench, profiling

#: Kinds of operation, each named by the fragments of the aten names it holds (first match wins).
KINDS = {
    "transforms": ("fft",),
    "products": ("::mm", "::bmm", "::addmm", "::baddbmm", "convolution", "::linear", "mkldnn_matmul"),
    "casts and copies": ("::copy_", "::_to_copy", "::clone"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, fragments in KINDS.items() if any(f in name for f in fragments)), "other")


def time_by_kind(config: bench.BenchConfig, policy: Precision, steps: int) -> dict:
    """Milliseconds per step of each kind of operation (their own CPU time), and of the whole step."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = config.build()
    batch = config.data(model, device)
    model.set_precision(policy)
    step = bench.step_for(config, model, model, batch, policy)
    for _ in range(3):  # warm-up
        step()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        for _ in range(steps):
            step()
    per_kind = defaultdict(float)
    for event in trace.key_averages():
        if event.key.startswith("aten::"):
            per_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e3 / steps
    timed = profiling.timings(step, steps, warmup=0, device=device)
    return {**{kind: per_kind[kind] for kind in (*KINDS, "other")}, "step": sorted(timed)[len(timed) // 2] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="darcy64", choices=tuple(bench.PRESETS))
    parser.add_argument("--precisions", nargs="+", default=["full", "mixed/bfloat16"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--inference", action="store_true", help="forward passes under no_grad")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = bench.configure(args.preset, inference=args.inference)
    rows = {str(p): time_by_kind(config, p, args.steps) for p in bench.policies_for(args.precisions)}
    kinds = (*KINDS, "other", "step")
    print(f"{args.preset}, {'inference' if args.inference else 'training step'}, {torch.get_num_threads()} threads, "
          "ms per step (own CPU time of the operations; step: the median wall time)")
    print(f"{'precision':<22}" + "".join(f"{k:>18}" for k in kinds))
    for name, row in rows.items():
        print(f"{name:<22}" + "".join(f"{row[k]:18.1f}" for k in kinds))
    if args.json:
        print(json.dumps({"preset": args.preset, "inference": args.inference, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
