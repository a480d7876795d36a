"""The plots mpno writes: loss curves, test samples on a grid, on the sphere and as point clouds, and the error
budget of ``mpno bounds`` against resolution (matplotlib, written whole or not at all)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ..writing import open_replacing


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


def plot_rollout(report: dict, path: Path, title: str = "") -> None:
    """``mpno evaluate --rollout``: the error against lead time of every test set (left), and the power
    spectra of prediction and truth at the chosen lead times of the first (right), log scales."""
    plt = _pyplot()
    fig, (errors, spectra) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, result in report["rollout"].items():
        errors.plot(result["lead_time"], result["l2"], "-o", markersize=3, label=name)
    errors.set_yscale("log")
    _log_ticks(errors.yaxis, [v for r in report["rollout"].values() for v in r["l2"]])
    errors.set_xlabel("lead time (steps)")
    errors.set_ylabel("relative L2 error (log scale)")
    errors.legend(fontsize=8)
    errors.grid(alpha=0.3, which="both")
    name, first = next(iter(report["rollout"].items()))
    for i, (lead, pair) in enumerate(first["spectra"].items()):
        colour = f"C{i}"
        for which, style in (("truth", "-"), ("prediction", "--")):
            wavenumbers, power = pair[which]
            spectra.plot(wavenumbers[1:], power[1:], style, color=colour, label=f"{which}, lead {lead}")
    spectra.set_xscale("log")
    spectra.set_yscale("log")
    spectra.set_xlabel("wavenumber (the sphere: degree)")
    spectra.set_ylabel("power")
    spectra.set_title(name, fontsize=9)
    spectra.legend(fontsize=7)
    spectra.grid(alpha=0.3, which="both")
    fig.suptitle(title or f"rollout in {report['precision']}", fontsize=11)
    _save(fig, path, dpi=100)


def plot_precision_gap(report: dict, path: Path, title: str = "") -> None:
    """``mpno bounds --rollout``: per lead time, the model error (full precision against the truth) and each
    low precision's gap to the full-precision rollout, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    lead = report["lead_time"]
    ax.plot(lead, report["model_error"], "k-o", markersize=3, label="model error (full vs truth)")
    shown = list(report["model_error"])
    for i, (policy, row) in enumerate(report["policies"].items()):
        ax.plot(lead, row["precision_gap"], "--", marker="s", markersize=3, color=f"C{i}",
                label=f"precision gap: {policy} vs full")
        shown += row["precision_gap"]
    ax.plot(lead, [e / 10 for e in report["model_error"]], ":", color="grey", label="a tenth of the model error")
    ax.set_yscale("log")
    ax.set_xlabel("lead time (steps)")
    ax.set_ylabel("relative error (log scale)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title, fontsize=10)
    _save(fig, path, dpi=110)


@torch.no_grad()
def plot_frames(prediction: torch.Tensor, truth: torch.Tensor, path: Path, title: str = "", frames: int = 4) -> None:
    """A rollout beside the truth: ``frames`` lead times spread over the rollout (columns), truth, prediction
    and error (rows), the first channel; ``prediction`` and ``truth`` are (steps, C, *grid), 1D or 2D (3D: the
    middle slice)."""
    plt = _pyplot()
    steps = len(truth)
    leads = sorted({round(1 + i * (steps - 1) / max(1, frames - 1)) for i in range(min(frames, steps))})
    fig, axes = plt.subplots(3, len(leads), figsize=(3 * len(leads), 7.5), squeeze=False)
    for column, lead in enumerate(leads):
        fields = [truth[lead - 1, 0], prediction[lead - 1, 0].float(), (prediction[lead - 1, 0] - truth[lead - 1, 0])]
        for row, (label, field) in enumerate(zip(("truth", "prediction", "error"), fields)):
            field = field.cpu()
            while field.ndim > 2:
                field = field[field.shape[0] // 2]
            axis = axes[row, column]
            if field.ndim == 1:
                axis.plot(field.numpy())
            else:
                limit = float(truth[lead - 1, 0].abs().max()) if row < 2 else None
                shown = axis.imshow(field.numpy(), cmap="RdBu_r" if row == 2 else "viridis",
                                    vmin=None if limit is None else -limit if truth.min() < 0 else 0, vmax=limit)
                fig.colorbar(shown, ax=axis, fraction=0.046)
                axis.set_xticks([])
                axis.set_yticks([])
            axis.set_title(f"{label}, lead {lead}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=90)
