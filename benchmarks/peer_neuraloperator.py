"""mpno against neuraloperator at the same configuration, in the same run.

Times training steps (forward, relative L2 loss, backward, AdamW step) of
neuraloperator's FNO/TFNO (or SFNO, with ``--preset swe``; it needs torch-harmonics
0.8: ``pip install --no-deps --no-build-isolation torch-harmonics==0.8.0`` into the
same environment, since 0.9 breaks neuraloperator 2.0.0's SFNO) in every precision it supports on the device —
``fno_block_precision`` full, mixed and half, each with and without
``torch.autocast`` — and mpno's in the matching modes, and reports our/their
ratios of step time and memory. With ``--count-ops`` it counts instead the
operations one step (forward, loss, backward) dispatches, theirs and ours, with
mpno's counter (``mpno.run.profiling.OpCounter``) on the CPU path and on the CUDA
path traced with meta tensors. neuraloperator is not a dependency of mpno;
install it in a separate environment next to mpno:

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 neuraloperator -e .
    /tmp/peer/bin/python benchmarks/peer_neuraloperator.py --preset darcy64 --json
    /tmp/peer/bin/python benchmarks/peer_neuraloperator.py --preset darcy64 --batch 2 --grid 32 --count-ops

Without neuraloperator the script says so and exits cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys

import torch

from mpno.nn import losses
from mpno.precision import Precision
from mpno.run import bench, counting, profiling

#: (their fno_block_precision, their autocast dtype) -> our policy
PAIRS = {
    ("full", None): Precision("full"),
    ("full", "float16"): Precision("amp", "float16"),
    ("full", "bfloat16"): Precision("amp", "bfloat16"),
    ("mixed", "float16"): Precision("mixed", "float16"),
    ("half", "float16"): Precision("half", "float16"),
    ("mixed", None): Precision("mixed", "float16"),
    ("half", None): Precision("half", "float16"),
}


def their_model(config: bench.BenchConfig, block_precision: str):
    from neuralop.models import FNO, SFNO, TFNO

    kwargs = dict(n_modes=tuple(config.n_modes), in_channels=config.channels, out_channels=config.channels,
                  hidden_channels=config.hidden_channels, n_layers=config.n_layers, fno_block_precision=block_precision)
    if config.model == "sfno":  # their n_modes=(a, b) keeps degrees < a and orders < b // 2: ours (a, b // 2)
        return SFNO(**{**kwargs, "n_modes": (config.n_modes[0], 2 * config.n_modes[1])}, factorization="dense")
    if config.model == "tfno":
        return TFNO(factorization=config.factorization or "tucker", rank=config.rank,
                    implementation="factorized", **kwargs)
    return FNO(**kwargs)


def measure_theirs(config, block_precision, autocast, device, steps):
    torch.manual_seed(0)
    model = their_model(config, block_precision).to(device)
    x = torch.randn(config.batch_size, config.channels, *config.resolution, device=device)
    y = torch.randn_like(x)
    loss_fn = losses.LpLoss(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    context = (lambda: torch.autocast(device.type, dtype=getattr(torch, autocast))) if autocast else contextlib.nullcontext

    def step():
        optimizer.zero_grad(set_to_none=True)
        with context():
            out = model(x)
        loss_fn(out.float(), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    row = {"block_precision": block_precision, "autocast": autocast}
    if device.type == "cuda":
        row["peak_allocated_bytes"] = profiling.cuda_peak_bytes(step, device)
    else:
        with context():
            row["saved_for_backward_bytes"] = profiling.saved_tensor_bytes(lambda: model(x))
    row["step_seconds"] = profiling.median_seconds(step, steps, warmup=0, device=device)
    return row


def count_theirs(config, block_precision, path):
    """Operations one training step of their model dispatches (forward, our relative L2 loss, backward), counted
    as mpno counts its own (``mpno.run.profiling.OpCounter``): on the CPU, or on ``meta`` tensors."""
    device = torch.device(counting.PATHS[path])
    torch.manual_seed(0)
    model = their_model(config, block_precision).to(device)
    x = torch.randn(config.batch_size, config.channels, *config.resolution, device=device)
    y = torch.randn_like(x)
    loss = losses.LpLoss(2)
    counter = profiling.step_op_counts(model, x, y, lambda out, target: loss(out.float(), target))
    return {"ops": counter.total, "products": sum(counter.kernels[name] for name in counting.PRODUCTS),
            "kernels": dict(sorted(counter.kernels.items()))}


def count_ops(config) -> list[dict]:
    """Their operation counts per ``fno_block_precision`` and ours per matching policy, on both paths."""
    rows = []
    for block_precision, ours_policy in (("full", Precision("full")), ("mixed", Precision("mixed", "float16")),
                                         ("half", Precision("half", "float16"))):
        row = {"block_precision": block_precision, "ours_precision": str(ours_policy)}
        for path in counting.PATHS:
            try:
                theirs = count_theirs(config, block_precision, path)
            except Exception as err:  # whatever their library raises for an unsupported combination
                theirs = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
            row[path] = {"theirs": theirs, "ours": counting.count_ops(config, ours_policy, path)}
        rows.append(row)
    return rows


def count_table(rows) -> str:
    lines = [f"{'their block precision':<22} {'path':<12} {'their ops':>9} {'(products)':>10} {'our policy':<20} "
             f"{'our ops':>8} {'(products)':>10}"]
    for row in rows:
        for path in counting.PATHS:
            theirs, ours = row[path]["theirs"], row[path]["ours"]
            shown = (f"{theirs['ops']:>9} {theirs['products']:>10}" if "ops" in theirs
                     else f"{'fails':>9} {'':>10}")
            lines.append(f"{row['block_precision']:<22} {path:<12} {shown} {row['ours_precision']:<20} "
                         f"{ours['ops']:>8} {ours['products']:>10}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="darcy64", choices=list(bench.PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--count-ops", action="store_true",
                        help="count the operations of one step (forward, loss, backward), theirs and ours, on the "
                             "CPU path and the CUDA path traced with meta tensors, instead of timing")
    parser.add_argument("--grid", type=int, help="grid size per dimension (default: the preset's)")
    args = parser.parse_args()
    try:
        import neuralop
    except ImportError:
        message = "neuraloperator is not installed here; see this script's docstring for a separate environment"
        print(message, file=sys.stderr)
        if args.json:
            print(json.dumps({"skipped": message}))
        return
    device = torch.device(args.device)
    config = bench.PRESETS[args.preset]
    if args.batch:
        config = dataclasses.replace(config, batch_size=args.batch)
    if args.grid:
        config = dataclasses.replace(config, resolution=(args.grid,) * len(config.n_modes))
    if args.count_ops:
        rows = count_ops(config)
        print(count_table(rows), file=sys.stderr)
        if args.json:
            print(json.dumps({"preset": args.preset, "config": dataclasses.asdict(config), "count_ops": rows,
                              "neuraloperator": getattr(neuralop, "__version__", "?"), "torch": torch.__version__}))
        return
    rows = []
    for (block_precision, autocast), ours_policy in PAIRS.items():
        try:
            theirs = measure_theirs(config, block_precision, autocast, device, args.steps)
        except Exception as err:  # whatever their library raises for an unsupported combination
            theirs = {"block_precision": block_precision, "autocast": autocast,
                      "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        ours = bench.measure(config, ours_policy, device, args.steps) if device.type == "cuda" else \
            bench.measure_isolated(config, ours_policy, args.device, args.steps)
        row = {"theirs": theirs, "ours": ours}
        if "error" not in theirs and "error" not in ours:
            row["time_ratio_ours_over_theirs"] = ours["step_seconds"] / theirs["step_seconds"]
            for key in ("peak_allocated_bytes", "saved_for_backward_bytes"):
                if key in theirs and key in ours:
                    row["memory_ratio_ours_over_theirs"] = ours[key] / theirs[key]
        rows.append(row)
        label = f"their {block_precision}{'+autocast ' + autocast if autocast else ''}"
        if "error" in theirs:
            print(f"{label:34s} unsupported here: {theirs['error'][:90]}", file=sys.stderr)
        else:
            print(f"{label:34s} {theirs['step_seconds'] * 1e3:8.1f} ms | ours {ours_policy!s:20s} "
                  f"{ours.get('step_seconds', float('nan')) * 1e3:8.1f} ms | ours/theirs "
                  f"{row.get('time_ratio_ours_over_theirs', float('nan')):.3f} time, "
                  f"{row.get('memory_ratio_ours_over_theirs', float('nan')):.3f} memory", file=sys.stderr)
    report = {"preset": args.preset, "config": dataclasses.asdict(config), "device": args.device,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "neuraloperator": getattr(neuralop, "__version__", "?"), "torch": torch.__version__, "rows": rows}
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
