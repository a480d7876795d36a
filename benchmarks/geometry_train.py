"""Train GINOs on potential flow past ellipsoids with `mpno train`'s defaults, beside models that see no geometry.

Prints, for the test set and a set of more elongated ellipsoids (out of
distribution), the relative L2 error of Cp (the mean over clouds) of:

* the constant: the training mean of Cp;
* the sphere's formula, Cp = 1 − 9/4 (1 − (n·U)²), which ignores the shape;
* a pointwise MLP on the same inputs (normal, stream direction), and one that
  also sees the point's coordinates;
* GINOs trained as `mpno train --model gino --data-train T.h5 --data-test V.h5 O.h5`
  does (no model flags), for each precision and seed, and with ``--augment rotate``
  (each training cloud turned by a random rotation, ``docs/geometry.md``) as well.

Without files it generates them (300 training and 60 test ellipsoids of 1024
points with semi-axes in [0.5, 2], and 60 with semi-axes in [0.3, 3]).

    python benchmarks/geometry_train.py [--train T.h5 --test V.h5 --ood O.h5] [--epochs 50] [--seeds 0 1]
        [--precisions full mixed] [--augment rotate] [--batch-size 8] [--lr 3e-3] [--plot runs/gino.png] [--json]

``--precisions`` with no value prints the baselines only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import mpno
from mpno import data
from mpno.data.pointclouds import PointCloudBatches, PointCloudDataset, PointClouds, PointValues
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.point_losses import PointL2Loss
from mpno.run import profiling
from mpno.run.plots import plot_point_samples
from mpno.run.config import RunConfig
from mpno.run.experiment import train as train_run

#: What the generated files hold: (name, clouds, seed, min_axis, max_axis).
GENERATED = (("train", 300, 0, 0.5, 2.0), ("test", 60, 1, 0.5, 2.0), ("ood", 60, 2, 0.3, 3.0))


def whole(dataset: PointCloudDataset) -> tuple[PointClouds, PointValues]:
    """Every cloud of ``dataset`` as one batch."""
    x, y, _ = next(PointCloudBatches(dataset, len(dataset)).iterate())
    return x, y


def constant_and_sphere(train: PointCloudDataset, tests: dict) -> dict:
    """The relative L2 errors of the training mean of Cp and of the sphere's Cp on each test set."""
    loss, mean = PointL2Loss(), whole(train)[1].values.double().mean()
    rows = {"constant (training mean)": {}, "sphere formula": {}}
    for name, dataset in tests.items():
        x, y = whole(dataset)
        aligned = (x.features[:, :3].double() * x.features[:, 3:6].double()).sum(1, keepdim=True)  # n·U
        rows["constant (training mean)"][name] = loss(torch.full_like(y.values, float(mean)), y).item()
        rows["sphere formula"][name] = loss(1 - 2.25 * (1 - aligned**2), y).item()
    return rows


