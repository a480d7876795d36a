"""What a run leaves behind: metrics (CSV, TensorBoard), plots, and the final table."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..precision import DTYPES
from ..writing import open_replacing, refuse_link


def log_line(message: str) -> None:
    """``message`` as a line on stderr, above any progress bar on a terminal."""
    tqdm.write(message, file=sys.stderr)


class MetricsLog:
    """One row per epoch in ``metrics.csv`` (and TensorBoard scalars when it is installed)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.csv"
        self.writer = None
        if tensorboard:
            refuse_link(run_dir / "tensorboard")
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rows(self) -> list[dict]:
        refuse_link(self.path)  # never read (then copy into the run) a file a link points to
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict]) -> None:
        with open_replacing(self.path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        self._write(self.rows() + [{k: str(v) for k, v in row.items()}])
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def truncate(self, epochs: int) -> None:
        """Keep the rows of the first ``epochs`` epochs (when resuming)."""
        rows = [r for r in self.rows() if int(r["epoch"]) <= epochs]
        if rows:
            self._write(rows)
        elif self.path.exists():
            self.path.unlink()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    """Write the figure in the format of ``path``'s extension (whole or not at all, never through a link)
    and free it."""
    try:
        if not fig.get_constrained_layout():
            fig.tight_layout()
        with open_replacing(path) as f:  # "tight": legends placed outside the axes are kept
            fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi, bbox_inches="tight")
    finally:
        _pyplot().close(fig)


def _log_ticks(axis, values) -> None:
    """Readable ticks on a log ``axis`` (``ax.yaxis``) whose data span less than two decades: 1, 2 and 5 (or
    every digit, under a factor of 3) times powers of ten, written as plain numbers (0.02, not 2×10⁻²)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if not finite or max(finite) / min(finite) >= 100:
        return
    subs = (1.0, 2.0, 5.0) if max(finite) / min(finite) >= 3 else tuple(float(k) for k in range(1, 10))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_curves(rows: list[dict], path: Path, loss_name: str | None = None,
                grids: dict[str, list[int]] | None = None) -> None:
    """Training loss (``loss_name``, e.g. ``"l2"``) and every test metric against epochs, log scale, with the
    precision of each phase; each test line is named by its test set and grid (``grids``: test set → grid),
    and the legend sits outside the data, on the right."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    labels = {"l2": "relative L2", "h1": "relative H1", "mse": "MSE"}  # the losses of mpno.nn.losses
    epochs = [int(r["epoch"]) for r in rows]
    train_label = labels.get(loss_name, loss_name or "loss")
    tests = {key: key.rpartition("/") for key in rows[0] if "/" in key}  # <test set>/<loss>
    grids = grids or {}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    shown = [float(r["train_loss"]) for r in rows]
    ax.plot(epochs, shown, "k-o", markersize=3, label=f"train: {train_label}")
    for key, (name, _, loss) in tests.items():
        values = [float(r[key]) for r in rows]
        shown += values
        grid = "×".join(map(str, grids.get(name, [])))
        ax.plot(epochs, values, marker="o", markersize=3, linestyle="--",
                label=f"{name}{f' at {grid}' if grid else ''}: {labels.get(loss, loss)}")
    changes = [(e, r["precision"]) for e, r, prev in zip(epochs, rows, [None] + rows[:-1])
               if prev is None or prev["precision"] != r["precision"]]
    for epoch, precision in changes:
        ax.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.text(epoch - 0.4, 0.98, precision, transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
    ax.set_yscale("log")
    _log_ticks(ax.yaxis, shown)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (log scale)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path, dpi=110)


