"""Is half precision safe for this data and this model? Audits and verdicts (``docs/bounds.md``).

The verdict compares the precision error of a dtype with the discretisation
error the data already carry: **safe when precision error ≤ discretisation
error** (``SAFE_RATIO = 1``). Then rounding at most doubles the error of the
Fourier coefficients in the worst case (errors adding), and adds at most 41%
when the two are independent (adding in quadrature).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch

from ..ops import transforms
from .. import dtypes
from ..precision import DTYPES, HALF_DTYPES, Precision
from . import measure, theory

SAFE_RATIO = 1.0
#: The dtypes audited: every half dtype of the policy, and float32 beside them.
AUDITED_DTYPES = (*HALF_DTYPES, torch.float32)
#: Candidates of ``precision="auto"``, cheapest first. ``half`` is not one: its stabilizer changes the
#: function the model computes and costs accuracy (docs/training.md, the accuracy matrix), while it
#: saves no more memory than ``mixed``.
CANDIDATES = tuple(Precision("mixed", name) for name in DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    """``"float16"`` for ``torch.float16``: a dtype as reports name it (its record's name)."""
    return dtypes.info(dtype).name


def error_ratio(precision_error: float, discretization_error: float) -> float:
    """The precision error as a multiple of the discretisation error (the verdict compares it with a threshold)."""
    if precision_error == 0:
        return 0.0
    return precision_error / discretization_error if discretization_error > 0 else math.inf


def carried_error(fields: torch.Tensor, n_modes: Sequence[int], storage: torch.dtype = torch.float32):
    """The coarsening estimate and the error the data carry: at least their storage rounding ``u·B``."""
    disc = measure.discretization(fields, n_modes)
    return disc, max(disc.error, dtypes.info(storage).unit_roundoff * fields.abs().max().item())


def audit_data(fields: torch.Tensor, n_modes: Sequence[int], device: str | torch.device = "cpu",
               threshold: float = SAFE_RATIO) -> dict:
    """Discretisation and precision errors of the kept coefficients of ``fields`` (N, C, *grid).

    Returns ``{"dtypes": {dtype: {discretization_error, precision_error,
    discretization_bound, precision_bound, ratio, safe, implementation}},
    "discretization": {...}, "levels": [...], "curves": {...}, "B", "M", ...}``.
    """
    fields = fields.double()
    grid = tuple(fields.shape[2:])
    disc, carried = carried_error(fields, n_modes)
    B, M = measure.bound_and_lipschitz(fields)
    k_max = tuple(m // 2 for m in n_modes)
    disc_bound = theory.discretization_bound(grid, k_max, B, M)
    on_device = fields.to(device)
    report = {"grid": list(grid), "n_modes": list(n_modes), "samples": fields.shape[0], "B": B, "M": M,
              "threshold": threshold, "levels": disc.levels,
              "discretization": {"rate": disc.rate, "differences": disc.differences,
                                 "estimate": disc.error, "error": carried, "bound": disc_bound,
                                 "storage_floor": carried > disc.error},
              "curves": {"discretization": [disc.error_at(i) for i in range(len(disc.levels))]},
              "dtypes": {}}
    for dtype in AUDITED_DTYPES:
        used = transforms.implementation(on_device.device, dtype, grid)
        error = measure.precision_error(on_device, n_modes, dtype)
        ratio = error_ratio(error, carried)
        report["dtypes"][dtype_name(dtype)] = {
            "discretization_error": carried, "precision_error": error,
            "discretization_bound": disc_bound,
            "precision_bound": theory.transform_precision_bound(grid, B, dtype, used),
            "ratio": ratio, "safe": ratio <= threshold, "implementation": used,
        }
        report["curves"][dtype_name(dtype)] = [
            measure.precision_error(measure.subsample(on_device, 2**i), n_modes, dtype)
            for i in range(len(disc.levels))
        ]
    return report


def choose_precision(fields: torch.Tensor, n_modes: Sequence[int], device: str | torch.device = "cpu",
                     threshold: float = SAFE_RATIO, model: torch.nn.Module | None = None) -> tuple[Precision, str]:
    """The cheapest policy that the data audit (and, given ``model``, the model audit) call safe, and why.

    ``precision="auto"``: candidates are :data:`CANDIDATES` in order, then ``full``.
    The model audit runs on up to 8 of ``fields`` when their grid allows it (even,
    with n/2 ≥ the model's modes).
    """
    fields = fields.double()
    _, disc = carried_error(fields, n_modes)
    on_device = fields.to(device)
    operator = getattr(model, "operator", model)
    audit_inputs = fields[:8] if model is not None and all(
        n % 2 == 0 and n // 2 >= m for n, m in zip(fields.shape[2:], operator.n_modes)) else None
    for policy in CANDIDATES:
        error = measure.precision_error(on_device, n_modes, policy.half_dtype, mode=policy.mode)
        ratio = error_ratio(error, disc)
        if ratio > threshold:
            continue
        reason = (f"{policy}: its transform error {error:.2e} is {ratio:.2g}× the data's "
                  f"discretisation error {disc:.2e} (safe at ≤ {threshold:g}×)")
        if audit_inputs is None:
            return policy, reason
        audit = audit_model(model, audit_inputs.float(), policy, threshold)
        if audit["safe"]:
            return policy, reason + (f", and the model's output error {audit['precision_error']:.2e} is "
                                     f"{audit['ratio']:.2g}× its discretisation error")
    return Precision("full"), (f"full: no half policy keeps its rounding error within {threshold:g}× the "
                               f"data's discretisation error {disc:.2e} (and the model's)")


def _capture(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor]:
    """The outputs of the lifting, each Fourier block and the projection, and the model's output."""
    operator = model.operator if hasattr(model, "operator") else model
    layers = [("lifting", operator.lifting)] + [(f"block {i + 1}", b) for i, b in enumerate(operator.blocks)]
    layers.append(("projection", operator.projection))
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [module.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, out.detach())))
               for name, module in layers]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen, out


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.double().to(reference.device)
    if not torch.isfinite(value).all():
        return math.inf
    return ((value - reference).norm() / reference.norm()).item()


