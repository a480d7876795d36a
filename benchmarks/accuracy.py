"""The accuracy matrix: test error of every precision on standard problems, against full precision.

Each cell trains one model with ``mpno.run.experiment.train`` (the same code as
``mpno train``) and reports the test relative L2 and H1 errors, their ratio to
full precision with the same seed, and the wall time. Data are generated once
by mpno's solvers into ``--data-dir``.

Problems (each an FNO with 4 layers, width 32, 30 epochs, AdamW, cosine schedule):

* ``navier-stokes``: ν = 1e-3, T = 10, 200 training (seed 0) / 40 test (seed 1)
  samples at 64², 16 modes, H1 loss;
* ``darcy``: 200 training / 100 test samples at 32² (solved at 64²), 12 modes, L2 loss;
* ``burgers``: 200 training / 100 test samples at 256 points (solved at 1024), 16 modes, L2 loss.

The batch size is ``mpno train``'s default for the data (``mpno.run.defaults``:
4 for 200 samples); ``--batch-size N`` fixes it instead.

The core set (the default) is every mode in float16 plus ``mixed`` in bfloat16 and
``auto``, over 2 seeds (42 runs): about 50 minutes with one thread per run
(``OMP_NUM_THREADS=1``) on a 2-core machine. ``--dtypes both`` adds the
bfloat16 variants of amp, half and schedule; ``--quick`` shrinks everything to a
smoke test of a minute or two.

    python benchmarks/accuracy.py [--quick] [--problems darcy navier-stokes burgers] [--seeds 0 1]
                                  [--dtypes core|both] [--precisions full mixed/float16] [--batch-size N]
                                  [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mpno.data import coarse_path, generate
from mpno.run.config import RunConfig
from mpno.run.assembly import cache_dir
from mpno.run.experiment import train

PROBLEMS = {
    "navier-stokes": {"generate": {"equation": "navier-stokes", "resolution": 64}, "train_resolution": None,
                      "n_train": 200, "n_test": 40,
                      "config": {"n_modes": [16], "loss": "h1"}},
    "darcy": {"generate": {"equation": "darcy", "resolution": 64, "coarsen": [32]}, "train_resolution": 32,
              "n_train": 200, "n_test": 100,
              "config": {"n_modes": [12], "loss": "l2"}},
    "burgers": {"generate": {"equation": "burgers", "resolution": 1024, "coarsen": [256]}, "train_resolution": 256,
                "n_train": 200, "n_test": 100,
                "config": {"n_modes": [16], "loss": "l2", "spatial_dims": 1}},
}
CORE = [("full", "float16"), ("amp", "float16"), ("mixed", "float16"), ("mixed", "bfloat16"), ("half", "float16"),
        ("schedule", "float16"), ("auto", "float16")]
BOTH = CORE + [("amp", "bfloat16"), ("half", "bfloat16"), ("schedule", "bfloat16")]
QUICK = {"n_train": 32, "n_test": 8, "epochs": 3}


def data_files(problem: str, root: Path, quick: bool) -> tuple[str, str]:
    """The training and test files of ``problem`` (generated once)."""
    spec = PROBLEMS[problem]
    files = {}
    for split, n, seed in (("train", spec["n_train"], 0), ("test", spec["n_test"], 1)):
        n = QUICK[f"n_{split}"] if quick else n
        out = root / f"{problem}_{split}_{n}.h5"
        low = coarse_path(out, spec["train_resolution"]) if spec["train_resolution"] else out
        if not low.exists():
            generate(out=out, n=n, seed=seed, overwrite=True, **spec["generate"])
        files[split] = str(low)
    return files["train"], files["test"]


def run_cell(problem: str, files: tuple[str, str], mode: str, dtype: str, seed: int, out: Path,
             quick: bool, batch_size: int | None = None) -> dict:
    fixed = {"batch_size": batch_size} if batch_size else {}
    config = RunConfig(data_train=files[0], data_test=[files[1]], precision=mode, dtype=dtype, seed=seed,
                       epochs=QUICK["epochs"] if quick else 30, hidden_channels=32, n_layers=4, device="cpu",
                       out=str(out), tensorboard=False, **fixed, **PROBLEMS[problem]["config"])
    start = time.perf_counter()
    summary = train(config, overwrite=True, log=lambda message: None)
    errors = next(iter(summary["test"].values()))
    return {"problem": problem, "precision": mode, "dtype": dtype, "seed": seed, "l2": errors["l2"],
            "h1": errors["h1"], "seconds": time.perf_counter() - start,
            "batch_size": config.batch_size, "lr": config.lr,
            "phases": [h["precision"] for h in summary["precision_history"]],
            "auto": summary["precision_auto"]}


def table(cells: list[dict]) -> str:
    """Markdown: per problem and precision, mean L2/H1 over seeds and the mean ratio to full (same seed)."""
    full = {(c["problem"], c["seed"]): c for c in cells if c["precision"] == "full"}
    lines = ["| problem | precision | test L2 | × full | test H1 | × full | s per run |", "|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((c["problem"], c["precision"], c["dtype"]) for c in cells))
    for problem, mode, dtype in keys:
        group = [c for c in cells if (c["problem"], c["precision"], c["dtype"]) == (problem, mode, dtype)]
        ratios = {m: statistics.mean(c[m] / full[(problem, c["seed"])][m] for c in group) for m in ("l2", "h1")}
        name = "full" if mode == "full" else f"{mode}/{dtype}"
        lines.append(f"| {problem} | {name} | {statistics.mean(c['l2'] for c in group):.4f} | {ratios['l2']:.3f} "
                     f"| {statistics.mean(c['h1'] for c in group):.4f} | {ratios['h1']:.3f} "
                     f"| {statistics.mean(c['seconds'] for c in group):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--dtypes", choices=("core", "both"), default="core")
    parser.add_argument("--precisions", nargs="+", metavar="MODE/DTYPE",
                        help="only these cells of the set, e.g. full mixed/float16")
    parser.add_argument("--batch-size", type=int, help="a fixed batch size instead of the default")
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 epochs: a smoke test")
    parser.add_argument("--data-dir", type=Path, default=cache_dir() / "accuracy")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "accuracy")
    parser.add_argument("--out", type=Path, help="write the cells as JSON here; cells already there are kept "
                                                  "and not run again")
    args = parser.parse_args()
    kept = json.loads(args.out.read_text()) if args.out and args.out.exists() else {"quick": args.quick, "cells": []}
    if kept["quick"] != args.quick:
        parser.error(f"{args.out} holds {'quick' if kept['quick'] else 'full'} cells; give another --out")
    cells = kept["cells"]
    done = {(c["problem"], c["precision"], c["dtype"], c["seed"]) for c in cells}
    precisions = CORE if args.dtypes == "core" else BOTH
    if args.precisions:
        precisions = [(m, d) for m, d in precisions if m == "full" and "full" in args.precisions
                      or f"{m}/{d}" in args.precisions]
    for problem in args.problems:
        files = data_files(problem, args.data_dir, args.quick)
        for seed in args.seeds:
            for mode, dtype in precisions:
                if (problem, mode, dtype, seed) in done:
                    continue
                run_dir = args.runs_dir / f"{problem}-{mode}-{dtype}-{seed}"
                cell = run_cell(problem, files, mode, dtype, seed, run_dir, args.quick, args.batch_size)
                cells.append(cell)
                print(json.dumps(cell), flush=True)
                if args.out:  # keep what has run, in case the matrix is stopped
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                                    "quick": args.quick, "cells": cells}, indent=1) + "\n")
    cells.sort(key=lambda c: (list(PROBLEMS).index(c["problem"]), c["seed"], BOTH.index((c["precision"], c["dtype"]))))
    print(table(cells))


if __name__ == "__main__":
    main()