@torch.no_grad()
def plot_samples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path, title: str = "") -> None:
    """Input, truth, prediction and error for a few samples (first channel), 1D, 2D or 3D (middle slice).

    Truth and prediction share one colour scale (1D: one y range); the error,
    prediction − truth, has a scale symmetric about zero.
    """
    import numpy as np

    plt = _pyplot()
    model.eval()
    prediction = model(x).float().cpu().numpy()
    x, y = x.float().cpu().numpy(), y.float().cpu().numpy()
    count = len(x)
    fig, axes = plt.subplots(count, 4, figsize=(12, 2.8 * count), squeeze=False)
    for i in range(count):
        truth, guess = y[i, 0], prediction[i, 0]
        both = np.concatenate([truth.ravel(), guess.ravel()])
        shared = (np.nanmin(both), np.nanmax(both))
        limit = np.nanmax(np.abs(guess - truth))
        panels = [("input", x[i, 0], None, "viridis"), ("truth", truth, shared, "viridis"),
                  ("prediction", guess, shared, "viridis"),
                  ("error: prediction − truth", guess - truth, (-limit, limit), "RdBu_r")]
        for ax, (label, field, scale, colours) in zip(axes[i], panels):
            if field.ndim == 1:
                ax.plot([j / len(field) for j in range(len(field))], field)
                if scale is not None and scale[1] > scale[0]:  # (a constant field keeps matplotlib's range)
                    margin = 0.05 * (scale[1] - scale[0])
                    ax.set_ylim(scale[0] - margin, scale[1] + margin)
            else:
                picture = field.T if field.ndim == 2 else field[field.shape[0] // 2].T  # 3D: the middle slice
                low, high = scale if scale is not None else (None, None)
                image = ax.imshow(picture, origin="lower", extent=(0, 1, 0, 1), cmap=colours, vmin=low, vmax=high)
                fig.colorbar(image, ax=ax, fraction=0.046).ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(label, fontsize=9)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=100)


@torch.no_grad()
def plot_sphere_samples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path, grid: str,
                        title: str = "", channels: Sequence[str] | None = None) -> None:
    """Maps of one sample on the sphere (the first of ``x``, ``y``: (batch, C, nlat, nlon) on ``grid``), one row
    per output channel: input, truth, prediction and error, on latitude and longitude axes.

    Truth and prediction share one colour scale per channel; the error, prediction − truth,
    has a scale symmetric about zero. ``channels``: the output channels' names (default
    ``channel 0``, …); an input channel is drawn beside the output channel of the same index.
    """
    import numpy as np

    from ..ops import sht

    plt = _pyplot()
    model.eval()
    prediction = model(x[:1]).float().cpu().numpy()[0]
    inputs, truth = x[0].float().cpu().numpy(), y[0].float().cpu().numpy()
    nlat, nlon = truth.shape[-2:]
    latitude = 90 - np.degrees(sht.quadrature(nlat, grid)[0].numpy())
    longitude = 360 * np.arange(nlon) / nlon
    names = list(channels) if channels is not None and len(channels) == len(truth) else \
        [f"channel {c}" for c in range(len(truth))]
    fig, axes = plt.subplots(len(truth), 4, figsize=(16, 2.6 * len(truth) + 0.6), squeeze=False,
                             constrained_layout=True)
    for c, name in enumerate(names):
        low, high = min(truth[c].min(), prediction[c].min()), max(truth[c].max(), prediction[c].max())
        error = prediction[c] - truth[c]
        bound = float(np.abs(error).max()) or 1.0
        relative = float(np.linalg.norm(error) / max(np.linalg.norm(truth[c]), np.finfo(np.float32).tiny))
        given = (f"input: {name}" if len(inputs) == len(truth) else f"input {c}") if c < len(inputs) else None
        panels = [(given, inputs[min(c, len(inputs) - 1)], "viridis", None),
                  (f"truth: {name}", truth[c], "viridis", (low, high)),
                  (f"prediction: {name}", prediction[c], "viridis", (low, high)),
                  (f"error (prediction − truth), rel. L2 {relative:.3f}", error, "RdBu_r", (-bound, bound))]
        for axis, (label, field, colours, scale) in zip(axes[c], panels):
            if label is None:
                axis.axis("off")
                continue
            low_, high_ = scale if scale is not None else (None, None)
            image = axis.pcolormesh(longitude, latitude, field, shading="nearest", cmap=colours, vmin=low_,
                                    vmax=high_)
            fig.colorbar(image, ax=axis, shrink=0.75).ax.tick_params(labelsize=7)
            axis.set_title(label, fontsize=9)
            axis.set_xticks(range(0, 361, 90))
            axis.set_yticks(range(-90, 91, 45))
            axis.set_aspect("equal")
            axis.tick_params(labelsize=7)
            if c == len(names) - 1:
                axis.set_xlabel("longitude (°)", fontsize=8)
            if axis is axes[c][0] or (c >= len(inputs) and axis is axes[c][1]):
                axis.set_ylabel("latitude (°)", fontsize=8)
    fig.suptitle(f"{title + ', ' if title else ''}{grid} grid {nlat}×{nlon}", fontsize=10)
    _save(fig, path, dpi=90)


