"""A small SFNO on shallow-water data in several precisions and seeds, tested at 32×64 and zero-shot at 64×128.

    .venv/bin/python benchmarks/sphere_swe.py [--train 64] [--test 16] [--epochs 20] [--seeds 0 1]
        [--precisions full mixed] [--data DIR] [--json results.json] [--plot docs/images/sphere_swe.png]

Uses (or generates, with ``mpno.data.generate("shallow-water", ...)``) the files
``train_32.h5`` (seed 0, 32×64, equiangular), ``test_32.h5`` and ``test_64.h5``
(seed 1, the same flows on 32×64 and on 64×128) in ``--data`` (default: a temporary
directory). Trains the same SFNO (same seed: same initial weights and batch order)
in each precision with Adam on the quadrature-weighted relative L² loss between
standardised fields, and prints the test error per channel, in physical units, at
both resolutions. ``--plot`` draws input, truth, prediction and error of one test
sample at 64×128 (the model of the first precision and seed).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import h5py
import torch

from mpno import SFNO, Precision
from mpno.data import generate
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.spherical import SphericalL2Loss

CHANNELS = ("height", "vorticity", "divergence")


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with h5py.File(path) as f:
        return torch.from_numpy(f["x"][:]), torch.from_numpy(f["y"][:])


def data_files(root: Path, n_train: int, n_test: int) -> dict[str, Path]:
    """The three files in ``root``, generated where missing."""
    files = {}
    for name, n, resolution, seed in (("train_32", n_train, 32, 0), ("test_32", n_test, 32, 1),
                                      ("test_64", n_test, 64, 1)):
        path = root / f"{name}.h5"
        if not path.exists():
            started = time.perf_counter()
            generate("shallow-water", path, n=n, resolution=resolution, seed=seed, progress=False)
            print(f"generated {path.name}: {n} samples at {resolution}×{2 * resolution} in "
                  f"{time.perf_counter() - started:.1f} s")
        files[name] = path
    return files


def channel_errors(prediction: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Relative L²(S²) error of each channel (quadrature-weighted, averaged over the samples)."""
    loss = SphericalL2Loss("equiangular")
    return [loss(prediction[:, c:c + 1], truth[:, c:c + 1]).item() for c in range(truth.shape[1])]


