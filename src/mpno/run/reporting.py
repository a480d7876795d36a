"""What a run leaves behind: metrics (CSV, TensorBoard), plots, and the final table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch


class MetricsLog:
    """One row per epoch in ``metrics.csv`` (and TensorBoard scalars when it is installed)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def append(self, row: dict) -> None:
        rows = self.rows() + [{k: str(v) for k, v in row.items()}]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def truncate(self, epochs: int) -> None:
        """Keep the rows of the first ``epochs`` epochs (when resuming)."""
        rows = [r for r in self.rows() if int(r["epoch"]) <= epochs]
        if rows:
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        elif self.path.exists():
            self.path.unlink()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training loss and every test loss against epochs, log scale, with the precision of each epoch."""
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in [k for k in rows[0] if k == "train_loss" or "/" in k]:
        values = [float(r[key]) for r in rows]
        ax.plot(epochs, values, marker="o", markersize=3, label=key.replace("train_loss", "train"))
    changes = [(e, r["precision"]) for e, r, prev in zip(epochs, rows, [None] + rows[:-1])
               if prev is None or prev["precision"] != r["precision"]]
    for epoch, precision in changes:
        ax.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.text(epoch - 0.4, 0.98, precision, transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path, dpi=110)


@torch.no_grad()
def plot_samples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path, title: str = "") -> None:
    """Input, truth, prediction and error for a few samples (first channel), 1D or 2D."""
    plt = _pyplot()
    model.eval()
    prediction = model(x).float().cpu().numpy()
    x, y = x.float().cpu().numpy(), y.float().cpu().numpy()
    count = len(x)
    fig, axes = plt.subplots(count, 4, figsize=(12, 2.8 * count), squeeze=False)
    for i in range(count):
        panels = [("input", x[i, 0]), ("truth", y[i, 0]), ("prediction", prediction[i, 0]),
                  ("error", prediction[i, 0] - y[i, 0])]
        for ax, (label, field) in zip(axes[i], panels):
            if field.ndim == 1:
                ax.plot([j / len(field) for j in range(len(field))], field)
            else:
                picture = field.T if field.ndim == 2 else field[field.shape[0] // 2].T  # 3D: the middle slice
                limit = abs(picture).max() if label == "error" else None
                image = ax.imshow(picture, origin="lower", extent=(0, 1, 0, 1),
                                  cmap="RdBu_r" if label == "error" else "viridis",
                                  vmin=-limit if limit else None, vmax=limit)
                fig.colorbar(image, ax=ax, fraction=0.046)
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
    """Discretisation error and each dtype's precision error against resolution, log-log."""
    plt = _pyplot()
    levels = report["levels"]
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
    _save(fig, path, dpi=110)


def bounds_table(report: dict) -> str:
    """The ``mpno bounds`` table: per dtype, both errors, their bounds, the ratio and the verdict."""
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
    if "model" in report:
        model = report["model"]
        lines += ["", f"model {model['checkpoint']} in {model['precision']} against float64 (relative errors):"]
        lines += [f"  {layer['layer']:<12} {layer['relative_error']:.3e}" for layer in model["layers"]]
        verdict = "safe" if model["safe"] else "NOT SAFE"
        lines.append(f"  output: precision error {model['precision_error']:.3e}, the model's discretisation "
                     f"error (n vs n/2) {model['discretization_error']:.3e}, ratio {model['ratio']:.3g}: {verdict}")
    return "\n".join(lines)
