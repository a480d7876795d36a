"""Train a small GINO on potential flow past ellipsoids and plot truth, prediction and error in 3D.

Generates the data (exact surface pressure coefficients), trains with the paper's
precision schedule on the CPU in a few minutes, reports the test error of the
trained model in every precision and writes a 3D scatter plot of one test sample.

    python benchmarks/geometry_train.py [--epochs 30] [--plot docs/images/gino_potential_flow.png] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

import mpno
from mpno import data
from mpno.data.pointclouds import PointCloudBatches, PointCloudDataset
from mpno.nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from mpno.nn.point_losses import PointL2Loss
from mpno.run.evaluation import evaluate
from mpno.run.reporting import plot_point_samples
from mpno.run.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--precision", default="schedule")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny kernels, busy machines)")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {split: data.generate("potential-flow", Path(tmp) / f"{split}.h5", n=n, seed=seed,
                                      points=args.points, progress=False)[0]
                 for split, n, seed in (("train", args.train, 0), ("test", args.test, 1))}
        train, test = PointCloudDataset(paths["train"]), PointCloudDataset(paths["test"])
    operator = mpno.GINO(6, 1, n_modes=(6, 6, 6), hidden_channels=16, n_layers=3, latent_grid=12, radius=0.25,
                         kernel_hidden=32)
    start = time.perf_counter()
    train_batches = PointCloudBatches(train, args.batch_size, neighborhoods=operator.neighborhoods)
    test_batches = PointCloudBatches(test, args.batch_size, neighborhoods=operator.neighborhoods)
    search_seconds = time.perf_counter() - start
    model = NormalizedOperator(operator, UnitGaussianNormalizer.fit(x.features.T for x, _ in train_batches.samples),
                               UnitGaussianNormalizer.fit(y.values.T for _, y in train_batches.samples))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss = PointL2Loss()
    schedule = mpno.PrecisionSchedule.parse(args.precision)
    trainer = Trainer(model, optimizer, train_batches, args.epochs, loss, schedule=schedule, scheduler=scheduler,
                      test_batches={"test": test_batches}, eval_losses={"l2": loss}, log=print, progress=True)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    policies = ("full", "amp", "mixed", mpno.Precision("mixed", dtype="bfloat16"), "half",
                mpno.Precision("half", stabilizer=None))
    errors, float64 = {}, {}
    x, _, _ = next(test_batches.iterate())
    for policy in policies:
        model.set_precision(policy)
        name = str(model.precision)
        errors[name] = evaluate(model, {"test": test_batches}, {"l2": loss})["test"]["l2"]
        # the same function in float64: the same stabilizer, full precision
        reference = copy.deepcopy(model).double()
        reference.set_precision(mpno.Precision("full", stabilizer=model.precision.stabilizer))
        with torch.no_grad():
            exact = reference(_double(x)).double()
            float64[name] = ((model(x).double() - exact).norm() / exact.norm()).item()
    report = {"train": args.train, "test": args.test, "points": args.points, "epochs": args.epochs,
              "precision": str(schedule), "train_seconds": seconds, "neighbor_search_seconds": search_seconds,
              "threads": torch.get_num_threads(), "test_l2_by_precision": errors,
              "output_difference_from_float64": float64}
    if args.plot:
        model.set_precision("full")
        plot_point_samples(model, *next(test_batches.iterate())[:2], args.plot,
                           title="GINO on potential flow past an ellipsoid")
    print("\n".join(f"{key}: {value}" for key, value in report.items()))
    if args.json:
        print(json.dumps(report))


def _double(x):
    from dataclasses import replace

    return replace(x, points=x.points.double(), features=x.features.double())


if __name__ == "__main__":
    main()
