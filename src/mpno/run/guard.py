"""The regression guard of ``mpno bench``: a saved report (the baseline) against a new one, judged on time
(as a ratio to full precision), memory and accuracy (``docs/benchmarks.md``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..precision import DTYPES, UNIT_ROUNDOFF
from ..writing import write_text
from .bench import BenchConfig, renamed
from .reporting import json_safe

#: What :func:`compare` can judge.
JUDGED = ("time", "memory", "accuracy")
#: Step time × full may exceed the baseline's by this fraction (plus the spread of the timings) by default.
TIME_TOLERANCE = 0.10
#: Memory may grow this fraction above the baseline.
MEMORY_TOLERANCE = 0.02
#: The output's difference from float64 may grow to this multiple of the baseline's (or the unit roundoff).
ACCURACY_FACTOR = 2.0
#: What a baseline records of the environment, and a comparison reports when it changed.
ENVIRONMENT_KEYS = ("torch", "cuda", "device_name", "threads")


def _memory_key(report: dict) -> str:
    """The memory figure judged: the CUDA peak allocated, or the bytes saved for backward on the CPU."""
    return "peak_allocated_bytes" if str(report["device"]).startswith("cuda") else "saved_for_backward_bytes"


def save_baseline(report: dict, path: str | Path) -> None:
    """Write ``report`` (from :func:`run`, with its ``preset``) as a baseline for :func:`compare`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_baseline(path: str | Path, preset: str, config: BenchConfig, device: str) -> dict:
    """The baseline in ``path``, checked to be comparable with a run of ``preset`` (``config``) on ``device``.

    Raises ValueError, naming the problem and the fix, for an unreadable, non-JSON or
    incomplete file, or one measured with another preset, configuration or device type.
    """
    fix = f"write one with: mpno bench --preset {preset} --device {device} --save-baseline {path}"
    try:
        baseline = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"--baseline {path}: cannot read it ({err.strerror or err}); {fix}") from None
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(f"--baseline {path} is not JSON ({err}); {fix}") from None
    where = f"--baseline {path} is not a baseline of mpno bench"
    if not isinstance(baseline, dict):
        raise ValueError(f"{where} (a JSON {type(baseline).__name__}, not an object); {fix}")
    missing = [key for key in ("preset", "config", "device", "torch", "modes") if key not in baseline]
    if missing or not isinstance(baseline["modes"], list) or not baseline["modes"] \
            or not isinstance(baseline["config"], dict):
        raise ValueError(f"{where} (missing or malformed: {', '.join(missing) or 'modes, config'}); {fix}")
    other = "or save a baseline of this run with --save-baseline OTHER.json"
    if baseline["preset"] != preset:
        raise ValueError(f"--baseline {path} was measured with --preset {baseline['preset']} and this run is "
                         f"--preset {preset}; compare like with like (--preset {baseline['preset']}), {other}")
    now = json.loads(json.dumps(asdict(config)))
    defaults = json.loads(json.dumps(asdict(BenchConfig())))  # options newer than a baseline: their defaults
    then = renamed(baseline["config"])
    changed = [f"{key} {then.get(key, defaults[key])!r} there, {value!r} here"
               for key, value in now.items() if then.get(key, defaults[key]) != value]
    if changed:
        raise ValueError(f"--baseline {path} was measured with other options ({'; '.join(changed)}); give the "
                         f"same options, {other}")
    kind, there = device.split(":")[0], str(baseline["device"]).split(":")[0]
    if kind != there:
        raise ValueError(f"--baseline {path} was measured on {there} and this run is on {kind}; memory is "
                         f"measured differently there: use --device {there}, {other}")
    memory = _memory_key(baseline)
    for i, row in enumerate(baseline["modes"]):
        if not isinstance(row, dict) or not isinstance(row.get("precision"), str):
            raise ValueError(f"{where} (modes[{i}] has no precision); {fix}")
        if "error" in row:
            continue
        quartiles = row.get("step_seconds_quartiles")
        bad = [key for key in ("step_seconds", memory, "output_difference_float64") if not _is_number(row.get(key))]
        if not (isinstance(quartiles, list) and len(quartiles) == 2 and all(map(_is_number, quartiles))):
            bad.append("step_seconds_quartiles")
        if bad:
            raise ValueError(f"{where} (mode {row['precision']} lacks {', '.join(bad)}, or they are not numbers); "
                             f"{fix}")
    return baseline


def _spread(row: dict) -> float:
    """The interquartile range of a mode's step times, relative to their median."""
    low, high = row["step_seconds_quartiles"]
    return (high - low) / row["step_seconds"]


