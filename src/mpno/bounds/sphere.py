"""Error budget on the sphere: the precision error of half-precision SHTs and the discretisation error
of the coefficients, estimated from the same fields on successively coarser grids (``docs/sphere.md``).

Errors are maxima over samples, channels and kept coefficients ``|ĉ_lm − c_lm|``, like
:mod:`mpno.bounds.measure` on the torus.

Which transform the budget assumes: :func:`precision_error` compares the same
quadrature in two precisions and holds for every ``lmax`` the grid allows (up to
``nlat``; above the exact limit that quadrature aliases, and the aliasing is part
of the float64 reference, not of the precision error). :func:`discretization`
compares coefficients across grids, and :func:`coarsenings` keeps only grids that
transform ``lmax`` exactly (:func:`mpno.ops.sht.exact_lmax`): the budget's
discretisation error is that of the exact projection. A model that keeps degrees
beyond its grid's exact limit carries the aliasing on top (docs/sphere.md measures it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..ops import sht
from .. import dtypes
from ..precision import Precision
from . import audit
from .measure import Discretization, fit_rate


def coefficients(fields: torch.Tensor, lmax: int, mmax: int, grid: str) -> torch.Tensor:
    """The coefficients (N, C, lmax, mmax) of fields (N, C, nlat, nlon) in float64, as complex."""
    return torch.view_as_complex(sht.forward(fields.double(), lmax, mmax, grid).contiguous())


def precision_error(fields: torch.Tensor, lmax: int, mmax: int, grid: str, dtype: torch.dtype,
                    mode: str = "half", backend: str = "auto") -> float:
    """Max error of the coefficients as a spherical layer computes them in ``dtype``, against float64.

    ``mode="half"``: the whole forward SHT in ``dtype``; ``"mixed"``: in float32,
    then rounded to ``dtype``. Non-finite results (overflow) give ``inf``.
    """
    if mode not in ("half", "mixed"):
        raise ValueError(f"mode={mode!r} is not supported; allowed: 'half', 'mixed'")
    exact = coefficients(fields, lmax, mmax, grid)
    if mode == "mixed":
        computed = sht.forward(fields.float(), lmax, mmax, grid).to(dtype)
    else:
        computed = sht.forward(fields, lmax, mmax, grid, dtype=dtype, backend=backend)
    computed = torch.view_as_complex(computed.double().contiguous())
    if not torch.isfinite(computed).all():
        return math.inf
    return (computed - exact).abs().max().item()


def coarsenings(fields: torch.Tensor, lmax: int, mmax: int) -> list[torch.Tensor]:
    """Equiangular fields with odd ``nlat`` and even ``nlon`` and their nested coarsenings: every other
    latitude (poles kept) and longitude, finest first, while the grid still resolves ``(lmax, mmax)``."""
    levels = [fields]
    while True:
        nlat, nlon = levels[-1].shape[-2:]
        if nlat % 2 == 0 or nlon % 2 or sht.exact_lmax((nlat + 1) // 2, "equiangular") < lmax \
                or nlon // 4 + 1 < mmax:
            break
        levels.append(levels[-1][..., ::2, ::2])
    if len(levels) < 2:
        raise ValueError(f"an equiangular grid {tuple(fields.shape[-2:])} nests only with odd nlat and even nlon, "
                         f"coarsened still resolving lmax={lmax}, mmax={mmax}; give fields generated on each grid")
    return levels


def discretization(levels: Sequence[torch.Tensor], lmax: int, mmax: int, grid: str) -> Discretization:
    """Discretisation error of the coefficients from the same fields on grids from finest to coarsest.

    ``levels[i]``: (N, C, nlat_i, nlon_i) samples of the same functions (by
    :func:`coarsenings`, or generated on each grid with one seed, as
    ``mpno.data.shallow_water`` does). The rate is fitted against ``nlat`` and the
    finest level's error extrapolated (Richardson), as :func:`mpno.bounds.measure.discretization`.
    """
    if len(levels) < 2:
        raise ValueError("levels: give the fields on at least two grids, finest first")
    coeffs = [coefficients(f, lmax, mmax, grid) for f in levels]
    differences = [(coarse - fine).abs().max().item() for fine, coarse in zip(coeffs, coeffs[1:])]
    sizes = [f.shape[-2] for f in levels]
    floor = 1e-13 * max(c.abs().max().item() for c in coeffs)
    usable = [(sizes[i + 1], d) for i, d in enumerate(differences) if d > floor]
    rate = fit_rate(*zip(*usable)) if len(usable) >= 2 else None
    ratio = sizes[0] / sizes[1]
    p = rate if rate is not None and rate < -0.05 else -1.0
    return Discretization(sizes, differences, rate, differences[0] / (ratio ** (-p) - 1))


def audit_data(fields: torch.Tensor, lmax: int, mmax: int, device: str | torch.device = "cpu",
               threshold: float = audit.SAFE_RATIO) -> dict:
    """:func:`mpno.bounds.audit.audit_data` on the sphere: the discretisation and precision errors of the
    coefficients ``l < lmax``, ``m < mmax`` of equiangular fields (N, C, nlat, nlon), in the same report.

    The discretisation error is estimated on the fields' nested coarsenings
    (:func:`coarsenings`: odd ``nlat``, even ``nlon``), at least the data's float32
    storage rounding ``u·B``; each dtype's precision error is the whole forward SHT in
    that dtype against float64 (:func:`precision_error`), at every level for the
    curves. There are no closed-form bounds on the sphere (``None``) and no
    Lipschitz estimate ``M``.
    """
    fields = fields.double()
    levels = coarsenings(fields, lmax, mmax)
    disc = discretization(levels, lmax, mmax, "equiangular")
    B = fields.abs().max().item()
    carried = max(disc.error, dtypes.info(torch.float32).unit_roundoff * B)
    report = {"grid": list(fields.shape[2:]), "n_modes": [lmax, mmax], "samples": fields.shape[0], "B": B,
              "M": None, "threshold": threshold, "levels": disc.levels,
              "discretization": {"rate": disc.rate, "differences": disc.differences, "estimate": disc.error,
                                 "error": carried, "bound": None, "storage_floor": carried > disc.error},
              "curves": {"discretization": [disc.error_at(i) for i in range(len(levels))]}, "dtypes": {}}
    for dtype in audit.AUDITED_DTYPES:
        errors = [precision_error(level.to(device), lmax, mmax, "equiangular", dtype) for level in levels]
        ratio = audit.error_ratio(errors[0], carried)
        name = audit.dtype_name(dtype)
        report["dtypes"][name] = {"discretization_error": carried, "precision_error": errors[0],
                                  "discretization_bound": None, "precision_bound": None, "ratio": ratio,
                                  "safe": ratio <= threshold, "implementation": "sht"}
        report["curves"][name] = errors
    return report


def audit_model(model: torch.nn.Module, inputs: torch.Tensor, policy: Precision,
                threshold: float = audit.SAFE_RATIO) -> dict:
    """:func:`mpno.bounds.audit.audit_model` of a model on the sphere (an SFNO): its inputs on an equiangular grid
    with odd ``nlat`` and even ``nlon`` whose coarsening (every other latitude, poles kept, and longitude)
    still carries the model's ``n_modes``."""
    operator = model.operator if hasattr(model, "operator") else model
    nlat, nlon = inputs.shape[2:]
    try:
        if operator.grid != "equiangular" or nlat % 2 == 0 or nlon % 2:
            raise ValueError(f"grid {nlat}×{nlon} ({operator.grid}) does not nest")
        sht.check_sizes((nlat + 1) // 2, nlon // 2, *operator.n_modes, "equiangular")
    except ValueError as err:
        raise ValueError(f"the model audit compares outputs at n and n/2 on nested equiangular grids (odd nlat, "
                         f"even nlon, the coarser grid carrying the model's n_modes {operator.n_modes}): {err}; "
                         "use a finer test file") from None
    return audit.audit_model(model, inputs, policy, threshold, check_grid=False)