@torch.no_grad()
def plot_point_samples(model: torch.nn.Module, x, y, path: Path, title: str = "") -> None:
    """3D scatter plots of the first cloud of a batch (``x``: :class:`mpno.data.pointclouds.PointClouds`,
    ``y``: its ``PointValues``), one row per output channel: truth, prediction and error.

    Truth and prediction share one colour scale; the error, prediction − truth, has a
    scale symmetric about zero. The title gives the cloud's relative L2 error (over all
    channels, with the target's quadrature weights, as :class:`mpno.nn.point_losses.PointL2Loss`).
    """
    import dataclasses

    from ..nn.point_losses import PointL2Loss

    plt = _pyplot()
    model.eval()
    size = x.sizes[0]
    guess = model(x)[:size].float()
    target = dataclasses.replace(y, values=y.values[:size], sizes=(size,),
                                 weights=None if y.weights is None else y.weights[:size])
    relative = PointL2Loss()(guess, target).item()
    points, truth, guess = x.points[:size].cpu().numpy(), target.values.float().cpu().numpy(), guess.cpu().numpy()
    tick = float(f"{float(abs(points).max()) or 1.0:.1g}")  # axes ±0.8, not ±0.798
    limit = max(tick, float(abs(points).max()))
    count = truth.shape[1]
    fig = plt.figure(figsize=(13, 4.2 * count))
    for c in range(count):
        low, high = min(truth[:, c].min(), guess[:, c].min()), max(truth[:, c].max(), guess[:, c].max())
        error = guess[:, c] - truth[:, c]
        bound = float(abs(error).max()) or 1.0
        name = f" {c}" if count > 1 else ""
        panels = [(f"truth{name}", truth[:, c], "viridis", (low, high)),
                  (f"prediction{name}", guess[:, c], "viridis", (low, high)),
                  (f"error (prediction − truth){name}", error, "RdBu_r", (-bound, bound))]
        for i, (label, values, colours, (vmin, vmax)) in enumerate(panels):
            axis = fig.add_subplot(count, 3, 3 * c + i + 1, projection="3d")
            shown = axis.scatter(*points.T, c=values, cmap=colours, vmin=vmin, vmax=vmax, s=6)
            axis.set_title(label, fontsize=10)
            axis.set_box_aspect((1, 1, 1))
            for set_limit, set_ticks in ((axis.set_xlim, axis.set_xticks), (axis.set_ylim, axis.set_yticks),
                                         (axis.set_zlim, axis.set_zticks)):
                set_limit(-limit, limit)
                set_ticks([-tick, 0, tick], [f"{-tick:g}", "0", f"{tick:g}"])
            axis.tick_params(labelsize=7)
            fig.colorbar(shown, ax=axis, shrink=0.6).ax.tick_params(labelsize=7)
    fig.suptitle(f"{title + ': ' if title else ''}sample 0, {size} points, relative L2 {relative:.3f}", fontsize=11)
    _save(fig, path, dpi=110)


def json_safe(value):
    """``value`` with every non-finite float replaced by ``None``: valid JSON (``json.dumps(..., allow_nan=False)``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch: precision, train loss, each test metric, learning rate, seconds, skipped steps."""
    tests = "  ".join(f"{key} {value:.4f}" for key, value in row.items() if "/" in key)
    line = (f"epoch {row['epoch']}/{epochs}  {row['precision']}  train {row['train_loss']:.4f}  {tests}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f} s")
    if row["skipped_steps"]:
        line += f"  skipped {row['skipped_steps']} steps"
    if "switch_change" in row:
        line += f"  (switch changed the output by {row['switch_change']:.1e})"
    return line