def compare(current: dict, baseline: dict, judge=JUDGED,
            time_tolerance: float = TIME_TOLERANCE) -> tuple[list[dict], list[str]]:
    """Each mode of ``current`` against ``baseline`` (two :func:`run` reports of the same configuration).

    Returns the rows of the table (``precision``, ``metric``, ``current``, ``baseline``,
    ``limit``: ``None`` where the metric is shown but not judged, ``ok``) and one
    sentence per regression. Judged where named in ``judge``:

    * ``time``: the median step time as a ratio to ``full`` in the same run (so a
      slower or faster machine does not count) may exceed the baseline's ratio by
      ``time_tolerance`` plus the spread of the timings (the relative interquartile
      ranges of the mode and of ``full``, the larger of the two runs'). Absolute
      times are shown, never judged.
    * ``memory``: the CUDA peak allocated, or the bytes saved for backward on the
      CPU, may exceed the baseline's by 2%.
    * ``accuracy``: the output's relative difference from the float64 model may
      reach the larger of 2× the baseline's and the unit roundoff of the mode's
      dtype (float32 for ``full``).
    """
    rows, failures = [], []

    def add(precision, metric, now, then, limit=None, message=None):
        ok = None if limit is None else bool(now <= limit)  # a NaN fails
        rows.append({"precision": precision, "metric": metric, "current": now, "baseline": then, "limit": limit,
                     "ok": ok})
        if ok is False:
            failures.append(f"{precision}: {message()}")

    before = {row["precision"]: row for row in baseline["modes"]}
    full_now, full_then = current["modes"][0], baseline["modes"][0]
    ratios = "error" not in full_now and "error" not in full_then
    memory = _memory_key(current)
    label = "peak MiB" if memory == "peak_allocated_bytes" else "saved for backward MiB"
    for row in current["modes"]:
        precision, then = row["precision"], before.pop(row["precision"], None)
        if then is None or "error" in row or "error" in then:
            add(precision, "not in the baseline" if then is None else "error now" if "error" in row
                else "error in the baseline", None, None)
            if then is not None and "error" in row and "error" not in then:
                failures.append(f"{precision}: failed now ({row['error']}); it ran in the baseline")
            continue
        add(precision, "step ms", row["step_seconds"] * 1e3, then["step_seconds"] * 1e3)
        if ratios and precision != full_now["precision"]:
            ratio, ratio_then = (r["step_seconds"] / f["step_seconds"] for r, f in ((row, full_now), (then, full_then)))
            spread = max(_spread(row) + _spread(full_now), _spread(then) + _spread(full_then))
            limit = ratio_then * (1 + time_tolerance + spread) if "time" in judge else None
            add(precision, "step time × full", ratio, ratio_then, limit,
                lambda: f"a step takes {ratio:.3f}× full's time, the baseline {ratio_then:.3f}×; limit {limit:.3f} "
                        f"= baseline × (1 + {time_tolerance:.0%} tolerance + {spread:.1%} spread of the timings)")
        used, used_then = row[memory], then[memory]
        limit = used_then * (1 + MEMORY_TOLERANCE) if "memory" in judge else None
        add(precision, label, used / 2**20, used_then / 2**20, None if limit is None else limit / 2**20,
            lambda: f"{label} {used / 2**20:.3f}, the baseline {used_then / 2**20:.3f}; limit {limit / 2**20:.3f} "
                    f"(+{MEMORY_TOLERANCE:.0%})")
        error, error_then = row["output_difference_float64"], then["output_difference_float64"]
        dtype = row.get("dtype") or "float32"
        u = UNIT_ROUNDOFF[DTYPES.get(dtype, torch.float32)]
        limit = max(ACCURACY_FACTOR * error_then, u) if "accuracy" in judge else None
        add(precision, "output diff vs float64", error, error_then, limit,
            lambda: f"the output differs from the float64 model's by {error:.3e}, the baseline by {error_then:.3e}; "
                    f"limit {limit:.3e}, the larger of {ACCURACY_FACTOR:g}× the baseline and the unit roundoff "
                    f"of {dtype} ({u:.3e})")
    for precision in before:
        failures.append(f"{precision}: in the baseline but not measured now")
    return rows, failures


def check_guard(baseline: str | None, save_baseline: str | None, judge, time_tolerance: float | None) -> None:
    """Refuse guard options that judge nothing (no ``baseline``) or a negative tolerance."""
    if baseline is None and (judge or time_tolerance is not None):
        raise ValueError("--judge and --time-tolerance judge a comparison: add --baseline FILE.json")
    if time_tolerance is not None and not time_tolerance >= 0:
        raise ValueError(f"--time-tolerance {time_tolerance} must be a fraction ≥ 0, e.g. 0.1 for 10%")


def guard(report: dict, baseline: dict, path: str, judge=None, time_tolerance: float | None = None
          ) -> tuple[str, list[str]]:
    """``report`` against ``baseline`` (read from ``path``) on ``judge`` (default :data:`JUDGED`): the text
    ``mpno bench --baseline`` prints and the regressions; the comparison is added to ``report``."""
    judge = judge or JUDGED
    tolerance = TIME_TOLERANCE if time_tolerance is None else time_tolerance
    rows, failures = compare(report, baseline, judge, tolerance)
    changes = environment_changes(report, baseline)
    report["comparison"] = {"baseline": path, "judged": list(judge), "time_tolerance": tolerance, "rows": rows,
                            "failures": failures, "environment_changes": changes}
    text = "\n".join([f"\nagainst {path} (judged: {', '.join(judge)}):", comparison_table(rows),
                      "environment changed: " + "; ".join(changes) if changes else "environment: unchanged",
                      "\n".join([f"{len(failures)} regression(s):", *failures]) if failures else "no regression"])
    return text, failures


def environment_changes(current: dict, baseline: dict) -> list[str]:
    """What differs between the environments of two reports, e.g. ``"torch 2.12.0 → 2.13.0"``."""
    return [f"{key} {baseline.get(key)} → {current.get(key)}" for key in ENVIRONMENT_KEYS
            if baseline.get(key) != current.get(key)]


def comparison_table(rows: list[dict]) -> str:
    """The table of :func:`compare`: current and baseline per mode and metric, the limit and the verdict."""
    lines = [f"{'precision':<20} {'metric':<24} {'current':>10} {'baseline':>10} {'limit':>10}  verdict"]
    for row in rows:
        fmt = ".2e" if row["metric"].startswith("output") else ".4g"
        shown = [format(row[k], fmt) if row[k] is not None else "—" for k in ("current", "baseline", "limit")]
        verdict = {None: "shown", True: "ok", False: "REGRESSED"}[row["ok"]]
        lines.append(f"{row['precision']:<20} {row['metric']:<24} {shown[0]:>10} {shown[1]:>10} {shown[2]:>10}  "
                     f"{verdict}")
    return "\n".join(lines)
