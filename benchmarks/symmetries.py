"""Training on symmetries (``--augment``): test error with and without augmentation, per training-set size and
seed, and how far each trained model is from commuting with the symmetries (``--symmetry-check``).

    .venv/bin/python benchmarks/symmetries.py [--data-train F --data-test F] [--n-train 200 1000]
        [--augment flip,rotate] [--epochs 30] [--seeds 0 1] [--set KEY=VALUE ...] [--json FILE]

Default data: the default example's Darcy flow at 32² (``mpno train`` with no arguments generates it into the
cache), whose problem has the square's flips and quarter turns (docs/training.md). Every run is
:func:`mpno.run.experiment.train` with ``mpno train``'s defaults and ``--set`` options; the final weights are
evaluated (``mpno evaluate --symmetry-check``) on the test file.
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
from mpno.run.assembly import default_data
from mpno.run.config import RunConfig
from mpno.run.evaluation import evaluate_checkpoint
from mpno.run.experiment import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-train", type=Path, help="default: the default example's 32² training file")
    parser.add_argument("--data-test", type=Path, help="default: the default example's 32² test file")
    parser.add_argument("--n-train", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--augment", default="flip,rotate")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other options of mpno train")
    parser.add_argument("--out", type=Path, default=Path("runs/symmetries"))
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.data_train is None or args.data_test is None:
        train_file, test_files = default_data(print)
        args.data_train = args.data_train or Path(train_file)
        args.data_test = args.data_test or Path(test_files[0])
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    kinds = args.augment.split(",")
    results = []
    for n_train in args.n_train:
        for augment in ([], kinds):
            for seed in args.seeds:
                out = args.out / f"n{n_train}_{'-'.join(augment) or 'none'}_{seed}"
                config = RunConfig(data_train=str(args.data_train), data_test=[str(args.data_test)], n_train=n_train,
                                   epochs=args.epochs, seed=seed, augment=augment, out=str(out), tensorboard=False,
                                   **extra)
                start = time.perf_counter()
                summary = train(config, overwrite=True, progress=False, log=lambda line: None)
                seconds = time.perf_counter() - start
                report = evaluate_checkpoint(str(out / "checkpoint.pt"), [str(args.data_test)], device="cpu",
                                             symmetry_check=kinds, log=lambda line: None)
                name = args.data_test.name
                row = {"n_train": n_train, "augment": ",".join(augment) or None, "seed": seed,
                       "seconds": seconds, "test": report["test"][name], "symmetry": report["symmetry"][name],
                       "precision": summary["precision_history"][-1]["precision"]}
                results.append(row)
                print(f"n_train {n_train:5d}  augment {row['augment'] or '-':<12} seed {seed}  "
                      f"l2 {row['test']['l2']:.4f}  symmetry error "
                      + " ".join(f"{v:.4f}" for v in row["symmetry"].values()) + f"  {seconds:.0f} s", flush=True)
    print("\nmean over seeds:")
    print("| training samples | augmentation | test L2 | symmetry error (mean) | seconds per run |")
    print("|---|---|---|---|---|")
    for n_train in args.n_train:
        for augment in (None, ",".join(kinds)):
            rows = [r for r in results if r["n_train"] == n_train and r["augment"] == augment]
            print(f"| {n_train} | {augment or 'none'} | {statistics.mean(r['test']['l2'] for r in rows):.4f} | "
                  f"{statistics.mean(statistics.mean(r['symmetry'].values()) for r in rows):.4f} | "
                  f"{statistics.mean(r['seconds'] for r in rows):.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "benchmarks/symmetries.py", "data_train": str(args.data_train), "data_test": str(args.data_test),
            "epochs": args.epochs, "augment": args.augment, "set": args.set, "mpno": mpno.__version__,
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