def audit_model(model: torch.nn.Module, inputs: torch.Tensor, policy: Precision,
                threshold: float = SAFE_RATIO, check_grid: bool = True) -> dict:
    """Relative error of each layer's output and of the final output in ``policy`` against float64.

    The float64 reference computes the same function (same stabilizer). The
    model's own discretisation error is its output at n, sampled at every other
    point, against its output on the inputs subsampled to n/2 (every other point,
    the first kept). ``check_grid``: refuse grids that are not even or whose half
    does not carry the model's modes (a caller with other grids checks its own:
    :func:`mpno.bounds.sphere.audit_model`).
    """
    operator = model.operator if hasattr(model, "operator") else model
    grid = inputs.shape[2:]
    if check_grid and any(n % 2 or n // 2 < m for n, m in zip(grid, operator.n_modes)):
        raise ValueError(f"the model audit compares outputs at n and n/2: grid {tuple(grid)} must be even and "
                         f"n/2 ≥ the model's modes {operator.n_modes}; use a finer test file")
    device = next(model.parameters()).device
    reference = copy.deepcopy(model).double().cpu()
    reference.set_precision(Precision("full", stabilizer=policy.stabilizer))
    model = copy.deepcopy(model)
    model.set_precision(policy)
    x64 = inputs.double()
    ref_layers, ref_out = _capture(reference, x64)
    layers, out = _capture(model, inputs.float().to(device))
    per_layer = [{"layer": name, "relative_error": _relative(value, ref)}
                 for (name, value), (_, ref) in zip(layers, ref_layers)]
    precision_error = _relative(out, ref_out)
    with torch.no_grad():
        coarse = reference(measure.subsample(x64, 2))
    discretization_error = _relative(measure.subsample(ref_out, 2), coarse)
    ratio = error_ratio(precision_error, discretization_error)
    return {"precision": str(policy), "layers": per_layer, "precision_error": precision_error,
            "discretization_error": discretization_error, "ratio": ratio, "safe": ratio <= threshold}
