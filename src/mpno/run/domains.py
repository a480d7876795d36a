"""One adapter per domain of data: fields on a grid, fields on the sphere, point clouds.

Every operator declares its domain (:mod:`mpno.nn.operator`); a run asks the domain's
adapter (:func:`of`) what depends on the data rather than on the operator's name: how
to read and check files, the default modes, the losses and metrics, how to batch, what
predictions hold, how samples are drawn, which audits ``mpno bounds`` runs and what
``mpno bench`` feeds the model. An adapter that cannot do something raises a
``ValueError`` that says so in one line.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..bounds import audit, sphere as sphere_audit
from ..checks import modes_per_dim
from ..data import DataError, OperatorDataset
from ..data.files import GRID, SPHERE, available_keys, declared_channels, declared_equation, declared_grid, identify
from ..data.pointclouds import POTENTIAL_FLOW_KEYS, PointCloudBatches, PointCloudDataset, PointValues
from ..nn import losses
from ..nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from ..nn.point_losses import PointL2Loss
from ..nn.registry import build_operator, model_kind, operator_class
from ..nn.spherical import SphericalL2Loss
from ..ops import sht
from . import distributed
from .batches import batches_for
from .reporting import plot_point_samples, plot_samples, plot_sphere_samples

#: The evaluation losses of a grid run when ``eval_losses`` is not given.
EVAL_LOSSES = ("l2", "h1")
#: Options of ``mpno train`` every operator's constructor takes (``None``: the operator's default).
COMMON_OPTIONS = ("hidden_channels", "n_layers", "channel_mlp", "rank", "factorization")


class Domain:
    """What every adapter answers the same way, from its attributes."""

    #: The domain's name, as operators declare it.
    name: str
    #: What the domain's data are, in messages.
    data: str
    #: Options of ``mpno train`` passed to the operator beyond :data:`COMMON_OPTIONS`.
    options: tuple[str, ...] = ()
    #: ``None``: the losses are ``--loss``/``--eval-losses``; else the one loss the domain trains and tests
    #: with (named ``l2``), in words.
    own_loss: str | None = None
    #: Kept modes per dimension when ``--n-modes`` is not given.
    default_mode = 12
    #: Whether ``precision="auto"`` can audit this domain's data (else: why not, and what to do).
    cannot_choose_precision: str | None = None

    def refuse(self, what: str, why: str) -> None:
        """Raise the one-line error of something this domain's data cannot do."""
        raise ValueError(f"{what} does not apply to {self.data}: {why}")

    def check_options(self, config) -> None:
        """Refuse options that do not apply to this domain (from :meth:`mpno.run.config.RunConfig.validate`)."""
        if config.precision == "auto" and self.cannot_choose_precision:
            raise ValueError(f"precision='auto' {self.cannot_choose_precision}; give --model {config.model} a "
                             "precision mode")
        if self.own_loss is not None:
            for name, value in (("loss", config.loss), ("eval_losses", config.eval_losses)):
                if value not in ("l2", ["l2"], []):
                    raise ValueError(f"{name}={value!r} does not apply to model={config.model!r}, which trains and "
                                     f"is tested with {self.own_loss} (named l2); drop --{name.replace('_', '-')}")

    def default_eval_losses(self) -> list[str]:
        return ["l2"] if self.own_loss is not None else list(EVAL_LOSSES)

    def default_modes(self, grid: Sequence[int]) -> list[int]:
        """The default ``n_modes`` for training data on ``grid``."""
        return [self.default_mode]

    def modes_note(self, grid: Sequence[int]) -> str:
        """What the default modes followed, for the line that reports them."""
        return ""

    def operator_options(self, config) -> dict:
        """The constructor arguments ``config`` gives the operator (options left ``None`` keep its default)."""
        names = COMMON_OPTIONS + self.options
        return {name: getattr(config, name) for name in names if getattr(config, name) is not None}

    def prepare(self, config, paths: Sequence[str]) -> None:
        """Settle, from the data files, what the files decide (before they are read)."""

    def check_file(self, path: str, model: NormalizedOperator) -> None:
        """Refuse, before reading it, a file a trained model cannot be evaluated on."""

    def bench_operator(self, config, in_channels: int, out_channels: int, **arguments):
        """The operator ``mpno bench`` times for a :class:`mpno.run.bench.BenchConfig`."""
        return build_operator(config.model, in_channels, out_channels, tuple(config.modes),
                              factorization=config.factorization, hidden_channels=config.width,
                              n_layers=config.layers, rank=config.rank, **arguments)


