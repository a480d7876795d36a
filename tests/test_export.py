"""mpno export: torch.export programs that run without mpno and compute what the model computes, in its
precision; safetensors weight files that rebuild the model exactly and refuse tampering; bad input."""

import copy
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

from mpno import Precision, load_model
from mpno.nn.normalized import NormalizedOperator
from mpno.nn.registry import build_operator
from mpno.run import checkpoint, cli, domains
from mpno.run.export import export

#: Each operator small, with the grid a program is traced on and a second grid it is run on (the same where
#: the program's grid is fixed).
OPERATORS = {"fno": ((4, 4), {}, (8, 8), (12, 10)), "tfno": ((4, 4), {"rank": 0.5}, (8, 8), (10, 12)),
             "uno": ((4, 4), {}, (8, 8), (8, 8)), "sfno": ((8, 8), {}, (8, 16), (8, 16))}

#: How far an exported program may differ from the eager model: a few unit roundoffs of the precision's
#: half dtype (float32's for full), relative to the output's size.
ROUNDOFF = {"full": 2.0**-24, "mixed/float16": 2.0**-11, "mixed/bfloat16": 2.0**-8}


def saved(tmp_path, kind: str, policy: str) -> tuple:
    modes, extra, _, _ = OPERATORS[kind]
    torch.manual_seed(0)
    model = NormalizedOperator(build_operator(kind, 2, 1, modes, hidden_channels=4, n_layers=2, **extra)).eval()
    model.set_precision(Precision.parse(policy))
    path = tmp_path / f"{kind}.pt"
    checkpoint.save({"model": model.state_dict(), "operator": model.spec(),
                     "precision": dataclasses.asdict(model.precision)}, path)
    return model, path


def without_mpno(script: str) -> None:
    """Run ``script`` in a fresh interpreter in which importing mpno fails."""
    code = "import sys; sys.modules['mpno'] = None\n" + script
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


#: How a program is run without mpno: pt2 by torch.export.load, onnx by ONNX Runtime.
RUN = {"pt2": "y = torch.export.load(r'{out}').module()(x)\n",
       "onnx": "import onnxruntime\ns = onnxruntime.InferenceSession(r'{out}', providers=['CPUExecutionProvider'])\n"
               "y = torch.from_numpy(s.run(None, {{s.get_inputs()[0].name: x.numpy()}})[0])\n"}


@pytest.mark.parametrize("kind", sorted(OPERATORS))
def test_an_exported_program_runs_without_mpno_and_matches_the_model(kind, tmp_path):
    """pt2 for every operator, onnx for those ONNX holds; full and one low precision; on a second grid and batch
    where the program's grid is dynamic."""
    _, _, example, other = OPERATORS[kind]
    formats = ("pt2", "onnx") if domains.of(kind).has("onnx") else ("pt2",)
    if "onnx" in formats:
        pytest.importorskip("onnxruntime")
    inputs, runs = {}, []
    for fmt in formats:
        low = "mixed/float16" if fmt == "onnx" or kind in ("fno", "tfno") else "mixed/bfloat16"
        for policy in ("full", low):
            model, path = saved(tmp_path, kind, policy)
            out = tmp_path / f"{kind}_{policy.replace('/', '_')}.{fmt}"
            report = export(str(path), fmt, str(out))
            assert report["example_shape"] == [2, 2, *example]
            assert report["largest_difference_on_example"] <= 4 * ROUNDOFF[policy] * 2 * 2 * math.prod(example)
            assert report["dynamic"].startswith("batch; grid: " + ("4 to" if kind in ("fno", "tfno") else "fixed"))
            x = torch.randn(3, 2, *other, dtype=torch.float32)
            exact = copy.deepcopy(model).double()
            exact.set_precision(Precision("full"))
            with torch.no_grad():
                inputs[out] = (policy, model(x), exact(x.double()).float())
            torch.save(x, tmp_path / f"x_{out.name}.pt")
            runs.append(out)
    without_mpno("import torch\n" + "".join(
        f"x = torch.load(r'{tmp_path}/x_{out.name}.pt')\n" + RUN[out.suffix[1:]].format(out=out)
        + f"torch.save(y, r'{tmp_path}/y_{out.name}.pt')\n" for out in runs))
    for out in runs:
        policy, expected, exact = inputs[out]
        y = torch.load(tmp_path / f"y_{out.name}.pt")
        assert y.shape == expected.shape and y.dtype == expected.dtype
        if out.suffix == ".onnx" and policy != "full":
            # ONNX Runtime keeps some float16 steps in float32: not mpno's bits, but no less accurate
            assert (y - exact).norm() <= 1.5 * (expected - exact).norm()
            continue
        # the ONNX model transforms in full precision by DFT products, sums of n terms: √n roundoffs more
        spread = math.prod(other) ** 0.5 if out.suffix == ".onnx" else 1.0
        assert (y - expected).norm() <= 4 * spread * ROUNDOFF[policy] * expected.norm()


