"""mpno bench: the structure of its report, the numerics of every mode, and the regression guard."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import mpno

from mpno.ops import devices
from mpno.precision import UNIT_ROUNDOFF, Precision
from mpno.run import bench, cli, counting, guard


def test_bench_tiny_reports_every_mode(capsys):
    assert cli.main(["bench", "--preset", "tiny", "--device", "cpu", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["mpno"], report["torch"], report["device"]) == (mpno.__version__, torch.__version__, "cpu")
    assert report["cpu_matrix_units"] == devices.cpu_matrix_units()
    assert report["native_bfloat16"] == devices.native_bfloat16_cpu()
    precisions = [row["precision"] for row in report["modes"]]
    assert precisions == ["full", "amp/float16", "amp/bfloat16", "mixed/float16", "mixed/bfloat16",
                          "half/float16/tanh", "half/bfloat16/tanh"]
    for row in report["modes"]:
        assert "error" not in row, row
        for key in ("step_seconds", "samples_per_second", "saved_for_backward_bytes", "peak_rss_bytes"):
            assert row[key] > 0 and math.isfinite(row[key])
        assert set(row["ratios_to_full"]) >= {"step_seconds", "samples_per_second", "saved_for_backward_bytes"}
        # The output against full precision (same stabilizer): rounding only, a few dozen
        # roundings amplified by the tiny untrained model's cancellation (measured ≤ 10u).
        u = UNIT_ROUNDOFF[torch.bfloat16 if row["dtype"] == "bfloat16" else torch.float16]
        assert row["output_relative_difference"] < (50 * u if row["mode"] != "full" else 1e-12)
    full = report["modes"][0]
    assert full["ratios_to_full"]["step_seconds"] == 1.0
    half = report["modes"][5]
    assert half["ratios_to_full"]["saved_for_backward_bytes"] < 0.75


def test_bench_rejects_bad_arguments(capsys):
    assert cli.main(["bench", "--preset", "huge"]) == 2
    assert "--preset 'huge'" in capsys.readouterr().err
    for spelling in ("--resolution", "--grid"):  # --grid: the old spelling
        assert cli.main(["bench", "--preset", "tiny", spelling, "32", "32", "32"]) == 2
        assert "--resolution=[32, 32, 32] gives 3 values but the data have 2 spatial dims" in capsys.readouterr().err


# The regression guard (--save-baseline / --baseline): the comparison on synthetic reports, the
# refusals of bad baselines, and the tiny preset against the baseline kept in the repository.

BASELINE = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines" / "tiny-cpu.json"
HALF = "half/float16/tanh"


def _report(seconds=(1.0, 1.2), saved=(1_000_000, 500_000), errors=(1e-7, 1e-3), spread=0.0) -> dict:
    """A two-mode report (full and half/float16) with these figures; ``spread``: relative interquartile range."""
    modes = [{"precision": precision, "mode": precision.split("/")[0], "dtype": dtype, "step_seconds": t,
              "step_seconds_quartiles": [t * (1 - spread / 2), t * (1 + spread / 2)],
              "saved_for_backward_bytes": m, "output_difference_float64": e}
             for (precision, dtype), t, m, e in zip((("full", None), (HALF, "float16")), seconds, saved, errors)]
    return {"preset": "tiny", "config": dataclasses.asdict(bench.PRESETS["tiny"]), "device": "cpu",
            "torch": torch.__version__, "modes": modes}


def _judged(rows, metric):
    return [row for row in rows if row["metric"] == metric and row["limit"] is not None]


def test_compare_judges_time_as_a_ratio_to_full():
    now = _report(seconds=(1.0, 1.2))
    # A slower baseline passes, and so does one from a machine twice as slow at the same ratio.
    for seconds in ((1.0, 1.5), (2.0, 2.4)):
        rows, failures = guard.compare(now, _report(seconds=seconds))
        assert failures == []
        assert [row["ok"] for row in _judged(rows, "step time × full")] == [True]
    # Absolute times are shown, never judged.
    assert all(row["limit"] is None for row in rows if row["metric"] == "step ms")
    # A faster baseline (1.0× full against 1.2× now) fails beyond 10%...
    rows, failures = guard.compare(now, _report(seconds=(1.0, 1.0)))
    assert len(failures) == 1
    assert failures[0].startswith(f"{HALF}: a step takes 1.200× full's time, the baseline 1.000×; limit 1.100")
    assert "10% tolerance" in failures[0]
    # ...but not beyond a wider tolerance, nor within the measured spread (10% + 2 × 10% ≥ 20%),
    assert guard.compare(now, _report(seconds=(1.0, 1.0)), time_tolerance=0.25)[1] == []
    assert guard.compare(now, _report(seconds=(1.0, 1.0), spread=0.1))[1] == []
    assert guard.compare(_report(seconds=(1.0, 1.2), spread=0.1), _report(seconds=(1.0, 1.0)))[1] == []
    # ...and not when time is not judged.
    rows, failures = guard.compare(now, _report(seconds=(1.0, 1.0)), judge=("memory", "accuracy"))
    assert failures == [] and _judged(rows, "step time × full") == []


def test_compare_judges_memory_within_two_percent():
    now = _report(saved=(1_000_000, 500_000))
    assert guard.compare(now, _report(saved=(1_000_000, 495_000)))[1] == []  # +1%
    assert guard.compare(now, _report(saved=(1_100_000, 600_000)))[1] == []  # less than the baseline
    rows, failures = guard.compare(now, _report(saved=(1_000_000, 450_000)))  # +11%
    assert [row["ok"] for row in _judged(rows, "saved for backward MiB")] == [True, False]
    assert failures == [f"{HALF}: saved for backward MiB 0.477, the baseline 0.429; limit 0.438 (+2%)"]
    assert guard.compare(now, _report(saved=(1_000_000, 450_000)), judge=("time", "accuracy"))[1] == []


def test_compare_judges_accuracy_against_twice_the_baseline_or_the_unit_roundoff():
    u = UNIT_ROUNDOFF[torch.float16]
    now = _report(errors=(1e-7, 1e-3))
    assert guard.compare(now, _report(errors=(1e-7, 6e-4)))[1] == []  # limit 1.2e-3
    failures = guard.compare(now, _report(errors=(1e-7, 4e-4)))[1]  # limit 2 × 4e-4 = 8e-4
    assert len(failures) == 1 and "limit 8.000e-04, the larger of 2× the baseline" in failures[0]
    rows, failures = guard.compare(now, _report(errors=(1e-7, 1e-6)))  # 2e-6 < u: the unit roundoff is the limit
    assert len(failures) == 1 and f"limit {u:.3e}" in failures[0] and "unit roundoff of float16" in failures[0]
    assert _judged(rows, "output diff vs float64")[1]["limit"] == u
    assert guard.compare(_report(errors=(1e-7, 4.5e-4)), _report(errors=(1e-7, 1e-6)))[1] == []  # 4.5e-4 ≤ u
    nan = guard.compare(_report(errors=(1e-7, float("nan"))), now)[1]
    assert len(nan) == 1 and nan[0].startswith(f"{HALF}: the output differs from the float64 model's by nan")


def test_compare_reports_failed_and_missing_modes():
    now, baseline = _report(), _report()
    now["modes"][1] = {"precision": HALF, "error": "RuntimeError: boom"}
    failures = guard.compare(now, baseline)[1]
    assert failures == [f"{HALF}: failed now (RuntimeError: boom); it ran in the baseline"]
    failures = guard.compare(_report(), {**baseline, "modes": baseline["modes"][:1]})[1]
    assert failures == []  # a mode the baseline lacks is shown, not judged
    failures = guard.compare({**now, "modes": now["modes"][:1]}, baseline)[1]
    assert failures == [f"{HALF}: in the baseline but not measured now"]


def test_environment_changes_are_named():
    now, baseline = _report(), _report()
    baseline.update(torch="2.0.0", device_name="another CPU")
    now.update(device_name="this CPU")
    assert guard.environment_changes(now, baseline) == [f"torch 2.0.0 → {torch.__version__}",
                                                         "device_name another CPU → this CPU"]


def _refused(capsys, tmp_path, content, *extra) -> str:
    """``mpno bench --baseline`` on a file holding ``content``: exit 2 and a one-line message, no traceback."""
    path = tmp_path / "baseline.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert cli.main(["bench", "--preset", "tiny", "--device", "cpu", "--baseline", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--baseline {path}" in err and "--save-baseline" in err
    return err


def test_bad_baselines_are_refused(capsys, tmp_path):
    report = _report()
    assert "is not JSON" in _refused(capsys, tmp_path, "{not json")
    no_modes = {key: value for key, value in report.items() if key != "modes"}
    assert "missing or malformed: modes" in _refused(capsys, tmp_path, no_modes)
    assert "(a JSON list, not an object)" in _refused(capsys, tmp_path, "[1, 2]")
    del report["modes"][1]["output_difference_float64"]
    assert f"mode {HALF} lacks output_difference_float64" in _refused(capsys, tmp_path, report)
    err = _refused(capsys, tmp_path, {**_report(), "preset": "darcy64"})
    assert "measured with --preset darcy64 and this run is --preset tiny" in err
    err = _refused(capsys, tmp_path, _report(), "--grid", "16")
    assert "resolution [32, 32] there, [16, 16] here" in err
    assert "measured on cuda" in _refused(capsys, tmp_path, {**_report(), "device": "cuda"})
    missing = tmp_path / "absent.json"
    assert cli.main(["bench", "--preset", "tiny", "--baseline", str(missing)]) == 2
    assert f"--baseline {missing}: cannot read it" in capsys.readouterr().err
    assert cli.main(["bench", "--preset", "tiny", "--judge", "memory"]) == 2
    assert "add --baseline FILE.json" in capsys.readouterr().err


@pytest.fixture
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and a shared machine can stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_against_the_repository_baseline(capsys, tmp_path, one_thread):
    """The CI guard: memory (bytes saved for backward) and accuracy of every mode as in the kept baseline.

    Measured in this process (``--in-process``): the figures judged do not depend on it.
    """
    command = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--in-process",
               "--judge", "memory", "accuracy", "--json"]
    assert cli.main([*command, "--baseline", str(BASELINE)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    comparison = report["comparison"]
    assert comparison["failures"] == [] and "no regression" in out
    judged = [row for row in comparison["rows"] if row["limit"] is not None]
    assert len(judged) == 2 * len(bench.POLICIES) and all(row["ok"] for row in judged)
    assert {row["metric"] for row in judged} == {"saved for backward MiB", "output diff vs float64"}
    for row in report["modes"]:  # the float64 reference: rounding only
        u = UNIT_ROUNDOFF[torch.bfloat16 if row["dtype"] == "bfloat16" else torch.float16]
        assert 0 < row["output_difference_float64"] < (50 * u if row["mode"] != "full" else 1e-6)
    # The same run against a baseline whose half path saved 10% less: exit 1, naming the mode.
    doctored = json.loads(BASELINE.read_text())
    doctored["modes"][5]["saved_for_backward_bytes"] = int(0.9 * doctored["modes"][5]["saved_for_backward_bytes"])
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(doctored))
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--baseline", str(path)])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    failures = json.loads(captured.out.strip().splitlines()[-1])["comparison"]["failures"]
    assert len(failures) == 1 and failures[0].startswith(f"{HALF}: saved for backward MiB")
    assert f"1 regression(s) against {path}" in captured.err


def test_gino_reference_in_float64(one_thread):
    """The gino preset's model and data, smaller: half against the float64 model, and its memory saving."""
    config = dataclasses.replace(bench.PRESETS["gino"], hidden_channels=4, n_layers=1, n_modes=(4, 4, 4),
                                 resolution=(12, 12, 12), batch_size=1)
    full, half = (bench.measure(config, Precision(mode), torch.device("cpu"), steps=1, warmup=0)
                  for mode in ("full", "half"))
    assert 0 < full["output_difference_float64"] < 1e-6
    assert 0 < half["output_difference_float64"] < 50 * UNIT_ROUNDOFF[torch.float16]
    assert half["saved_for_backward_bytes"] < 0.6 * full["saved_for_backward_bytes"]


