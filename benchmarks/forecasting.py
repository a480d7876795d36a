"""Forecasting operators trained on trajectories and rolled out: the error per lead time of each precision
and training recipe, and the precision gap of each low precision over the rollout beside the model error.

    .venv/bin/python benchmarks/forecasting.py --problem ns|swe [--data DIR] [--train N] [--test M]
        [--steps T] [--interval DT] [--resolution R] [--epochs E] [--seeds 0 1] [--precisions mixed full]
        [--recipes 1 1:0.5,2:0.5] [--history H] [--rollout N] [--set KEY=VALUE ...] [--peer] [--json FILE]

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

The error per lead time (``l2``) is the same measure for every run: on the grid the relative L2 error, on the
sphere the relative L²(S²) error (quadrature-weighted) of the fields standardised per channel with the
training snapshots' mean and standard deviation (a model's own ``l2`` standardises with the statistics it
fitted, which differ a little between models).

``--peer`` (``swe`` only) adds torch-harmonics' recipe from its ``examples/shallow_water_equations/train.py``
(torch-harmonics is not a dependency of mpno: ``pip install --no-deps --target DIR torch-harmonics`` and run
with ``PYTHONPATH=DIR``), on the same windows, epochs and seeds: the model ``sfno_sc2_layers4_e32`` of its
``examples/model_registry.py`` (4 layers, 32 channels, ``scale_factor=2``, GELU, instance norm, channel MLP,
``residual_prediction=True``), Adam at the script's default learning rate 1e-4 and batch 4,
``ReduceLROnPlateau`` stepped once per epoch (on the epoch's mean training loss: the script's validation
draws fresh solver samples), its ``SquaredL2LossS2``, fields standardised per channel with the training
snapshots' statistics, single-step training (the script's default: no fine-tuning epochs) in full precision
(its default ``--amp_mode none``).
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
from mpno.data.trajectories import Trajectories, TrajectoryWindows
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.spherical import SphericalL2Loss
from mpno.run import forecast
from mpno.run.audits import rollout_report
from mpno.run.config import RunConfig
from mpno.run.evaluation import rollout_checkpoint, rollout_model
from mpno.run.experiment import train
from mpno.run.plots import plot_precision_gap, plot_rollout
from mpno.run.reporting import precision_gap_table

PROBLEMS = {  # equation, model, resolution, interval, generator parameters
    "ns": ("navier-stokes", "fno", 64, 1.0, {}),
    "swe": ("shallow-water", "sfno", 32, 3600.0, {}),
}
PEER_RECIPE = {"num_layers": 4, "scale_factor": 2, "embed_dim": 32, "activation_function": "gelu",
               "residual_prediction": True, "use_mlp": True, "normalization_layer": "instance_norm",
               "lr": 1e-4, "batch_size": 4}


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


def metric(problem: str, standard: UnitGaussianNormalizer | None):
    """The error measure of every run: a loss ``(prediction, truth) -> mean relative error`` of one lead time
    (on the sphere, of the fields standardised by ``standard``)."""
    if problem == "ns":
        return lambda prediction, truth: forecast.relative_errors_each(prediction.unsqueeze(1),
                                                                       truth.unsqueeze(1)).mean()
    return SphericalL2Loss("equiangular", normalizer=standard)


def standardiser(train_path: Path, n_train: int | None) -> UnitGaussianNormalizer:
    """Per-channel mean and standard deviation of every snapshot of the training trajectories."""
    source = Trajectories(train_path)
    count = min(n_train or source.count, source.count)
    return UnitGaussianNormalizer.fit(frame for n in range(count) for frame in source.frames(n, 0, source.steps))


def rollout_errors(checkpoint: Path, test_path: Path, rollout: int, loss) -> list[float]:
    """``loss`` per lead time of a saved model rolled out from the first window of every test trajectory."""
    model, config, domain, device = rollout_model(str(checkpoint), rollout, "cpu")
    windows = TrajectoryWindows(test_path, config.history)
    starts, truths = forecast.starts_and_truths(windows, config.history, rollout, device)
    predicted = forecast.predicted(model, starts, rollout, config.batch_size, model.static_channels)
    return [float(loss(predicted[:, k], truths[:, k])) for k in range(rollout)]


def run_peer(train_path: Path, test_path: Path, n_train: int | None, standard: UnitGaussianNormalizer, epochs: int,
             seed: int, rollout: int, loss) -> tuple[list[float], float]:
    """torch-harmonics' shallow-water recipe (see the module's docstring) on fields standardised by ``standard``:
    its errors per lead time and the seconds it trained."""
    from torch_harmonics.examples.losses import SquaredL2LossS2
    from torch_harmonics.examples.models import SphericalFourierNeuralOperator

    source = Trajectories(train_path)
    count = min(n_train or source.count, source.count)
    states = torch.stack([standard.encode(source.frames(n, 0, source.steps)) for n in range(count)])
    inputs, targets = states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1)
    nlat, nlon = states.shape[-2:]
    recipe = {key: value for key, value in PEER_RECIPE.items() if key not in ("lr", "batch_size")}
    torch.manual_seed(seed)
    model = SphericalFourierNeuralOperator(img_size=(nlat, nlon), grid="equiangular", in_chans=states.shape[2],
                                           out_chans=states.shape[2], **recipe)
    loss_fn = SquaredL2LossS2(nlat=nlat, nlon=nlon, grid="equiangular")
    optimizer = torch.optim.Adam(model.parameters(), lr=PEER_RECIPE["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=order).split(PEER_RECIPE["batch_size"]):
            step_loss = loss_fn(model(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            optimizer.step()
            total += step_loss.item() * len(batch)
        scheduler.step(total / len(inputs))
    seconds = time.perf_counter() - started
    model.eval()
    windows = TrajectoryWindows(test_path, 1)
    starts, truths = forecast.starts_and_truths(windows, 1, rollout, torch.device("cpu"))
    with torch.no_grad():
        state, predicted = standard.encode(starts), []
        for _ in range(rollout):
            state = model(state)
            predicted.append(standard.decode(state))
    predicted = torch.stack(predicted, 1)
    return [float(loss(predicted[:, k], truths[:, k])) for k in range(rollout)], seconds


def persistence(test_path: Path, history: int, rollout: int, loss) -> dict:
    """The baseline that holds the newest input snapshot for every lead time: its error per lead time (``l2``,
    the benchmark's measure; ``relative_l2``, Euclidean), and the mean norm of the true snapshots per lead
    time."""
    windows = TrajectoryWindows(test_path, history)
    starts, truths = forecast.starts_and_truths(windows, history, rollout, torch.device("cpu"))
    channels = truths.shape[2]
    held = starts[:, -channels:].unsqueeze(1).expand_as(truths)
    return {"l2": [float(loss(held[:, k], truths[:, k])) for k in range(rollout)],
            "relative_l2": forecast.relative_errors(held, truths),
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
    parser.add_argument("--peer", action="store_true", help="add torch-harmonics' recipe (swe only)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    _, model, resolution, interval, _ = PROBLEMS[args.problem]
    resolution, interval = args.resolution or resolution, args.interval or interval
    args.data.mkdir(parents=True, exist_ok=True)
    train_path, test_path = data(args.problem, args.data, args.train, args.test, args.steps, interval, resolution)
    if args.peer and args.problem != "swe":
        parser.error("--peer: torch-harmonics' recipe is a shallow-water recipe; use it with --problem swe")
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    standard = standardiser(train_path, extra.get("n_train")) if args.problem == "swe" else None
    loss = metric(args.problem, standard)
    rollout = args.rollout or args.steps - args.history
    baseline = persistence(test_path, args.history, rollout, loss)
    for key, label in (("l2", "l2"), ("relative_l2", "Euclidean relative L2")):
        print(f"persistence, {label} at lead times 1 … {rollout}: " + " ".join(f"{e:.3f}" for e in baseline[key]))
    print("mean norm of the true snapshots: " + " ".join(f"{n:.2f}" for n in baseline["truth_norm"]))
    if args.persistence_only:
        return
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
                errors = rollout_errors(out / "checkpoint.pt", test_path, rollout, loss)
                results[name] = {"recipe": recipe, "precision": precision, "seed": seed, "seconds": seconds,
                                 "l2": errors}
                runs.setdefault(name, out)
                print(f"{name}: {seconds:.0f} s, rollout l2 at 1, {rollout // 2}, {rollout}: "
                      + ", ".join(f"{errors[k - 1]:.4f}" for k in (1, rollout // 2, rollout)), flush=True)
    if args.peer:
        for seed in args.seeds:
            errors, seconds = run_peer(train_path, test_path, extra.get("n_train"), standard, args.epochs, seed,
                                       rollout, loss)
            results[f"torch-harmonics, seed {seed}"] = {"recipe": "torch-harmonics", "precision": "full",
                                                       "seed": seed, "seconds": seconds, "l2": errors}
            print(f"torch-harmonics, seed {seed}: {seconds:.0f} s, rollout l2 at 1, {rollout // 2}, {rollout}: "
                  + ", ".join(f"{errors[k - 1]:.4f}" for k in (1, rollout // 2, rollout)), flush=True)
    summary = {}
    for recipe, precision in dict.fromkeys((r["recipe"], r["precision"]) for r in results.values()):
        chosen = [r["l2"] for r in results.values() if r["recipe"] == recipe and r["precision"] == precision]
        label = recipe if recipe == "torch-harmonics" else f"unroll {recipe}, {precision}"
        summary[label] = [statistics.mean(values) for values in zip(*chosen)]
    gap = None
    if not args.no_audit:
        audited = run_dir(args.recipes[0], "mixed", args.seeds[0])
        gap = rollout_report(str(test_path), str(audited / "checkpoint.pt"), rollout)
        print(precision_gap_table(gap))
        plot_precision_gap(gap, args.out / f"{args.problem}_precision_gap.png", title=f"{args.problem}: {audited.name}")
    name, out = next(iter(runs.items()))
    report = rollout_checkpoint(str(out / "checkpoint.pt"), [str(test_path)], rollout)
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