def test_safetensors_rebuild_the_model_exactly_and_refuse_tampering(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model, path = saved(tmp_path, "fno", "mixed/bfloat16")
    out = tmp_path / "fno.safetensors"
    assert export(str(path), "safetensors", str(out))["precision"] == "mixed/bfloat16"
    x = torch.randn(2, 2, 10, 10)
    loaded = load_model(out)
    assert str(loaded.precision) == "mixed/bfloat16"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with safe_open(out, "pt") as f:  # the safetensors library alone reads it
        record = json.loads(f.metadata()["mpno"])
    tensors = load_file(out)
    assert record["operator"] == model.spec() and set(tensors) == set(model.state_dict())

    tampered = {**record, "operator": {**record["operator"], "arguments": {**record["operator"]["arguments"],
                                                                        "hidden_channels": 8}}}
    save_file(tensors, tmp_path / "record.safetensors", metadata={"mpno": json.dumps(tampered)})
    with pytest.raises(checkpoint.CheckpointError, match="record.safetensors: its architecture record or tensors "
                                                         "changed after it was written"):
        load_model(tmp_path / "record.safetensors")
    resized = {**tensors, "operator.projection.fc2.weight": tensors["operator.projection.fc2.weight"][:, :1]}
    state = {"model": resized, "operator": record["operator"], "precision": record["precision"]}
    forged = {**record, "sha256": checkpoint.digest(state)}  # consistent digest, tensors that do not fit
    save_file(resized, tmp_path / "shapes.safetensors", metadata={"mpno": json.dumps(forged)})
    with pytest.raises(checkpoint.CheckpointError, match="shapes.safetensors: the weights do not fit the "
                                                         "architecture it records"):
        load_model(tmp_path / "shapes.safetensors")
    save_file(tensors, tmp_path / "plain.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="plain.safetensors: a safetensors file without mpno's"):
        load_model(tmp_path / "plain.safetensors")


def test_bad_exports_fail_in_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    _, path = saved(tmp_path, "fno", "full")
    data = tmp_path / "data.pt"
    torch.save({"x": torch.zeros(2, 1, 8, 8), "y": torch.zeros(2, 1, 8, 8)}, data)
    (tmp_path / "taken.pt2").write_text("keep")
    gino = NormalizedOperator(build_operator("gino", 1, 1, (4, 4, 4), hidden_channels=4, n_layers=1))
    checkpoint.save({"model": gino.state_dict(), "operator": gino.spec(),
                     "precision": dataclasses.asdict(gino.precision)}, tmp_path / "gino.pt")
    cases = [([str(data), "--format", "pt2", "--out", str(tmp_path / "a.pt2")], "data.pt"),
             ([str(path), "--format", "pt2", "--out", str(tmp_path / "taken.pt2")], "already exists"),
             ([str(path), "--format", "pt2", "--out", str(tmp_path / "b.onnx")], "a pt2 file is named *.pt2"),
             ([str(saved(tmp_path, "sfno", "full")[1]), "--format", "onnx", "--out", str(tmp_path / "c.onnx")],
              "spherical harmonic transforms are complex-valued"),
             ([str(path), "--format", "onnx", "--precision", "mixed/bfloat16", "--out", str(tmp_path / "g.onnx")],
              "bfloat16 products, which ONNX Runtime's CPU provider does not have"),
             ([str(tmp_path / "gino.pt"), "--format", "pt2", "--out", str(tmp_path / "d.pt2")],
              "search the neighbourhoods of their input points"),
             ([str(path), "--format", "pt2", "--out", str(tmp_path / "e.pt2"), "--example-shape", "1", "2", "8",
               "8"], "a batch of at least 2")]
    for argv, message in cases:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("mpno export: error: ") and message in err[-1], err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else
                        find_spec(name, *a))
    assert cli.main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "h.onnx")]) == 2
    assert "--format onnx needs onnxruntime: pip install 'mpno[export]'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.pt", "fno.pt", "gino.pt", "sfno.pt", "taken.pt2"]
    assert (tmp_path / "taken.pt2").read_text() == "keep"
    with pytest.raises(SystemExit):
        cli.main(["export", str(path), "--format", "tflite", "--out", str(tmp_path / "f.tflite")])