def test_inference_times_forward_passes_only(capsys, one_thread):
    assert cli.main(["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--inference",
                     "--in-process", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["config"]["inference"] is True
    for row in report["modes"]:
        assert "saved_for_backward_bytes" not in row and row["step_seconds"] > 0
        u = UNIT_ROUNDOFF[torch.bfloat16 if row["dtype"] == "bfloat16" else torch.float16]
        assert row["output_difference_float64"] < (50 * u if row["mode"] != "full" else 1e-6)


def test_op_counter_counts_kernels_and_leaves_views_apart():
    from mpno.run.profiling import OpCounter

    x = torch.randn(4, 3, 2)
    with OpCounter() as counter:
        y = x.permute(2, 0, 1).reshape(2, 12).t().unsqueeze(0).expand(3, 12, 2)  # views only
        z = (y * 2).sum()  # two kernels
        x.view(-1)[1:5].detach()
    assert counter.total == 2 and counter.kernels == {"mul": 1, "sum": 1}
    assert {"permute", "view", "t", "unsqueeze", "expand", "slice", "detach"} <= set(counter.views)
    assert float(z) == pytest.approx(6 * float(x.sum()), rel=1e-5)  # the views changed no value


#: FNO-2D, width 32, 16 modes, 4 layers, batch 2, 32²: the configuration of docs/benchmarks.md's counts.
COUNT_CONFIG = dataclasses.replace(bench.PRESETS["darcy64"], batch_size=2, resolution=(32, 32))
#: neuraloperator 2.0.0's count there (benchmarks/peer_neuraloperator.py --count-ops, torch 2.13).
NEURALOPERATOR_FULL_OPS = 221


def test_kernels_per_step_stay_within_the_budget():
    """A full step dispatches no more operations than neuraloperator's at the same configuration, and mixed and
    half on the accelerator path at most 1.15× full: the launch budget of docs/benchmarks.md."""
    full = counting.count_ops(COUNT_CONFIG, Precision("full"), "accelerator")
    assert full["ops"] <= NEURALOPERATOR_FULL_OPS
    assert counting.count_ops(COUNT_CONFIG, Precision("full"), "cpu")["ops"] == full["ops"]  # no device branch in full
    for policy in (Precision("mixed", "float16"), Precision("half", "float16")):
        assert counting.count_ops(COUNT_CONFIG, policy, "accelerator")["ops"] <= 1.15 * full["ops"], policy


def test_the_accelerator_path_is_the_cuda_path():
    """On meta tensors half float16 transforms of a power-of-two grid are cuFFT calls and products are native;
    on the CPU they are the DFT's emulated products; bfloat16 is never transformed by torch.fft in half."""
    config = dataclasses.replace(bench.PRESETS["tiny"], resolution=(16, 16))
    fft = ("_fft_r2c", "_fft_c2c", "_fft_c2r")
    half = counting.count_ops(config, Precision("half", "float16"), "accelerator")["kernels"]
    assert all(half.get(op, 0) > 0 for op in fft)
    assert half.get("_to_copy", 0) < 10  # input, output, parameters: no upcasts around products
    cpu = counting.count_ops(config, Precision("half", "float16"), "cpu")["kernels"]
    assert not any(cpu.get(op, 0) for op in fft) and cpu["_to_copy"] > 20
    bf16 = counting.count_ops(config, Precision("half", "bfloat16"), "accelerator")["kernels"]
    assert not any(bf16.get(op, 0) for op in fft)


def test_count_ops_cli_reports_both_paths(capsys):
    assert cli.main(["bench", "--preset", "tiny", "--count-ops", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["paths"] == ["cpu", "accelerator"]
    assert [row["precision"] for row in report["modes"]] == [str(p) for p in bench.POLICIES]
    for row in report["modes"]:
        for path in report["paths"]:
            assert row[path]["ops"] == sum(row[path]["kernels"].values()) > 0
    assert report["modes"][0]["cpu"]["ratio_to_full"] == 1.0
    assert "accelerator ops" in out.splitlines()[0]
    assert cli.main(["bench", "--preset", "tiny", "--count-ops", "--baseline", "x.json"]) == 2


def test_precisions_chooses_the_policies_measured(capsys, one_thread):
    assert cli.main(["bench", "--preset", "tiny", "--precisions", "half/bfloat16", "--steps", "1", "--in-process",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["precision"] for row in report["modes"]] == ["full", "half/bfloat16/tanh"]
    assert cli.main(["bench", "--preset", "tiny", "--precisions", "half", "--save-baseline", "b.json"]) == 2


@pytest.mark.slow
def test_bench_times_the_compiled_model(capsys, one_thread):
    assert cli.main(["bench", "--preset", "tiny", "--compile", "--precisions", "mixed/float16", "--steps", "1",
                     "--in-process", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["config"]["compile"] is True and all(row["compiled"] for row in report["modes"])
    eager = bench.measure(bench.PRESETS["tiny"], Precision("mixed", "float16"), torch.device("cpu"), steps=1)
    mixed = report["modes"][1]
    assert mixed["output_relative_difference"] == pytest.approx(eager["output_relative_difference"],
                                                                abs=UNIT_ROUNDOFF[torch.float16])


def test_a_baseline_written_with_the_old_option_names_still_loads(tmp_path):
    old = {{new: old for old, new in bench.OLD_NAMES.items()}.get(key, key): value for key, value in dataclasses.asdict(bench.PRESETS["tiny"]).items()}
    assert {"width", "modes", "layers", "grid", "batch"} <= set(old)
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**_report(), "config": old}))
    assert guard.load_baseline(path, "tiny", bench.PRESETS["tiny"], "cpu")["config"] == json.loads(json.dumps(old))
    path.write_text(json.dumps({**_report(), "config": {**old, "width": 99}}))
    with pytest.raises(ValueError, match="hidden_channels 99 there, 8 here"):
        guard.load_baseline(path, "tiny", bench.PRESETS["tiny"], "cpu")