def results_table(test: dict[str, dict[str, float]], grids: dict[str, list[int]]) -> str:
    """Test errors per data set and loss, with each set's grid."""
    losses = sorted({name for values in test.values() for name in values})
    width = max([len("test set")] + [len(name) for name in test])
    lines = [f"{'test set':<{width}}  {'grid':>9}  " + "  ".join(f"{name:>8}" for name in losses)]
    for name, values in test.items():
        grid = "×".join(str(n) for n in grids.get(name, []))
        lines.append(f"{name:<{width}}  {grid:>9}  " + "  ".join(f"{values.get(loss, math.nan):>8.4f}" for loss in losses))
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    """The final table: test errors per data set, time, peak memory, precision history."""
    lines = [results_table(summary["test"], summary.get("grids", {})), ""]
    lines.append(f"epochs {summary['epochs']}, {summary['seconds']:.1f} s, "
                 f"peak memory {summary['peak_memory_bytes'] / 2**20:.0f} MiB ({summary['memory_kind']})")
    lines.append("precision: " + " → ".join(f"{h['precision']} (epoch {h['epoch']}"
                                             + (f", {h['reason']})" if h["reason"] != "schedule" else ")")
                                             for h in summary["precision_history"]))
    if summary.get("run_dir"):
        lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)


#: Line styles of the dtypes' precision errors in :func:`plot_bounds`, in the order the report lists them.
_DTYPE_STYLES = ("C0--s", "C1--^", "C2--v", "C4--d", "C5--p")


