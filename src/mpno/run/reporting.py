"""What a run leaves behind in text: metrics (CSV, TensorBoard), lines per epoch, and the final tables (the
plots are in :mod:`mpno.run.plots`)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

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


def symmetry_table(errors: dict[str, dict[str, float]]) -> str:
    """``mpno evaluate --symmetry-check``: per test set and symmetry, ‖M(g x) − g M(x)‖ / ‖g M(x)‖."""
    names = list(dict.fromkeys(name for values in errors.values() for name in values))
    width = max([len("symmetry")] + [len(name) for name in names])
    lines = ["", "how far the model is from commuting with each symmetry (‖M(g x) − g M(x)‖ / ‖g M(x)‖):",
             f"{'symmetry':<{width}}  " + "  ".join(f"{test:>10}" for test in errors)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{values.get(name, math.nan):>10.4f}"
                                                      for values in errors.values()))
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


def rollout_table(report: dict) -> str:
    """The ``mpno evaluate --rollout`` table: the error of every test set at each lead time."""
    names = list(report["rollout"])
    lines = [f"rollout of {report['steps']} steps in {report['precision']} (relative L2, mean over trajectories)",
             f"{'lead':>5} " + " ".join(f"{name[:24]:>24}" for name in names)]
    for k in range(report["steps"]):
        lines.append(f"{k + 1:>5} " + " ".join(f"{report['rollout'][name]['l2'][k]:>24.4f}" for name in names))
    return "\n".join(lines)


def precision_gap_table(report: dict) -> str:
    """The ``mpno bounds --rollout`` table: per lead time the model error and each low precision's gap to full
    precision, then each precision's verdict: where its gap reaches a tenth of the model error, and whether the
    bound ``e_n ≤ ε (Lⁿ − 1) / (L − 1)`` held."""
    policies = list(report["policies"])
    lines = [f"{report['trajectories']} trajectories of {report['data']}, rolled out {report['steps']} steps "
             "(relative to the full-precision rollout; model error: full against the truth)",
             f"{'lead':>5} {'model error':>12} " + " ".join(f"{p[:20]:>20}" for p in policies)]
    for k in range(report["steps"]):
        lines.append(f"{k + 1:>5} {report['model_error'][k]:>12.4e} "
                     + " ".join(f"{report['policies'][p]['precision_gap'][k]:>20.3e}" for p in policies))
    for policy, row in report["policies"].items():
        tenth = row["gap_reaches_tenth_of_model_error_at"]
        reached = f"reaches a tenth of the model error at lead {tenth}" if tenth else \
            f"stays below a tenth of the model error for all {report['steps']} steps"
        lines.append(f"{policy}: the gap {reached}; one-step gap ε = {row['one_step_gap']:.3e}, growth factor "
                     f"L = {row['growth_factor']:.3g}, bound at lead {report['steps']} {row['bound'][-1]:.3e} against "
                     f"the largest gap {row['largest_gap'][-1]:.3e}: "
                     f"{'holds' if row['bound_holds'] else 'EXCEEDED'}")
    return "\n".join(lines)
