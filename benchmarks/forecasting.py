"""Forecasting operators trained on trajectories and rolled out: the error per lead time of each precision
and training recipe, and the precision gap of each low precision over the rollout beside the model error.

    .venv/bin/python benchmarks/forecasting.py --problem ns|swe [--data DIR] [--train N] [--test M]
        [--steps T] [--interval DT] [--resolution R] [--epochs E] [--seeds 0 1] [--precisions mixed full]
        [--recipes 1 1:0.5,2:0.5] [--history H] [--rollout N] [--set KEY=VALUE ...] [--json FILE]

Data (generated into ``--data`` where missing, by ``mpno generate ... --steps``): ``train.h5`` (seed 0) and
``test.h5`` (seed 1), trajectories of ``--steps`` snapshots ``--interval`` apart:

* ``ns``: vorticity on the torus (``navier-stokes``, forced, ν = 1e-3), an FNO;
* ``swe``: shallow water on the sphere (``shallow-water``, 32×64 by default, one-hour steps), an SFNO.

Every run is :func:`mpno.run.experiment.train` with ``mpno train``'s defaults, ``--unroll`` set to the recipe
(``1``: single steps; ``1:0.5,2:0.5``: single steps, then two unrolled) and ``--set`` options; the same
number of epochs for every recipe, so that the windows seen per epoch are the same. The final weights are
rolled out ``--rollout`` steps from the first window of every test trajectory (``mpno evaluate
--rollout``), and the first seed's ``mixed`` run of the first recipe is audited over the rollout in every
low precision (``mpno bounds --rollout``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

import mpno
from mpno.data import generate
from mpno.run.audits import rollout_report
from mpno.run.config import RunConfig
from mpno.run.evaluation import rollout_checkpoint
from mpno.run.experiment import train
from mpno.run.plots import plot_precision_gap, plot_rollout
from mpno.run.reporting import precision_gap_table

PROBLEMS = {  # equation, model, resolution, interval, generator parameters
    "ns": ("navier-stokes", "fno", 64, 1.0, {}),
    "swe": ("shallow-water", "sfno", 32, 3600.0, {}),
}


def data(problem: str, root: Path, train_n: int, test_n: int, steps: int, interval: float, resolution: int
         ) -> tuple[Path, Path]:
    equation, _, _, _, params = PROBLEMS[problem]
    paths = []
    for name, n, seed in (("train", train_n, 0), ("test", test_n, 1)):
        path = root / f"{problem}_{name}_{resolution}_{steps}x{interval:g}_{n}.h5"
        if not path.exists():
            generate(equation, path, n=n, resolution=resolution, seed=seed, steps=steps, interval=interval,
                     **params)
        paths.append(path)
    return paths[0], paths[1]


def persistence(test_path: Path, history: int, rollout: int) -> dict:
    """The baseline that holds the newest input snapshot for every lead time: its relative L2 error per lead
    time (mean over test trajectories), and the mean norm of the true snapshots per lead time."""
    from mpno.data.trajectories import TrajectoryWindows
    from mpno.run import forecast

    windows = TrajectoryWindows(test_path, history)
    starts, truths = forecast.starts_and_truths(windows, history, rollout, torch.device("cpu"))
    channels = truths.shape[2]
    held = starts[:, -channels:].unsqueeze(1).expand_as(truths)
    return {"relative_l2": forecast.relative_errors(held, truths),
            "truth_norm": truths.double().flatten(2).norm(dim=-1).mean(0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=tuple(PROBLEMS), required=True)
    parser.add_argument("--data", type=Path, default=Path("data/forecasting"))
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--steps", type=int, default=25, help="snapshots per trajectory")
    parser.add_argument("--interval", type=float)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="+", default=["mixed", "full"])
    parser.add_argument("--recipes", nargs="+", default=["1", "1:0.5,2:0.5"], help="--unroll of each recipe")
    parser.add_argument("--history", type=int, default=1)
    parser.add_argument("--rollout", type=int, help="steps rolled out (default: all the test trajectories hold)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other options of mpno train")
    parser.add_argument("--out", type=Path, default=Path("runs/forecasting"))
    parser.add_argument("--no-audit", action="store_true", help="skip the precision gap over the rollout")
    parser.add_argument("--persistence-only", action="store_true",
                        help="only print the persistence baseline and the norms of the test trajectories")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    _, model, resolution, interval, _ = PROBLEMS[args.problem]
    resolution, interval = args.resolution or resolution, args.interval or interval
    args.data.mkdir(parents=True, exist_ok=True)
    train_path, test_path = data(args.problem, args.data, args.train, args.test, args.steps, interval, resolution)
    rollout = args.rollout or args.steps - args.history
    baseline = persistence(test_path, args.history, rollout)
    print("persistence, relative L2 at lead times 1 … " + str(rollout) + ": "
          + " ".join(f"{e:.3f}" for e in baseline["relative_l2"]))
    print("mean norm of the true snapshots: " + " ".join(f"{n:.2f}" for n in baseline["truth_norm"]))
    if args.persistence_only:
        return
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    results, runs = {}, {}

    def run_dir(recipe: str, precision: str, seed: int) -> Path:
        return args.out / (f"{args.problem}_{recipe.replace(':', '-').replace(',', '_')}_{precision}_{seed}"
                           + "".join(f"_{key}-{value}" for key, value in extra.items()))

    for recipe in args.recipes:
        for precision in args.precisions:
            for seed in args.seeds:
                name = f"unroll {recipe}, {precision}, seed {seed}"
                out = run_dir(recipe, precision, seed)
                config = RunConfig(model=model, data_train=str(train_path), data_test=[str(test_path)],
                                   epochs=args.epochs, precision=precision, seed=seed, unroll=recipe,
                                   history=args.history, out=str(out), tensorboard=False, **extra)
                start = time.perf_counter()
                train(config, overwrite=True, progress=False, log=lambda line: None)
                seconds = time.perf_counter() - start
                report = rollout_checkpoint(str(out / "checkpoint.pt"), [str(test_path)], rollout)
                result = report["rollout"][test_path.name]
                results[name] = {"recipe": recipe, "precision": precision, "seed": seed, "seconds": seconds,
                                 "l2": result["l2"]}
                runs.setdefault(name, (out, report))
                print(f"{name}: {seconds:.0f} s, rollout l2 at 1, {rollout // 2}, {rollout}: "
                      + ", ".join(f"{result['l2'][k - 1]:.4f}" for k in (1, rollout // 2, rollout)), flush=True)
    summary = {}
    for recipe in args.recipes:
        for precision in args.precisions:
            chosen = [r["l2"] for r in results.values() if r["recipe"] == recipe and r["precision"] == precision]
            summary[f"unroll {recipe}, {precision}"] = [statistics.mean(values) for values in zip(*chosen)]
    gap = None
    if not args.no_audit:
        audited = run_dir(args.recipes[0], "mixed", args.seeds[0])
        gap = rollout_report(str(test_path), str(audited / "checkpoint.pt"), rollout)
        print(precision_gap_table(gap))
        plot_precision_gap(gap, args.out / f"{args.problem}_precision_gap.png", title=f"{args.problem}: {audited.name}")
    name, (_, report) = next(iter(runs.items()))
    plot_rollout(report, args.out / f"{args.problem}_rollout.png", title=f"{args.problem}: {name}")
    print("mean over seeds, relative L2 at lead times 1 … " + str(rollout))
    for name, errors in summary.items():
        print(f"  {name:<32} " + " ".join(f"{e:.4f}" for e in errors))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "problem": args.problem, "train": args.train, "test": args.test, "steps": args.steps,
            "interval": interval, "resolution": resolution, "epochs": args.epochs, "rollout": rollout,
            "mpno": mpno.__version__, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "persistence": baseline, "runs": results, "mean_over_seeds": summary, "precision_gap": gap},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