def plot(x: torch.Tensor, y: torch.Tensor, prediction: torch.Tensor, path: Path, title: str) -> None:
    """Input, truth, prediction and error (prediction − truth) of one sample, one row per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = (1.0, 1e-5, 1e-6)
    units = ("m", "1e-5 s⁻¹", "1e-6 s⁻¹")
    extent = (0, 360, -90, 90)  # rows run north to south, columns east from longitude 0
    figure, axes = plt.subplots(3, 4, figsize=(17, 8.4), constrained_layout=True)
    for c, (name, scale, unit) in enumerate(zip(CHANNELS, scales, units)):
        fields = [x[c] / scale, y[c] / scale, prediction[c] / scale]
        low = min(f.min().item() for f in fields[1:])
        high = max(f.max().item() for f in fields[1:])
        error = fields[2] - fields[1]
        bound = error.abs().max().item()
        relative = channel_errors(prediction[None, c:c + 1], y[None, c:c + 1])[0]
        panels = [(f"input {name} (t = 6 h)", fields[0], "viridis", fields[0].min().item(), fields[0].max().item()),
                  (f"truth {name} (t = 12 h)", fields[1], "viridis", low, high),
                  (f"prediction {name}", fields[2], "viridis", low, high),
                  ("error (prediction − truth)", error, "RdBu_r", -bound, bound)]
        for axis, (label, field, cmap, vmin, vmax) in zip(axes[c], panels):
            shown = axis.imshow(field.numpy(), extent=extent, origin="upper", cmap=cmap, vmin=vmin, vmax=vmax,
                                aspect="auto", interpolation="nearest")
            axis.set_title(label, fontsize=10)
            axis.set_xticks(range(0, 361, 90))
            axis.set_yticks(range(-90, 91, 45))
            if c == 2:
                axis.set_xlabel("longitude (°)")
            if axis is axes[c][0]:
                axis.set_ylabel("latitude (°)")
            figure.colorbar(shown, ax=axis, shrink=0.85, label=unit)
        axes[c][3].set_title(f"error (prediction − truth), {name}: rel. L² {relative:.3f}", fontsize=10)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--modes", type=int, default=16, help="lmax = mmax")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--precisions", nargs="+", default=["full", "mixed", "half"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, help="directory of the data files (generated there if missing)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="a map of one test sample at 64×128")
    parser.add_argument("--plot-sample", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data or Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    files = data_files(root, args.train, args.test)
    (x_raw, y_raw) = load(files["train_32"])
    x_raw, y_raw = x_raw[:args.train], y_raw[:args.train]
    tests = {name: tuple(t[:args.test] for t in load(files[name])) for name in ("test_32", "test_64")}
    inputs, outputs = UnitGaussianNormalizer.fit(x_raw), UnitGaussianNormalizer.fit(y_raw)
    x, y = inputs.encode(x_raw), outputs.encode(y_raw)
    loss_fn = SphericalL2Loss("equiangular")
    persistence = {name: channel_errors(xt, yt) for name, (xt, yt) in tests.items()}
    runs = []
    print(f"{'precision':<18} {'seed':>4} {'train':>7} | {'32×64: height':>13} {'vort':>7} {'div':>7} {'mean':>7} | "
          f"{'64×128: height':>14} {'vort':>7} {'div':>7} {'mean':>7} | {'time':>6}")
    for seed in args.seeds:
        for name in args.precisions:
            policy = Precision(name)
            torch.manual_seed(seed)
            model = SFNO(3, 3, (args.modes, args.modes), hidden_channels=args.width, n_layers=args.layers,
                         precision=policy)
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
            order = torch.Generator().manual_seed(seed)
            started = time.perf_counter()
            for _ in range(args.epochs):
                for batch in torch.randperm(len(x), generator=order).split(args.batch_size):
                    optimizer.zero_grad()
                    loss = loss_fn(model(x[batch]), y[batch])
                    loss.backward()
                    optimizer.step()
                scheduler.step()
            elapsed = time.perf_counter() - started
            result = {"precision": str(policy), "seed": seed, "final_train_loss": loss.item(),
                      "train_seconds": elapsed, "test": {}}
            predictions = {}
            for test_name, (xt, yt) in tests.items():
                with torch.no_grad():
                    prediction = outputs.decode(model(inputs.encode(xt)).float())
                predictions[test_name] = prediction
                errors = channel_errors(prediction, yt)
                result["test"][test_name] = {
                    "grid": list(yt.shape[-2:]),
                    "per_channel": dict(zip(CHANNELS, errors)),
                    "mean_of_channels": sum(errors) / len(errors),
                    # all channels in physical units together (dominated by the 3000 m mean height)
                    "raw_all_channels": loss_fn(prediction, yt).item(),
                }
            runs.append(result)
            a, b = result["test"]["test_32"], result["test"]["test_64"]
            print(f"{str(policy):<18} {seed:>4} {result['final_train_loss']:7.4f} | "
                  + " ".join(f"{v:{w}.4f}" for v, w in zip([*a["per_channel"].values(), a["mean_of_channels"]],
                                                            (13, 7, 7, 7)))
                  + " | " + " ".join(f"{v:{w}.4f}" for v, w in zip([*b["per_channel"].values(),
                                                                     b["mean_of_channels"]], (14, 7, 7, 7)))
                  + f" | {elapsed:5.1f}s", flush=True)
            if args.plot and len(runs) == 1:
                xt, yt = tests["test_64"]
                i = args.plot_sample
                plot(xt[i], yt[i], predictions["test_64"][i], args.plot,
                     f"SFNO ({policy}, seed {seed}) trained on {args.train} samples at 32×64, "
                     f"test sample {i} zero-shot at 64×128")
    print("persistence (predict the input):",
          {name: dict(zip(CHANNELS, [round(e, 4) for e in errs])) for name, errs in persistence.items()})
    ratios = {}
    if "full" in args.precisions:
        for run in runs:
            if run["precision"] == "full":
                continue
            full = next(r for r in runs if r["precision"] == "full" and r["seed"] == run["seed"])
            ratios[f"{run['precision']} seed {run['seed']}"] = {
                test: {"mean_of_channels": run["test"][test]["mean_of_channels"]
                       / full["test"][test]["mean_of_channels"],
                       **{c: run["test"][test]["per_channel"][c] / full["test"][test]["per_channel"][c]
                          for c in CHANNELS}}
                for test in tests}
        for key, value in ratios.items():
            print(f"ratio {key} / full:", {t: {k: round(v, 4) for k, v in d.items()} for t, d in value.items()})
    if args.json:
        report = {"model": {"kind": "sfno", "n_modes": [args.modes, args.modes], "hidden_channels": args.width,
                            "n_layers": args.layers,
                            "parameters": sum(p.numel() for p in model.parameters())},
                  "data": {"train": args.train, "test": args.test, "train_grid": [32, 64],
                           "test_grids": {name: list(yt.shape[-2:]) for name, (_, yt) in tests.items()},
                           "train_seed": 0, "test_seed": 1},
                  "training": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "adam",
                               "lr": args.lr, "scheduler": "cosine",
                               "loss": "sphere_l2 between standardised fields"},
                  "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                  "error": "relative L2(S2) per channel, quadrature-weighted, physical units",
                  "persistence": {name: dict(zip(CHANNELS, errs)) for name, errs in persistence.items()},
                  "runs": runs, "ratios_to_full": ratios}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