def plot_bounds(report: dict, path: Path, title: str = "") -> None:
    """Discretisation error and each dtype's precision error against resolution, log-log; with a model
    audit, a second panel: each layer's relative error against float64 and the model's discretisation error."""
    plt = _pyplot()
    from matplotlib.ticker import NullLocator

    levels = report["levels"]
    if "model" in report:
        fig, (ax, audit) = plt.subplots(1, 2, figsize=(12, 4.5))
    else:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(levels, report["curves"]["discretization"], "k-o", label="discretisation error (estimated)")
    dtypes = [name for name in report["curves"] if name != "discretization"]
    for dtype, style in zip(dtypes, _DTYPE_STYLES):
        values = [v if math.isfinite(v) else float("nan") for v in report["curves"][dtype]]
        ax.plot(levels, values, style, label=f"precision error, {dtype}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])  # 16, 32, 64: not 2⁴, 2⁵, 2⁶
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("grid points per dimension")
    ax.set_ylabel("max error of the kept coefficients")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    if "model" in report:
        model = report["model"]
        names = [layer["layer"] for layer in model["layers"]] + ["output"]
        errors = [layer["relative_error"] for layer in model["layers"]] + [model["precision_error"]]
        audit.plot(range(len(names)), [e if math.isfinite(e) else float("nan") for e in errors], "C3-o",
                   label=f"precision error, {model['precision']}")
        for position, error in enumerate(errors):
            if not math.isfinite(error):
                audit.text(position, 0.5, "overflow", transform=audit.get_xaxis_transform(), rotation=90,
                           ha="center", va="center", color="C3", fontsize=8)
        factor = "" if report["threshold"] == 1 else f"{report['threshold']:g} × "
        audit.axhline(report["threshold"] * model["discretization_error"], color="k", linestyle="--",
                      label=f"safe below: {factor}the model's discretisation error (n vs n/2)")
        audit.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        audit.set_yscale("log")
        _log_ticks(audit.yaxis, errors + [report["threshold"] * model["discretization_error"]])
        audit.set_ylabel("relative error of the layer's output against float64")
        audit.set_title(f"model audit: {'safe' if model['safe'] else 'NOT SAFE'} (output ratio {model['ratio']:.2g})",
                        fontsize=10)
        audit.grid(alpha=0.3, which="both")
        audit.legend(fontsize=8)
    _save(fig, path, dpi=110)


def _number(value: float | None, width: int) -> str:
    """``value`` in ``width`` characters as ``1.234e-05``, or a dash where there is none (no closed form)."""
    return f"{'—':>{width}}" if value is None else f"{value:>{width}.3e}"


def _overflow_note(report: dict, unsafe: list[str]) -> str:
    """A sentence naming the half dtypes among ``unsafe`` whose transform overflowed, and those that did not."""
    overflowed = [dtype for dtype in unsafe if math.isinf(report["dtypes"][dtype]["precision_error"])]
    if not overflowed:
        return ""
    held = [dtype for dtype in DTYPES if dtype not in overflowed]
    return f" {' and '.join(overflowed)} overflowed on these values" + (f"; {' and '.join(held)} did not" if held else "") + "."


def bounds_table(report: dict) -> str:
    """The ``mpno bounds`` table: per dtype, both errors, their bounds, the ratio and the verdict,
    and what a half verdict of NOT SAFE means."""
    import textwrap

    grid = "×".join(map(str, report["grid"]))
    modes = "×".join(map(str, report["n_modes"]))
    disc = report["discretization"]
    rate = f"{disc['rate']:.2f}" if disc["rate"] is not None else "not fitted (round-off or one level)"
    lipschitz = "" if report["M"] is None else f", M ≈ {report['M']:.3g}"
    lines = [f"{report['data']}: field {report['field']}, {report['samples']} samples, grid {grid}, modes {modes}",
             f"B = {report['B']:.3g}{lipschitz}; discretisation rate {rate} over grids "
             + ", ".join(map(str, report["levels"]))]
    if disc["storage_floor"]:
        lines.append(f"the coarsened coefficients agree to {disc['estimate']:.1e}: the data's float32 storage "
                     f"rounding ({disc['error']:.1e}) is the larger error they carry")
    lines += ["",
             f"{'dtype':<9} {'discret. err':>12} {'precision err':>13} {'discret. bound':>14} "
             f"{'precision bound':>15} {'ratio':>9}  verdict"]
    for dtype, row in report["dtypes"].items():
        verdict = "safe" if row["safe"] else "NOT SAFE"
        bounds = [_number(row[key], width) for key, width in (("discretization_bound", 14), ("precision_bound", 15))]
        lines.append(f"{dtype:<9} {row['discretization_error']:>12.3e} {row['precision_error']:>13.3e} "
                     f"{bounds[0]} {bounds[1]} {row['ratio']:>9.3g}  {verdict}")
    lines.append(f"(safe: precision error ≤ {report['threshold']:g} × discretisation error)")
    unsafe = [dtype for dtype, row in report["dtypes"].items() if dtype in DTYPES and not row["safe"]]
    if unsafe:
        carried = ", here only their float32 storage rounding (smooth or band-limited data)" \
            if disc["storage_floor"] else ""
        audit = "the model audit below" if "model" in report else "the model audit (--checkpoint RUN/best.pt)"
        overflow = _overflow_note(report, unsafe)
        lines += textwrap.wrap(
            f"NOT SAFE for {' and '.join(unsafe)} concerns these data: a half forward transform adds more error "
            f"than they carry{carried}.{overflow} Training in half or mixed (which computes this transform in "
            f"float32, then rounds) can still be fine: {audit} compares a model's rounding with its own "
            f"discretisation error. Otherwise train in full.", 100)
    if "model" in report:
        model = report["model"]
        lines += ["", f"model {model['checkpoint']} in {model['precision']} against float64 (relative errors):"]
        lines += [f"  {layer['layer']:<12} {layer['relative_error']:.3e}" for layer in model["layers"]]
        verdict = "safe" if model["safe"] else "NOT SAFE"
        lines.append(f"  output: precision error {model['precision_error']:.3e}, the model's discretisation "
                     f"error (n vs n/2) {model['discretization_error']:.3e}, ratio {model['ratio']:.3g}: {verdict}")
    return "\n".join(lines)
