"""mpno's SFNO, trained as ``mpno train --model sfno`` trains it, against neuraloperator's SFNO recipe,
on the same shallow-water data, the same epochs and seeds.

    .venv/bin/python benchmarks/sphere_swe.py [--data DIR] [--train 200] [--test 50] [--epochs 20]
        [--seeds 0 1] [--precisions mixed full] [--set KEY=VALUE ...] [--no-peer] [--json FILE] [--plot FILE.png]

Data: ``train_32.h5`` (seed 0, 32×64, equiangular), ``test_32.h5`` and ``test_64.h5``
(seed 1: the same flows on 32×64 and 64×128) from ``mpno generate shallow-water``,
generated into ``--data`` where missing.

mpno: :func:`mpno.run.experiment.train` with ``mpno train``'s defaults (``--set``
overrides options, e.g. ``--set batch_size=4 n_modes=16``), one run per precision
and seed; the final weights are tested.

neuraloperator (when it is importable: see ``benchmarks/peer_neuraloperator.py``
for its environment; it needs torch-harmonics 0.8): the SFNO of its 2.0.0 example
``plot_SFNO_swe.py`` — ``n_modes=(32, 32)``, 32 hidden channels, projection
ratio 2, dense weights; AdamW (lr 8e-4, no weight decay), cosine schedule with
``T_max=30``, batch 4, its relative L2 loss summed over the batch — on fields
standardised per channel with the training set's statistics, in full precision.

Both are scored on the raw predictions by

* ``l2``: the relative L2 error over all channels and grid points of the fields
  standardised per channel (training statistics), averaged over samples;
* ``sphere_l2``: mpno's relative L²(S²) error per channel in physical units
  (quadrature-weighted), averaged over channels and samples.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import torch
import yaml

import mpno
from mpno.data import generate
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.spherical import SphericalL2Loss
from mpno.run.config import RunConfig
from mpno.run.experiment import train
from mpno.run.plots import plot_sphere_samples

CHANNELS = ("height", "vorticity", "divergence")
FILES = {"train_32": (0, 32), "test_32": (1, 32), "test_64": (1, 64)}  # name: (seed, latitudes)
PEER_RECIPE = {"n_modes": (32, 32), "hidden_channels": 32, "projection_channel_ratio": 2, "lr": 8e-4,
               "weight_decay": 0.0, "t_max": 30, "batch_size": 4}


def load(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with h5py.File(path) as f:
        return torch.from_numpy(f["x"][:n]), torch.from_numpy(f["y"][:n])


def data_files(root: Path, n_train: int, n_test: int) -> dict[str, Path]:
    """The three files in ``root``, generated where missing (or too small)."""
    files = {}
    for name, (seed, nlat) in FILES.items():
        path = root / f"{name}.h5"
        n = n_train if name.startswith("train") else n_test
        if not path.exists() or h5py.File(path).attrs.get("n", len(h5py.File(path)["x"])) < n:
            started = time.perf_counter()
            generate("shallow-water", path, n=n, resolution=nlat, seed=seed, overwrite=True, progress=False)
            print(f"generated {path.name}: {n} samples at {nlat}×{2 * nlat} in {time.perf_counter() - started:.0f} s",
                  flush=True)
        files[name] = path
    return files


def scores(prediction: torch.Tensor, truth: torch.Tensor, standard: UnitGaussianNormalizer) -> dict:
    """``l2`` (standardised, all channels, grid points) and ``sphere_l2`` (per channel, physical units)."""
    error = (standard.encode(prediction) - standard.encode(truth)).flatten(1).norm(dim=1)
    l2 = (error / standard.encode(truth).flatten(1).norm(dim=1)).mean().item()
    loss = SphericalL2Loss("equiangular")
    per_channel = [loss(prediction[:, c:c + 1], truth[:, c:c + 1]).item() for c in range(truth.shape[1])]
    return {"l2": l2, "sphere_l2": sum(per_channel) / len(per_channel),
            "sphere_l2_per_channel": dict(zip(CHANNELS, per_channel))}


@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 10) -> torch.Tensor:
    return torch.cat([model(chunk).float() for chunk in x.split(batch)])


def run_mpno(files, args, precision: str, seed: int, overrides: dict, work: Path):
    """One ``mpno train`` run; returns the trained model, the options it ran with and its wall time."""
    out = work / f"mpno-{precision}-{seed}"
    config = RunConfig.from_dict({"model": "sfno", "data_train": str(files["train_32"]), "n_train": args.train,
                                  "data_test": [str(files["test_32"])], "epochs": args.epochs, "seed": seed,
                                  "precision": precision, "device": "cpu", "out": str(out), "tensorboard": False,
                                  **overrides})
    started = time.perf_counter()
    summary = train(config, overwrite=True, log=lambda message: None)
    seconds = time.perf_counter() - started
    options = json.loads((out / "config.json").read_text())
    return mpno.load_model(out / "checkpoint.pt"), options, seconds, summary


def run_peer(x, y, args, seed: int):
    """neuraloperator's SFNO recipe on standardised fields; returns a model of raw fields and its wall time."""
    from neuralop import LpLoss
    from neuralop.models import SFNO as TheirSFNO

    inputs, outputs = UnitGaussianNormalizer.fit(x), UnitGaussianNormalizer.fit(y)
    xs, ys = inputs.encode(x), outputs.encode(y)
    torch.manual_seed(seed)
    model = TheirSFNO(n_modes=PEER_RECIPE["n_modes"], in_channels=3, out_channels=3,
                      hidden_channels=PEER_RECIPE["hidden_channels"],
                      projection_channel_ratio=PEER_RECIPE["projection_channel_ratio"], factorization="dense")
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEER_RECIPE["lr"], weight_decay=PEER_RECIPE["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=PEER_RECIPE["t_max"])
    loss_fn = LpLoss(d=2, p=2, reduction="sum")
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(xs), generator=order).split(PEER_RECIPE["batch_size"]):
            optimizer.zero_grad()
            loss_fn(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    return (lambda raw: outputs.decode(model(inputs.encode(raw)))), time.perf_counter() - started


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory of the data files (generated there if missing)")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="+", default=["mixed", "full"], help="mpno's (the first is drawn)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="mpno train options")
    parser.add_argument("--no-peer", action="store_true", help="skip neuraloperator even where it is installed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="maps of one test flow at 64×128 (zero-shot), predicted by the "
                                                  "first mpno run (first precision, first seed)")
    parser.add_argument("--plot-sample", type=int, default=0, help="which test flow --plot draws")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data or Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    files = data_files(root, args.train, args.test)
    x, y = load(files["train_32"], args.train)
    tests = {name: load(files[name], args.test) for name in ("test_32", "test_64")}
    standard = UnitGaussianNormalizer.fit(y)  # the metric's standardisation: training targets, per channel
    overrides = parse_overrides(args.set)
    peer = not args.no_peer
    if peer:
        try:
            import neuralop  # noqa: F401
        except ImportError:
            print("neuraloperator is not importable here: mpno only (see benchmarks/peer_neuraloperator.py)")
            peer = False
    results = {"persistence": {name: scores(xt, yt, standard) for name, (xt, yt) in tests.items()}}
    runs = []
    work = Path(tempfile.mkdtemp())
    print(f"{'library':<14} {'precision':<14} {'seed':>4} | {'l2 32×64':>9} {'64×128':>8} | "
          f"{'sphere_l2 32×64':>15} {'64×128':>8} | {'time':>6}", flush=True)
    labels = [("mpno", p) for p in args.precisions] + ([("neuraloperator", "full")] if peer else [])
    drawn = None
    for seed in args.seeds:
        for library, precision in labels:
            if library == "mpno":
                model, options, seconds, _ = run_mpno(files, args, precision, seed, overrides, work)
                drawn = drawn or model
            else:
                model, seconds = run_peer(x, y, args, seed)
                options = dict(PEER_RECIPE, epochs=args.epochs)
            run = {"library": library, "precision": precision, "seed": seed, "train_seconds": seconds,
                   "options": options, "test": {}}
            for name, (xt, yt) in tests.items():
                prediction = predict(model, xt)
                run["test"][name] = scores(prediction, yt, standard)
            runs.append(run)
            a, b = run["test"]["test_32"], run["test"]["test_64"]
            print(f"{library:<14} {precision:<14} {seed:>4} | {a['l2']:9.4f} {b['l2']:8.4f} | "
                  f"{a['sphere_l2']:15.4f} {b['sphere_l2']:8.4f} | {seconds:5.0f}s", flush=True)
    summary = {}
    for library, precision in labels:
        same = [r for r in runs if r["library"] == library and r["precision"] == precision]
        summary[f"{library} {precision}"] = {
            name: {metric: statistics.mean(r["test"][name][metric] for r in same) for metric in ("l2", "sphere_l2")}
            for name in tests}
    results.update(runs=runs, mean_over_seeds=summary)
    for key, value in summary.items():
        print(f"mean over seeds, {key}: " + ", ".join(f"{name} l2 {v['l2']:.4f} sphere_l2 {v['sphere_l2']:.4f}"
                                                        for name, v in value.items()))
    first = f"mpno {args.precisions[0]}"
    if peer:
        ratio = summary[first]["test_32"]["l2"] / summary["neuraloperator full"]["test_32"]["l2"]
        results["ratio_mpno_default_over_neuraloperator_l2_32"] = ratio
        print(f"{first} / neuraloperator (l2 at 32×64): {ratio:.3f}")
    if "full" in args.precisions and args.precisions[0] != "full":
        ratio = summary[first]["test_32"]["l2"] / summary["mpno full"]["test_32"]["l2"]
        results["ratio_mpno_default_over_full_l2_32"] = ratio
        print(f"{first} / mpno full (l2 at 32×64): {ratio:.3f}")
    if args.plot:
        x64, y64 = tests["test_64"]
        i = args.plot_sample
        plot_sphere_samples(drawn, x64[i:i + 1], y64[i:i + 1], args.plot, "equiangular", channels=CHANNELS,
                            title=f"mpno {args.precisions[0]}, seed {args.seeds[0]}, test flow {i} (zero-shot)")
    if args.json:
        report = {"data": {"train": args.train, "test": args.test, "generator": "mpno generate shallow-water",
                           "files": {name: {"seed": s, "grid": [n, 2 * n]} for name, (s, n) in FILES.items()}},
                  "epochs": args.epochs, "seeds": args.seeds, "overrides": overrides, "threads": args.threads,
                  "machine": platform.processor() or platform.machine(), "torch": torch.__version__, **results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