class GridDomain(Domain):
    """Fields (N, C, *grid) on the torus or the unit cube: FNO, TFNO."""

    name = "grid"
    data = "fields on a grid"
    options = ("domain_padding",)

    def dataset(self, path: str, config):
        return OperatorDataset(path, x_key=config.x_key, y_key=config.y_key, spatial_dims=config.spatial_dims,
                               time_in=config.time_in, time_out=config.time_out)

    def grid(self, dataset) -> list[int]:
        """The grid of a data set's fields."""
        return list(dataset.shapes[0][1:])

    def modes(self, config, dataset) -> tuple[int, ...]:
        """``config``'s modes, one per dimension of ``dataset``."""
        return modes_per_dim(config.n_modes, len(dataset.shapes[0]) - 1, "--n-modes")

    def check_data(self, train, tests: dict, config) -> None:
        """Refuse test sets that do not match the training set, and grids too coarse for the modes."""
        x_train, y_train = train.shapes
        modes = self.modes(config, train)
        self._check_grid(train.path, x_train[1:], modes, "lower --n-modes", config)  # first: a test set may be on it
        for test in tests.values():
            x_shape, y_shape = test.shapes
            if len(x_shape) != len(x_train) or x_shape[0] != x_train[0] or y_shape[0] != y_train[0]:
                raise DataError(f"{test.path}: samples of shape {x_shape} → {y_shape} do not match the training "
                                f"data's {x_train} → {y_train} (channels and spatial dims must agree)")
            self._check_grid(test.path, x_shape[1:], modes, "test on a finer grid or lower --n-modes", config)

    def _check_grid(self, path, grid, modes, fix: str, config) -> None:
        for i, (n, m) in enumerate(zip(grid, modes)):
            if n < m:
                hint = ""
                if n <= 3:  # a channel axis read as a grid axis
                    hint = (f"; if the arrays are (N, C, *grid) with {len(grid) - 1} spatial dims, pass "
                            f"--spatial-dims {len(grid) - 1}")
                raise DataError(f"{path}: grid {tuple(grid)} has {n} points along dim {i}, fewer than the model's "
                                f"modes ({m}); {fix}{hint}")

    def check_for_model(self, path: str, dataset, model: NormalizedOperator) -> None:
        """Refuse a file whose samples do not fit a trained model."""
        x_shape, _ = dataset.shapes
        operator = model.operator
        if x_shape[0] != operator.in_channels or len(x_shape) - 1 != len(operator.n_modes):
            raise DataError(f"{dataset.path}: samples of shape {x_shape} do not fit the model "
                            f"({operator.in_channels} input channels, {len(operator.n_modes)} spatial dims); "
                            "check --x-key and the file")

    def channels_and_modes(self, config, train) -> tuple[int, int, tuple[int, ...]]:
        """Input channels, output channels and modes of the operator for ``train``."""
        x_shape, y_shape = train.shapes
        return x_shape[0], y_shape[0], self.modes(config, train)

    def fitted(self, operator, train) -> NormalizedOperator:
        """``operator`` with normalisers fitted on ``train``."""
        return NormalizedOperator(operator, UnitGaussianNormalizer.fit(x for x, _ in train),
                                  UnitGaussianNormalizer.fit(y for _, y in train))

    def points_per_sample(self, config, train) -> int:
        """Grid points an activation has per sample (the memory estimate before training)."""
        return math.prod(train.shapes[0][1:])

    def fields(self, dataset, count: int, field: str = "x") -> torch.Tensor:
        """The first ``count`` samples' inputs (``field="x"``) or outputs, stacked."""
        return torch.stack([dataset[i][0 if field == "x" else 1] for i in range(min(count, len(dataset)))])

    # -- batches, losses, predictions, plots ---------------------------------------------
    def batches(self, dataset, config, device: torch.device, model: NormalizedOperator, name: str):
        """Mini-batches of ``dataset`` for ``model``, this process's share of each."""
        return batches_for(dataset, config.batch_size, device, config.in_memory_limit_gb, name, distributed.current())

    def losses(self, config, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
        """The training loss and the evaluation losses ``config`` asks for."""
        return (losses.build(config.loss, config.periodic),
                {name: losses.build(name, config.periodic) for name in config.eval_losses or EVAL_LOSSES})

    def has_targets(self, path: str, config) -> bool:
        """Whether ``path`` holds outputs beside its inputs (``y``/``y_key``, or a PDEBench ``tensor``)."""
        keys = available_keys(path)
        if config.y_key:
            return config.y_key in keys
        return "y" in keys or ("tensor" in keys and config.x_key is None)

    def inputs_only(self, config):
        """``config`` reading a file's inputs as their own pair (a file without outputs)."""
        return dataclasses.replace(config, y_key=config.x_key or "x")

    def prediction_arrays(self, x, y, prediction: torch.Tensor, dataset) -> dict[str, torch.Tensor]:
        """What ``mpno predict`` writes of a batch, one row per sample (``y`` is ``None`` without outputs)."""
        return {"prediction": prediction} if y is None else {"prediction": prediction, "y": y, "error": prediction - y}

    def samples(self, prediction: torch.Tensor, y) -> list[tuple]:
        """``(prediction, target)`` of each sample of a batch, as a loss takes them."""
        return [(prediction[i:i + 1], y[i:i + 1]) for i in range(len(y))]

    def describe_predictions(self, file, dataset) -> None:
        """Add to a predictions file what it needs beyond the per-sample arrays."""

    def plot(self, model: NormalizedOperator, batches, path: Path, name: str, dataset) -> None:
        """A few test samples drawn as images: input, truth, prediction, error."""
        x, y, _ = next(batches.iterate())
        plot_samples(model, x[:3], y[:3], path, title=name)

    # -- audits -------------------------------------------------------------------------
    def choose_precision(self, config, train, model, device: torch.device):
        """``precision="auto"``: the cheapest safe policy for (up to 64) training inputs and ``model``, and why."""
        return audit.choose_precision(self.fields(train, 64), self.modes(config, train), device, model=model)

    def check_audited(self, path: str, model: NormalizedOperator | None) -> None:
        """Refuse, before reading it, a file ``mpno bounds`` cannot audit (for ``model``, when given)."""
        if identify(path) == SPHERE:
            raise DataError(f"{path} holds fields on the sphere; mpno bounds audits Fourier coefficients on the cube "
                            f"for this {model_kind(model.operator)}, which would misjudge them: audit the file alone, "
                            "or with an SFNO trained on it")

    def audit_modes(self, fields: torch.Tensor, modes: Sequence[int] | None) -> tuple[int, ...]:
        """The modes audited: those given (one value for every dimension), else ``min(16, n / 4)``."""
        if modes:
            return modes_per_dim(modes, fields.ndim - 2)
        return tuple(min(16, n // 4) for n in fields.shape[2:])

    def audit_data(self, path: str, fields: torch.Tensor, modes, device: torch.device) -> dict:
        """The data audit of :mod:`mpno.bounds.audit`: Fourier coefficients' discretisation and precision errors."""
        if min(fields.shape[2:]) < 4:
            raise DataError(f"{path}: grid {tuple(fields.shape[2:])} is too coarse to audit; give at least 4 points "
                            "per dimension")
        return audit.audit_data(fields, modes, device)

    def audit_model(self, model: NormalizedOperator, inputs: torch.Tensor, policy) -> dict:
        """Each layer's error in ``policy`` against float64, beside the model's discretisation error."""
        return audit.audit_model(model, inputs, policy)

    # -- mpno bench ---------------------------------------------------------------------
    def bench_model(self, config):
        """The operator ``mpno bench`` times for a :class:`mpno.run.bench.BenchConfig`."""
        return self.bench_operator(config, config.channels, config.channels)

    def bench_batch(self, config, model, device: torch.device) -> tuple:
        """One training batch of random fields and its loss: ``(input, target, loss function)``."""
        x = torch.randn(config.batch, config.channels, *config.grid, device=device)
        y = torch.randn(config.batch, config.channels, *config.grid, device=device)
        return x, y, losses.LpLoss(2)


class SphereDomain(GridDomain):
    """Fields (N, C, nlat, nlon) on the sphere, on an equiangular or Legendre–Gauss grid: SFNO."""

    name = "sphere"
    data = "fields on the sphere"
    options = ("grid",)
    own_loss = ("the relative L2 error over the sphere (quadrature-weighted) of the fields standardised per "
                "channel")
    cannot_choose_precision = ("audits Fourier coefficients of grid data on the cube (mpno bounds audits the sphere's "
                               "harmonic coefficients)")

    def default_modes(self, grid: Sequence[int]) -> list[int]:
        """Every degree the training grid carries: ``(nlat, min(nlat, nlon // 2 + 1))``."""
        if len(grid) != 2:
            return super().default_modes(grid)
        nlat, nlon = grid
        return [nlat, min(nlat, nlon // 2 + 1)]

    def modes_note(self, grid: Sequence[int]) -> str:
        return f" (the training grid {'×'.join(map(str, grid))})"

    def prepare(self, config, paths: Sequence[str]) -> None:
        config.grid = self.declared_grid(paths, config.grid, "--grid")

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

    def check_file(self, path: str, model: NormalizedOperator) -> None:
        self.declared_grid([path], model.operator.grid, "the model's grid")

    def losses(self, config, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
        """The relative L2 error over the sphere of the fields standardised by ``model``'s output normaliser."""
        loss = SphericalL2Loss(model.operator.grid, normalizer=model.outputs)
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


class PointsDomain(Domain):
    """Point clouds: per-point features in, per-point values out, clouds of any size: GINO."""

    name = "points"
    data = "point clouds"
    options = ("latent_grid", "radius", "kernel", "chunk_size", "domain_padding")
    own_loss = "the relative L2 error over each cloud's points"
    default_mode = 8
    cannot_choose_precision = "audits Fourier coefficients of grid data on the cube, and a point cloud has none"

    def dataset(self, path: str, config) -> PointCloudDataset:
        return PointCloudDataset(path, inputs=config.inputs or None, outputs=config.outputs or None)

    def grid(self, dataset) -> list[int]:
        """Point clouds have no grid: empty."""
        return []

    def check_data(self, train, tests: dict, config) -> None:
        """Refuse test sets whose channels per point differ from the training set's."""
        for name, test in tests.items():
            if test.channels != train.channels:
                raise DataError(f"{name}: {test.channels} (input, output) channels per point, but the training "
                                f"data have {train.channels}")

    def check_for_model(self, path: str, dataset, model: NormalizedOperator) -> None:
        if dataset.channels != (model.operator.in_channels, model.operator.out_channels):
            raise DataError(f"{path}: {dataset.channels} (input, output) channels per point do not fit the model")

    def channels_and_modes(self, config, train) -> tuple[int, int, tuple[int, ...]]:
        return (*train.channels, modes_per_dim(config.n_modes, train[0][0].points.shape[-1], "--n-modes"))

    def fitted(self, operator, train) -> NormalizedOperator:
        """``operator`` with normalisers of the features and values, and its position map, fitted on ``train``
        (the map before any neighbourhood is searched)."""
        samples = [train[i] for i in range(len(train))]
        operator.fit_positions(x.points for x, _ in samples)
        return NormalizedOperator(operator, UnitGaussianNormalizer.fit(x.features.T for x, _ in samples),
                                  UnitGaussianNormalizer.fit(y.values.T for _, y in samples))

    def points_per_sample(self, config, train) -> int:
        """The points of the latent grid."""
        return config.latent_grid ** train[0][0].points.shape[-1]

    def batches(self, dataset, config, device: torch.device, model: NormalizedOperator, name: str):
        """Batches whose clouds' neighbourhoods are searched once, here; this process's share of each."""
        context = distributed.current()
        return PointCloudBatches(dataset, config.batch_size, device, neighborhoods=model.operator.neighborhoods,
                                 shares=lambda count, seed: distributed.rank_batches(count, config.batch_size, seed,
                                                                                     context))

    def losses(self, config, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
        """The relative L2 error over each cloud's points (with its quadrature weights)."""
        return PointL2Loss(), {"l2": PointL2Loss()}

    def has_targets(self, path: str, config) -> bool:
        return set(config.outputs or POTENTIAL_FLOW_KEYS[1]) <= set(available_keys(path))

    def inputs_only(self, config):
        return dataclasses.replace(config, outputs=list(config.inputs or POTENTIAL_FLOW_KEYS[0]))

    def prediction_arrays(self, x, y, prediction: torch.Tensor, dataset) -> dict[str, torch.Tensor]:
        """The points and per-point arrays of each cloud, padded to the file's largest cloud."""
        arrays = {"points": x.points, "prediction": prediction}
        if y is not None:
            arrays.update(y=y.values, error=prediction - y.values)
        return {name: _padded(x.sizes, value, dataset.points.shape[1]) for name, value in arrays.items()}

    def samples(self, prediction: torch.Tensor, y) -> list[tuple]:
        bounds = np.cumsum([0, *y.sizes])
        return [(prediction[a:b], PointValues(y.values[a:b], (b - a,), None if y.weights is None else y.weights[a:b]))
                for a, b in zip(bounds, bounds[1:])]

    def describe_predictions(self, file, dataset) -> None:
        """The clouds' sizes (the arrays are padded)."""
        file.create_dataset("sizes", data=np.array([dataset.sizes[i] for i in dataset.indices]))

    def plot(self, model: NormalizedOperator, batches, path: Path, name: str, dataset) -> None:
        """The first test cloud as 3D scatter plots of truth, prediction and error."""
        x, y, _ = next(batches.iterate())
        plot_point_samples(model, x, y, path, title=name)

    def check_audited(self, path: str, model: NormalizedOperator | None) -> None:
        self.refuse("mpno bounds", "it audits the Fourier or spherical harmonic coefficients of fields on a grid or "
                                   "the sphere, and a point cloud has none")

    def bench_model(self, config):
        """A model for clouds of potential flow past ellipsoids (6 input features: normal and stream direction;
        1 output: the pressure coefficient); ``config.grid`` is its latent grid."""
        return self.bench_operator(config, 6, 1, latent_grid=tuple(config.grid), radius=BENCH_RADIUS)

    def bench_batch(self, config, model, device: torch.device) -> tuple:
        """``config.batch`` clouds of :data:`BENCH_POINTS` points, their neighbourhoods searched."""
        from ..data import potential_flow  # imported here: only the point-cloud benchmarks need it (and scipy)

        clouds = potential_flow.dataset(config.batch, points=BENCH_POINTS)
        model.fit_positions(clouds[i][0].points for i in range(len(clouds)))
        batches = PointCloudBatches(clouds, config.batch, device, neighborhoods=model.neighborhoods)
        return (*batches.batch(range(config.batch)), PointL2Loss())


#: ``mpno bench`` on point clouds: potential flow past ellipsoids, this many surface points per cloud ...
BENCH_POINTS = 2048
#: ... and the neighbourhood radius of the operator's graph kernel integrals.
BENCH_RADIUS = 0.2


def _padded(sizes: tuple[int, ...], values: torch.Tensor, width: int) -> torch.Tensor:
    """Per-point ``values`` (P, C) of clouds of ``sizes`` as (clouds, width, C), zero beyond each cloud."""
    out = values.new_zeros(len(sizes), width, *values.shape[1:])
    for i, part in enumerate(values.split(list(sizes))):
        out[i, :len(part)] = part
    return out


#: The adapter of each domain an operator may declare.
DOMAINS = {domain.name: domain for domain in (GridDomain(), SphereDomain(), PointsDomain())}


def of(model: str) -> Domain:
    """The adapter of the domain the operator registered as ``model`` declares."""
    return DOMAINS[operator_class(model).domain]


def of_data(path: str) -> Domain:
    """The adapter ``mpno bounds`` audits a file with when no model is given: the sphere's for fields on the
    sphere, else the grid's (which names what else a file holds)."""
    return DOMAINS["sphere" if identify(path) == SPHERE else "grid"]
