"""mpno bench: the structure of its report and the numerics of every mode."""

import json
import math

from mpno.run import cli
from mpno.precision import UNIT_ROUNDOFF

import torch


def test_bench_tiny_reports_every_mode(capsys):
    assert cli.main(["bench", "--preset", "tiny", "--device", "cpu", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    precisions = [row["precision"] for row in report["modes"]]
    assert precisions == ["full", "amp/float16", "amp/bfloat16", "mixed/float16", "mixed/bfloat16",
                          "half/float16/tanh", "half/bfloat16/tanh"]
    for row in report["modes"]:
        assert "error" not in row, row
        for key in ("step_seconds", "samples_per_second", "saved_for_backward_bytes", "peak_rss_bytes"):
            assert row[key] > 0 and math.isfinite(row[key])
        assert row["peak_rss_increase_bytes"] >= 0
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
    assert cli.main(["bench", "--preset", "tiny", "--grid", "32", "32", "32"]) == 2
    assert "--grid=[32, 32, 32] gives 3 values but the data have 2 spatial dims" in capsys.readouterr().err
