"""Fields on the sphere, (N, C, nlat, nlon) on an equiangular or Legendre–Gauss grid: the domain of the SFNO."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from ...bounds import sphere as sphere_audit
from ...checks import modes_per_dim
from ...data import DataError
from ...data.symmetries import ChannelTypes
from ...data.files import GRID, SPHERE, declared_channels, declared_equation, declared_grid, identify
from ...nn.normalized import NormalizedOperator
from ...nn.spherical import SphericalL2Loss
from ...ops import sht
from ..options import option
from ..plots import plot_sphere_samples
from .grid import GridDomain

OPTIONS = {
    "grid": option(None, "str", "the sphere: the spherical grid of the data; default: the grid the data files "
                   "declare, else equiangular (a --grid that contradicts a file is refused)",
                   choices=("equiangular", "legendre-gauss"), optional=True, group="model"),
}


class SphereDomain(GridDomain):
    """Fields (N, C, nlat, nlon) on the sphere, on an equiangular or Legendre–Gauss grid: SFNO."""

    name = "sphere"
    data = "fields on the sphere"
    capabilities = frozenset({"audit", "plots", "rollout", "export", "symmetries"})
    declared_options = {**GridDomain.declared_options, **OPTIONS}
    operator_arguments = ("grid",)
    file_kind = SPHERE
    own_loss = ("the relative L2 error over the sphere (quadrature-weighted) of the fields standardised per "
                "channel")
    lacks = {"auto_precision": "audits Fourier coefficients of grid data on the cube (mpno bounds audits the "
                               "sphere's harmonic coefficients)",
             "onnx": "its spherical harmonic transforms are complex-valued tables, which ONNX cannot hold; export "
                     "--format pt2 or safetensors"}

    def symmetries(self, config, dataset, kinds: Sequence[str]) -> tuple[list[str], ChannelTypes]:
        """Rotations about the polar axis by whole longitude steps (``shift``): the only rotations that map an
        equiangular or Gauss–Legendre grid onto itself. Every field is unchanged by them apart from its place:
        scalars, and tangent vectors given by their east and north components."""
        kinds = self._symmetry_kinds(dataset, kinds)
        if set(kinds) != {"shift"}:
            raise ValueError(f"--augment/--symmetry-check {','.join(kinds)}: on the sphere only shift applies (a "
                             "rotation about the polar axis by whole longitude steps); other rotations and "
                             "reflections do not map the grid onto itself")
        if config.channel_types is not None:
            raise ValueError("--channel-types: a rotation about the polar axis leaves every field on the sphere "
                             "unchanged but for its place (east and north components of vectors too); drop it")
        (in_channels, *_), (out_channels, *_) = dataset.shapes
        return kinds, ChannelTypes.parse(None, 2, in_channels, out_channels)

    def symmetry_options(self, config, grid: Sequence[int]) -> dict:
        """Longitude (the last axis) is the only one shifted."""
        return {"about_first_point": False, "shift_axes": (len(grid) - 1,)}

    def default_modes(self, grid: Sequence[int]) -> list[int]:
        """Every degree the training grid carries: ``(nlat, min(nlat, nlon // 2 + 1))``."""
        if len(grid) != 2:
            return super().default_modes(grid)
        nlat, nlon = grid
        return [nlat, min(nlat, nlon // 2 + 1)]

    def example_grid(self, n_modes: Sequence[int]) -> tuple[int, ...]:
        """The equiangular grid of the modes, ``(lmax, 2 lmax)``: the training grid of the default modes."""
        return (n_modes[0], 2 * n_modes[0])

    def modes_note(self, grid: Sequence[int]) -> str:
        return f" (the training grid {'×'.join(map(str, grid))})"

    def settle(self, config, paths: Sequence[str]) -> dict:
        """The spherical grid: the one the files declare, else ``--grid``, else equiangular; and the grid's
        settled options (``--residual``)."""
        return {**super().settle(config, paths), "grid": self.declared_grid(paths, config.grid, "--grid")}

    def declared_grid(self, paths: Sequence[str], given: str | None, source: str) -> str:
        """The spherical grid of data files: the one they declare (their ``grid`` attribute), which must be known,
        the same in every file and agree with ``given`` (from ``source``: ``--grid``, the model); else ``given``,
        else equiangular. Files that mpno generated for a problem on the cube (their ``equation`` says which)
        are refused."""
        for path in paths:
            equation = declared_equation(path)
            if equation is not None and identify(path) == GRID:  # not SPHERE, not point clouds
                raise DataError(f"{path} holds {equation} data, which mpno generates on the unit square or cube, not "
                                "on the sphere (an SFNO would read its rows as latitudes and its columns as "
                                "longitudes); train --model fno or tfno on it, or give data on the sphere "
                                "(mpno generate shallow-water)")
        declared = {path: grid for path in paths if (grid := declared_grid(path)) is not None}
        for path, grid in declared.items():
            if grid not in sht.GRIDS:
                raise DataError(f"{path}: declares the grid {grid!r}, which mpno does not know (it knows "
                                f"{', '.join(sht.GRIDS)}); fix the file's 'grid' attribute or regenerate it")
        if len(set(declared.values())) > 1:
            raise DataError("the data files declare different grids (" + ", ".join(
                f"{path}: {grid}" for path, grid in declared.items()) + "); train and test on one kind of grid")
        if not declared:
            return given or "equiangular"
        path, grid = next(iter(declared.items()))
        if given is not None and given != grid:
            raise DataError(f"{source} {given} conflicts with {path}, which declares the {grid} grid; the file's "
                            "declaration is what its values mean: " + (
                                "drop --grid" if source == "--grid" else
                                "use data on the grid the model was trained on"))
        return grid

    def _check_grid(self, path, grid, modes, fix: str, config) -> None:
        if len(grid) != 2:
            return super()._check_grid(path, grid, modes, fix, config)
        try:  # the sphere resolves fewer degrees than it has latitudes
            sht.check_sizes(*grid, *modes, config.grid)
        except ValueError as err:
            raise DataError(f"{path}: {err}; {fix}") from None

    def power_spectrum(self, fields: torch.Tensor, model: NormalizedOperator) -> tuple[list[int], list[float]]:
        """The power per spherical harmonic degree ``l`` (orthonormal harmonics: ``Σ_m |c_lm|²``, both signs of
        ``m``), summed over channels, up to the degrees the grid transforms exactly."""
        grid = model.operator.grid
        nlat, nlon = fields.shape[-2:]
        lmax = sht.exact_lmax(nlat, grid)
        coefficients = sht.forward(fields.double(), lmax, min(lmax, nlon // 2 + 1), grid)
        power = coefficients.pow(2).sum(-1)  # (B, C, l, m)
        power[..., 1:] *= 2  # m and -m of a real field
        return list(range(lmax)), power.sum((1, 3)).mean(0).tolist()

    def check_file(self, path: str, model: NormalizedOperator) -> None:
        self.declared_grid([path], model.operator.grid, "the model's grid")

    def losses(self, config, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
        """The relative L2 error over the sphere of the fields standardised per channel with the statistics of
        the predicted states (:meth:`NormalizedOperator.state_normalizer`)."""
        loss = SphericalL2Loss(model.operator.grid, normalizer=model.state_normalizer())
        return loss, {"l2": loss}

    def plot(self, model: NormalizedOperator, batches, path: Path, name: str, dataset) -> None:
        """The first test sample as maps of every channel on latitude and longitude."""
        x, y, _ = next(batches.iterate())
        plot_sphere_samples(model, x, y, path, model.operator.grid, title=f"{name}: test sample 0",
                            channels=declared_channels(dataset.path))

    def check_audited(self, path: str, model: NormalizedOperator | None) -> None:
        self.declared_grid([path], None if model is None else model.operator.grid,
                           "the file" if model is None else "the model's grid")

    def audit_modes(self, fields: torch.Tensor, modes: Sequence[int] | None) -> tuple[int, int]:
        """``(lmax, mmax)`` given (one value: both), else the most that two coarsenings still transform exactly."""
        if modes:
            return modes_per_dim(modes, 2)
        nlat, nlon = fields.shape[2:]
        coarsest = (nlat + 3) // 4  # an odd nlat coarsened twice, poles kept: (nlat - 1) / 4 + 1 latitudes
        return (max(1, min(16, sht.exact_lmax(coarsest, "equiangular"), nlon // 8 + 1)),) * 2

    def audit_data(self, path: str, fields: torch.Tensor, modes, device: torch.device) -> dict:
        """The sphere's data audit (:mod:`mpno.bounds.sphere`): spherical harmonic coefficients' discretisation
        error, on the grid's nested coarsenings, and precision errors."""
        grid = self.declared_grid([path], None, "the file")
        if grid != "equiangular":
            raise DataError(f"{path}: the sphere's audit estimates the discretisation error on nested equiangular "
                            f"grids, and {grid} grids do not nest; audit data on an equiangular grid with an odd "
                            "number of latitudes (mpno generate shallow-water --resolution 33)")
        try:
            return sphere_audit.audit_data(fields, *modes, device=device)
        except ValueError as err:
            raise DataError(f"{path}: {err}") from None

    def audit_model(self, model: NormalizedOperator, inputs: torch.Tensor, policy) -> dict:
        return sphere_audit.audit_model(model, inputs, policy)