def pointwise_mlp(train: PointCloudDataset, tests: dict, positions: bool, epochs: int, batch_size: int,
                  seed: int, lr: float = 1e-3, width: int = 128) -> dict:
    """A per-point MLP (3 hidden layers of ``width``) on the features (and the coordinates), trained with
    the GINO's loss; its relative L2 on each test set."""
    torch.manual_seed(seed)

    def inputs(x: PointClouds) -> torch.Tensor:
        return torch.cat([x.features, x.points], 1) if positions else x.features

    batches = PointCloudBatches(train, batch_size)
    fit = UnitGaussianNormalizer.fit(inputs(x).T for x, _ in batches.samples)
    out = UnitGaussianNormalizer.fit(y.values.T for _, y in batches.samples)
    channels = inputs(batches.samples[0][0]).shape[1]
    mlp = torch.nn.Sequential(torch.nn.Linear(channels, width), torch.nn.GELU(), torch.nn.Linear(width, width),
                              torch.nn.GELU(), torch.nn.Linear(width, width), torch.nn.GELU(),
                              torch.nn.Linear(width, 1))

    def predict(x: PointClouds) -> torch.Tensor:
        z = fit.encode(inputs(x).T.unsqueeze(0))[0].T
        return out.decode(mlp(z).T.unsqueeze(0))[0].T

    optimizer = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss = PointL2Loss()
    for epoch in range(epochs):
        for x, y, _ in batches.iterate(seed * 100003 + epoch):
            optimizer.zero_grad()
            loss(predict(x), y).backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        return {name: loss(predict(x), y).item() for name, (x, y) in ((n, whole(d)) for n, d in tests.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", help="training file (default: generated)")
    parser.add_argument("--test", help="test file (default: generated)")
    parser.add_argument("--ood", help="out-of-distribution test file (default: generated)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="*", default=["full", "mixed"],
                        help="train GINOs in these (none: the baselines only)")
    parser.add_argument("--augment", default="", help="the GINOs' --augment (e.g. rotate; default: none)")
    parser.add_argument("--batch-size", type=int, help="GINO's batch size (default: mpno train's, sized to the data)")
    parser.add_argument("--lr", type=float, help="GINO's learning rate (default: mpno train's)")
    parser.add_argument("--no-baselines", action="store_true", help="GINOs only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--plot", type=Path, help="draw the first test cloud of the first run here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"train": args.train, "test": args.test, "ood": args.ood}
        for split, n, seed, low, high in GENERATED:
            if files[split] is None:
                files[split] = str(data.generate("potential-flow", Path(tmp) / f"{split}.h5", n=n, seed=seed,
                                                 points=1024, min_axis=low, max_axis=high, progress=False)[0])
        train = PointCloudDataset(files["train"])
        tests = {"test": PointCloudDataset(files["test"]), "ood": PointCloudDataset(files["ood"])}
        rows = {} if args.no_baselines else constant_and_sphere(train, tests)
        if not args.no_baselines:
            for positions in (False, True):
                start = time.perf_counter()
                name = "pointwise MLP (normal, flow" + (", position)" if positions else ")")
                rows[name] = pointwise_mlp(train, tests, positions, args.epochs, args.batch_size or 8, args.seeds[0])
                rows[name]["seconds"] = time.perf_counter() - start
        first_run = None
        for seed in args.seeds:
            for precision in args.precisions:
                given = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
                config = RunConfig(model="gino", data_train=files["train"], data_test=[files["test"], files["ood"]],
                                   epochs=args.epochs, seed=seed, precision=precision, device="cpu",
                                   augment=[args.augment] if args.augment else [], tensorboard=False,
                                   out=str(Path(tmp) / f"{precision}-{seed}"), **given)
                profiling.reset_peak_rss()  # the run's own peak, not the process's so far
                summary = train_run(config, progress=False)
                first_run = first_run or Path(summary["run_dir"])
                names = dict(zip(("test", "ood"), summary["test"]))
                name = f"GINO {precision}" + (f", --augment {args.augment}" if args.augment else "") + f", seed {seed}"
                rows[name] = {
                    **{short: summary["test"][long]["l2"] for short, long in names.items()},
                    "seconds": summary["seconds"], "peak_rss_MiB": summary["peak_memory_bytes"] / 2**20,
                    "batch_size": config.batch_size, "lr": config.lr}
                print(f"{name}: {rows[name]}", flush=True)
        if args.plot and first_run is not None:
            model = mpno.load_model(first_run / "checkpoint.pt")
            model.set_precision("full")
            x, y, _ = next(PointCloudBatches(PointCloudDataset(files["test"]), 1).iterate())
            plot_point_samples(model, x, y, args.plot, title="GINO (mpno train defaults) on potential flow past an "
                               "ellipsoid, test cloud 0")
    report = {"files": {k: v if v and not v.startswith(tmp) else "generated" for k, v in files.items()},
              "epochs": args.epochs,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    print(f"{'model':<44} {'test L2':>8} {'OOD L2':>8} {'seconds':>8}")
    for name, row in rows.items():
        seconds = f"{row['seconds']:8.0f}" if "seconds" in row else f"{'':>8}"
        print(f"{name:<44} {row['test']:8.4f} {row['ood']:8.4f} {seconds}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
