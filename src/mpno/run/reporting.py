"""What a run leaves behind: metrics (CSV, TensorBoard), plots, and the final table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from ..writing import open_replacing, refuse_link


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
        fig.tight_layout()
        with open_replacing(path) as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    finally:
        _pyplot().close(fig)


def plot_curves(rows: list[dict], path: Path, loss_name: str | None = None) -> None:
    """Training loss (``loss_name``, e.g. ``"l2"``) and every test metric against epochs, log scale,
    with the precision of each phase."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    labels = {"l2": "relative L2", "h1": "relative H1", "mse": "MSE"}  # the losses of mpno.nn.losses
    epochs = [int(r["epoch"]) for r in rows]
    train_label = labels.get(loss_name, loss_name or "loss")
    tests = {key: key.rpartition("/") for key in rows[0] if "/" in key}  # <test set>/<loss>
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [float(r["train_loss"]) for r in rows], "k-o", markersize=3, label=f"train ({train_label})")
    for key, (name, _, loss) in tests.items():
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", markersize=3, linestyle="--",
                label=f"{name} ({labels.get(loss, loss)})")
    changes = [(e, r["precision"]) for e, r, prev in zip(epochs, rows, [None] + rows[:-1])
               if prev is None or prev["precision"] != r["precision"]]
    for epoch, precision in changes:
        ax.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.text(epoch - 0.4, 0.98, precision, transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
    metrics = ", ".join(dict.fromkeys(labels.get(loss, loss) for _, _, loss in tests.values()))
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"train: {train_label}" + (f"; test: {metrics}" if metrics else ""))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
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


def plot_bounds(report: dict, path: Path, title: str = "") -> None:
    """Discretisation error and each dtype's precision error against resolution, log-log; with a model
    audit, a second panel: each layer's relative error against float64 and the model's discretisation error."""
    plt = _pyplot()
    levels = report["levels"]
    if "model" in report:
        fig, (ax, audit) = plt.subplots(1, 2, figsize=(12, 4.5))
    else:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(levels, report["curves"]["discretization"], "k-o", label="discretisation error (estimated)")
    for dtype, style in (("float16", "C0--s"), ("bfloat16", "C1--^"), ("float32", "C2--v")):
        values = [v if math.isfinite(v) else float("nan") for v in report["curves"][dtype]]
        ax.plot(levels, values, style, label=f"precision error, {dtype}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("grid points per dimension")
    ax.set_ylabel("max error of kept Fourier coefficients")
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
        audit.set_ylabel("relative error of the layer's output against float64")
        audit.set_title(f"model audit: {'safe' if model['safe'] else 'NOT SAFE'} (output ratio {model['ratio']:.2g})",
                        fontsize=10)
        audit.grid(alpha=0.3, which="both")
        audit.legend(fontsize=8)
    _save(fig, path, dpi=110)


def bounds_table(report: dict) -> str:
    """The ``mpno bounds`` table: per dtype, both errors, their bounds, the ratio and the verdict,
    and what a half verdict of NOT SAFE means."""
    import textwrap

    grid = "×".join(map(str, report["grid"]))
    modes = "×".join(map(str, report["n_modes"]))
    disc = report["discretization"]
    rate = f"{disc['rate']:.2f}" if disc["rate"] is not None else "not fitted (round-off or one level)"
    lines = [f"{report['data']}: field {report['field']}, {report['samples']} samples, grid {grid}, modes {modes}",
             f"B = {report['B']:.3g}, M ≈ {report['M']:.3g}; discretisation rate {rate} over grids "
             + ", ".join(map(str, report["levels"]))]
    if disc["storage_floor"]:
        lines.append(f"the coarsened coefficients agree to {disc['estimate']:.1e}: the data's float32 storage "
                     f"rounding ({disc['error']:.1e}) is the larger error they carry")
    lines += ["",
             f"{'dtype':<9} {'discret. err':>12} {'precision err':>13} {'discret. bound':>14} "
             f"{'precision bound':>15} {'ratio':>9}  verdict"]
    for dtype, row in report["dtypes"].items():
        verdict = "safe" if row["safe"] else "NOT SAFE"
        lines.append(f"{dtype:<9} {row['discretization_error']:>12.3e} {row['precision_error']:>13.3e} "
                     f"{row['discretization_bound']:>14.3e} {row['precision_bound']:>15.3e} "
                     f"{row['ratio']:>9.3g}  {verdict}")
    lines.append(f"(safe: precision error ≤ {report['threshold']:g} × discretisation error)")
    unsafe = [dtype for dtype in ("float16", "bfloat16") if not report["dtypes"][dtype]["safe"]]
    if unsafe:
        carried = ", here only their float32 storage rounding (smooth or band-limited data)" \
            if disc["storage_floor"] else ""
        audit = "the model audit below" if "model" in report else "the model audit (--model RUN/best.pt)"
        overflow = " float16 overflows on these values; bfloat16 has float32's range." \
            if math.isinf(report["dtypes"]["float16"]["precision_error"]) else ""
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
