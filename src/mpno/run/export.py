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
from . import checkpoint
from .assembly import resolve_device
from .evaluation import checkpoint_model

FORMATS = ("pt2", "onnx", "safetensors")

#: The operators an ONNX model can hold (the SFNO's transforms are complex-valued tables).
ONNX_OPERATORS = ("fno", "tfno", "uno")

#: The operators whose programs take any grid (every grid dimension dynamic); the others are exported for the
#: grid of the example: U-NO's level grids and domain padding round ``n · scale`` (which an exported program
#: cannot hold symbolically), and the SFNO's spherical harmonic transforms are tables built for one grid.
ANY_GRID = ("fno", "tfno")

#: Operators that search neighbourhoods at run time, which a traced program cannot hold.
NEIGHBOURHOODS = ("gino", "fno_gno")

#: What torch 2.13 says while it exports and saves a program, about its own internals: a pytree class it deprecates, and
#: parameters stored as views of one tensor (read back correctly on the CPU, where mpno exports).
TORCH_NOTICES = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "No complete tensor found in the group")

#: The largest grid size a pt2 program accepts along a dynamic dimension.
LARGEST_GRID = 2**16


def export(path: str, fmt: str, out: str, precision: str | None = None, example_shape: Sequence[int] | None = None,
           device: str = "cpu", overwrite: bool = False) -> dict:
    """Export the model of the checkpoint or weight file ``path`` to ``out`` as ``fmt`` (one of
    :data:`FORMATS`), in ``precision`` (default: as saved); for ``pt2``, traced on an input of
    ``example_shape`` (default :func:`example_shape_of`) on ``device``. Writes ``out`` whole or not at all and
    returns what was exported: the format, precision, dynamic dimensions, and the largest difference between
    the exported program and the model on the example."""
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
    if record["kind"] in NEIGHBOURHOODS:
        raise ValueError(f"{path}: a {record['kind'].upper()} searches the neighbourhoods of its input points at "
                         f"run time, which a traced {fmt} program cannot hold; export its weights with --format "
                         "safetensors and run it through mpno.load_model")
    if fmt == "onnx":
        _check_onnx(model, record["kind"])
        model.set_precision(model.precision.replace(fft_backend="dft"))
    return {**record, **_export_program(model, out, example_shape, fmt)}


def _check_onnx(model: NormalizedOperator, kind: str) -> None:
    """Refuse what an ONNX export cannot hold: the SFNO's transforms (complex Legendre–Fourier tables), bfloat16
    (ONNX Runtime's CPU provider has no bfloat16 kernels for the products), or no ONNX packages installed."""
    if kind not in ONNX_OPERATORS:
        raise ValueError(f"--format onnx: the {kind.upper()}'s spherical harmonic transforms are complex-valued, "
                         "which ONNX cannot hold; export --format pt2 or safetensors")
    if model.precision.mode != "full" and model.precision.dtype == "bfloat16":
        raise ValueError(f"--format onnx: {model.precision} would run bfloat16 products, which ONNX Runtime's CPU "
                         "provider does not have; export --precision full or a float16 policy, or --format pt2")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--format onnx needs {' and '.join(missing)}: pip install 'mpno[export]'")


def example_shape_of(model: NormalizedOperator) -> tuple[int, ...]:
    """The input an export is traced on when none is given: two samples (a batch of 1 would be taken for a
    fixed size) of the operator's input channels, on
    twice its modes per dimension (any grid of at least the modes serves a program of :data:`ANY_GRID`); on the
    sphere, the equiangular grid of its modes (nlat = the first mode count, nlon = 2 nlat)."""
    operator = model.operator
    if model_kind(operator) == "sfno":
        nlat = operator.n_modes[0]
        return (2, operator.in_channels, nlat, 2 * nlat)
    return (2, operator.in_channels, *(2 * m for m in operator.n_modes))


def _export_program(model: NormalizedOperator, out: Path, example_shape: Sequence[int] | None, fmt: str) -> dict:
    """``torch.export`` of ``model`` written to ``out`` as ``fmt`` (``pt2``, or ``onnx`` through torch's ONNX
    exporter): the batch dimension dynamic, and the grid dimensions too for :data:`ANY_GRID`; checked against
    the model on the example (an ONNX model in ONNX Runtime, where it is installed)."""
    operator = model.operator
    shape = tuple(example_shape or example_shape_of(model))
    if len(shape) != 2 + len(operator.n_modes) or shape[1] != operator.in_channels or shape[0] < 2 \
            or any(n < m for n, m in zip(shape[2:], operator.n_modes)):
        raise ValueError(f"--example-shape {' '.join(map(str, shape))}: give a batch of at least 2, "
                         f"{operator.in_channels} channels and {len(operator.n_modes)} grid sizes of at least the "
                         f"modes ({' '.join(map(str, operator.n_modes))})")
    device = next(model.parameters()).device
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    dims = {0: torch.export.Dim("batch", min=1)}
    any_grid = model_kind(operator) in ANY_GRID and not operator.arguments.get("domain_padding")
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
        difference = None if exported is None else (exported.to(device) - model(example)).abs().max().item()
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


def onnx_runtime_output(path: Path, x: torch.Tensor) -> torch.Tensor | None:
    """The ONNX model at ``path`` run by ONNX Runtime (CPU) on ``x``; ``None`` where it is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0])
