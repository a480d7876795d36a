"""Deploying a trained operator outside mpno (``mpno export``): a ``torch.export`` program (``pt2``), loadable
with ``torch.export.load`` and nothing else, or an ONNX model, each rounding where the model rounds in its
precision; or a safetensors weight file (:func:`mpno.run.checkpoint.save_weights`). ``docs/deploy.md`` says
what each keeps."""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch

from ..nn.normalized import NormalizedOperator
from ..nn.registry import model_kind
from ..writing import check_output, open_replacing
from . import checkpoint, domains
from .assembly import resolve_device
from .evaluation import checkpoint_model

FORMATS = ("pt2", "onnx", "safetensors")

#: What an ONNX export needs (the extra ``mpno[export]``): torch's exporter writes the model with onnx and
#: onnxscript, and ONNX Runtime checks it against mpno's output.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")

#: What torch 2.13 says while it exports and saves a program, about its own internals: a pytree class it
#: deprecates, and parameters stored as views of one tensor (read back correctly on the CPU, where mpno exports).
TORCH_NOTICES = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "No complete tensor found in the group")

#: The largest grid size a program accepts along a dynamic dimension.
LARGEST_GRID = 2**16


def export(path: str, fmt: str, out: str, precision: str | None = None, example_shape: Sequence[int] | None = None,
           device: str = "cpu", overwrite: bool = False) -> dict:
    """Export the model of the checkpoint or weight file ``path`` to ``out`` as ``fmt`` (one of
    :data:`FORMATS`), in ``precision`` (default: as saved); for ``pt2`` and ``onnx``, traced on an input of
    ``example_shape`` (default :func:`example_shape_of`) on ``device``. What the model's domain cannot export
    is refused (its ``export`` and ``onnx`` capabilities). Writes ``out`` whole or not at all and returns what
    was exported: the format, precision, dynamic dimensions, and the largest difference between the exported
    model and mpno's on the example."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: export as one of {', '.join(FORMATS)}")
    out = check_output(out, overwrite, inputs=(path,))
    suffix = {"pt2": ".pt2", "onnx": ".onnx", "safetensors": ".safetensors"}[fmt]
    if out.suffix != suffix:
        raise ValueError(f"--out {out}: a {fmt} file is named *{suffix}")
    model, _ = checkpoint_model(path, resolve_device(device), precision)
    model.eval()
    record = {"format": fmt, "out": str(out), "kind": model_kind(model.operator), "precision": str(model.precision)}
    if fmt == "safetensors":
        checkpoint.save_weights(model, out)
        return {**record, "dynamic": "any batch and grid (mpno.load_model rebuilds the model)"}
    domain = domains.DOMAINS[model.operator.domain]
    domain.require("export")
    if fmt == "onnx":
        domain.require("onnx")
        _check_onnx(model)
        model.set_precision(model.precision.replace(fft_backend="dft"))
    return {**record, **_export_program(model, out, example_shape, fmt, domain)}


def _check_onnx(model: NormalizedOperator) -> None:
    """Refuse bfloat16 (ONNX Runtime's CPU provider has no bfloat16 kernels for the products), or an ONNX export
    without the packages that write it and check it (:data:`ONNX_PACKAGES`)."""
    if model.precision.mode != "full" and model.precision.dtype == "bfloat16":
        raise ValueError(f"--format onnx: {model.precision} would run bfloat16 products, which ONNX Runtime's CPU "
                         "provider does not have; export --precision full or a float16 policy, or --format pt2")
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--format onnx needs {' and '.join(missing)}: pip install 'mpno[export]'")


def example_shape_of(model: NormalizedOperator, domain) -> tuple[int, ...]:
    """The input an export is traced on when none is given: two samples (a batch of 1 would be taken for a
    fixed size) of the operator's input channels on the domain's example grid for its modes
    (:meth:`mpno.run.domains.base.Domain.example_grid`)."""
    operator = model.operator
    return (2, operator.in_channels, *domain.example_grid(operator.n_modes))


def _export_program(model: NormalizedOperator, out: Path, example_shape: Sequence[int] | None, fmt: str,
                    domain) -> dict:
    """``torch.export`` of ``model`` written to ``out`` as ``fmt`` (``pt2``, or ``onnx`` through torch's ONNX
    exporter): the batch dimension dynamic, and the grid dimensions too where the operator allows
    (:attr:`mpno.nn.operator.Operator.exports_any_grid`); checked against
    the model on the example (an ONNX model in ONNX Runtime)."""
    operator = model.operator
    shape = tuple(example_shape or example_shape_of(model, domain))
    if len(shape) != 2 + len(operator.n_modes) or shape[1] != operator.in_channels or shape[0] < 2 \
            or any(n < m for n, m in zip(shape[2:], operator.n_modes)):
        raise ValueError(f"--example-shape {' '.join(map(str, shape))}: give a batch of at least 2, "
                         f"{operator.in_channels} channels and {len(operator.n_modes)} grid sizes of at least the "
                         f"modes ({' '.join(map(str, operator.n_modes))})")
    device = next(model.parameters()).device
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    dims = {0: torch.export.Dim("batch", min=1)}
    any_grid = operator.exports_any_grid
    if any_grid:  # the smallest grid the program takes is what the traced checks require: read it back below
        dims.update({2 + i: torch.export.Dim.AUTO(max=LARGEST_GRID) for i in range(len(operator.n_modes))})
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            for message in TORCH_NOTICES:
                warnings.filterwarnings("ignore", message=message)
            if fmt == "pt2":
                program = torch.export.export(model, (example,), dynamic_shapes=(dims,)).run_decompositions({})
            else:
                onnx_program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=(dims,),
                                                 verbose=False)
                program = onnx_program.exported_program
    except Exception as err:  # the exporters' errors are many and deep: say which model failed, and how
        raise ValueError(f"the {fmt} export could not trace this {model_kind(operator).upper()} in "
                         f"{model.precision} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); export "
                         "--format safetensors and run it through mpno.load_model") from err
    seconds = time.perf_counter() - start
    with open_replacing(out) as file, warnings.catch_warnings():
        for message in TORCH_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        if fmt == "pt2":
            torch.export.save(program, file)
        else:
            file.write(onnx_program.model_proto.SerializeToString())
    with torch.no_grad():
        exported = program.module()(example) if fmt == "pt2" else onnx_runtime_output(out, example)
        difference = (exported.to(device) - model(example)).abs().max().item()
    grid = f"fixed at {'×'.join(map(str, shape[2:]))}"
    if any_grid:
        sizes = program.graph_signature.user_inputs[0]
        placeholder = next(node for node in program.graph.nodes if node.name == sizes)
        ranges = [program.range_constraints.get(getattr(n, "node", None) and n.node.expr) for n in
                  placeholder.meta["val"].shape[2:]]
        grid = ", ".join(f"{int(r.lower)} to {int(r.upper)} points" if r is not None else "fixed"
                         for r in ranges)
    return {"example_shape": list(shape), "dynamic": f"batch; grid: {grid}", "seconds": seconds,
            "largest_difference_on_example": difference,
            "size_bytes": os.path.getsize(out)}


def onnx_runtime_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The ONNX model at ``path`` run by ONNX Runtime (CPU) on ``x``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0])
