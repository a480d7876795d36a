"""Fields on a grid (the torus or the unit cube), (N, C, *grid) arrays: the domain of FNO, TFNO and U-NO."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import torch

from ...bounds import audit
from ...checks import modes_per_dim
from ...data import DataError, OperatorDataset
from ...data.symmetries import Augmentation, ChannelTypes, check_augment, representatives
from ...data.trajectories import TrajectoryWindows, holds_trajectories
from ...data.files import GRID, SPHERE, available_keys, declared_channel_types, identify
from ...nn import losses
from ...nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from ...nn.registry import model_kind
from .. import distributed
from ..batches import batches_for
from ..forecast import most_unrolled
from ..options import option
from ..plots import plot_samples
from .base import EVAL_LOSSES, Domain

#: Inputs this many standard deviations from the training inputs' mean are reported as outside the training data.
FAR = 10.0

#: How arrays of fields are read: keys, dimensions, PDEBench time series; and how H1 differentiates them.
OPTIONS = {
    "x_key": option(None, "str", "input key in the data files", optional=True, group="data"),
    "y_key": option(None, "str", "output key in the data files", optional=True, group="data"),
    "spatial_dims": option(None, "int", "spatial dimensions of arrays that do not say: (N, C, *grid) pairs "
                           "(default 2) and (N, T, C, *grid) trajectories (required where the file does not say)",
                           low=1, high=3, optional=True, group="data"),
    "time_in": option(0, "int", "time series (PDEBench): the input snapshot", group="data"),
    "time_out": option(-1, "int", "time series (PDEBench): the output snapshot", group="data"),
    "periodic": option(True, "bool", "the fields are periodic (how H1 differentiates; whether --augment may shift "
                       "them)", group="optimisation"),
    "augment": option([], "str_list", "train on samples transformed by symmetries the problem has, drawn afresh "
                      "for each sample and epoch: on a grid shift (periodic fields), flip, rotate (quarter turns of a "
                      "square grid), e.g. shift,flip,rotate; on point clouds rotate, reflect (about each cloud's "
                      "centroid); see --channel-types", group="optimisation"),
    "channel_types": option(None, "str", "how each field transforms under --augment: INPUTS/OUTPUTS (or one list "
                            "for both), each a comma list of scalar (s), pseudoscalar (p: 2D vorticity), vector (v: "
                            "one channel per axis, in axis order), pseudovector (a); default: the data file's "
                            "channel_type attributes (mpno generate writes them), else on a grid all scalars",
                            optional=True,
                            group="optimisation"),
    "trajectories": option(False, "bool", "forecasting: read the data files' arrays (--x-key, default u) as "
                           "trajectories (N, T, C, *grid); files mpno generates with --steps say so themselves",
                           group="forecasting"),
    "history": option(1, "int", "forecasting: snapshots the operator sees, stacked as channels", low=1,
                      group="forecasting"),
    "unroll": option("1", "str", "forecasting: steps the training loss is unrolled over, with the gradient "
                     "through the model's own predictions: K (1: one-step training), or stages K:fraction,... of the "
                     "epochs, e.g. 1:0.5,2:0.25,4:0.25", group="forecasting"),
    "residual": option(None, "bool", "forecasting: predict the increment from the newest input snapshot "
                       "(its output normaliser fitted on increments) instead of the next state (default: on for "
                       "trajectories; --no-residual turns it off)", optional=True, group="forecasting"),
    "static_key": option("static", "str", "forecasting: the array of static inputs in the data files, fields "
                         "that stay fixed through a rollout (a forcing, a coefficient, the geometry): (N, S, *grid) "
                         "or (S, *grid); read where a file has it", group="forecasting"),
    "recompute_steps": option(False, "bool", "forecasting: recompute each unrolled step's activations in the "
                              "backward pass instead of keeping them (the memory of one step instead of --unroll's, "
                              "for about one more forward pass)", group="forecasting"),
}


class GridDomain(Domain):
    """Fields (N, C, *grid) on the torus or the unit cube: FNO, TFNO, U-NO."""

    name = "grid"
    data = "fields on a grid"
    capabilities = frozenset({"audit", "auto_precision", "plots", "rollout", "export", "onnx", "symmetries"})
    declared_options = OPTIONS
    operator_arguments = ("domain_padding",)
    file_kind = GRID

    def settle(self, config, paths: Sequence[str]) -> dict:
        """``--residual`` where it is not given: on for trajectories (the training file holds them, or
        ``--trajectories``), off for pairs."""
        if config.residual is not None:
            return {}
        return {"residual": bool(config.trajectories or holds_trajectories(paths[0]))}

    def dataset(self, path: str, config):
        """Pairs of fields, or one-step windows of trajectories (``--trajectories``, or files that say they hold
        trajectories: ``docs/forecasting.md``)."""
        if config.trajectories or holds_trajectories(path):
            return TrajectoryWindows(path, config.history, key=config.x_key, spatial_dims=config.spatial_dims,
                                     static_key=config.static_key)
        if config.history > 1 or most_unrolled(config.unroll) > 1 or config.residual:
            raise DataError(f"{path} holds input-output pairs; --history, --unroll and --residual apply to "
                            "trajectories (mpno generate ... --steps T, or --trajectories for arrays (N, T, C, *grid))")
        return OperatorDataset(path, x_key=config.x_key, y_key=config.y_key, spatial_dims=config.spatial_dims or 2,
                               time_in=config.time_in, time_out=config.time_out)

    def outside_training(self, model: NormalizedOperator, dataset) -> str | None:
        """Input channels whose values lie more than :data:`FAR` standard deviations from the training inputs'
        mean (the model's input normaliser): the model extrapolates there."""
        mean, std = model.inputs.mean.double().cpu(), model.inputs.std.double().cpu()
        far = torch.zeros_like(mean)
        for i in range(len(dataset)):
            x = dataset[i][0].double().flatten(1)
            far = torch.maximum(far, ((x - mean[:, None]).abs().amax(1)) / std.clamp_min(1e-300))
        beyond = [f"channel {c} up to {float(far[c]):.0f}σ" for c in range(len(far)) if far[c] > FAR]
        if not beyond:
            return None
        return (f"inputs beyond {FAR:g} standard deviations of the training inputs ({', '.join(beyond)}); the model "
                "extrapolates there")

    def trajectories_in(self, dataset):
        return dataset if isinstance(dataset, TrajectoryWindows) else None

    def _static_channels(self, dataset) -> int:
        """Channels of static inputs at the end of a data set's inputs (0 for pairs)."""
        windows = self.trajectories_in(dataset)
        return 0 if windows is None else windows.static_channels

    def power_spectrum(self, fields: torch.Tensor, model: NormalizedOperator) -> tuple[list[int], list[float]]:
        """The power per radial wavenumber ``round(|k|)`` of periodic fields, summed over channels."""
        dims = tuple(range(2, fields.ndim))
        power = torch.fft.fftn(fields.double(), dim=dims, norm="forward").abs().pow(2).sum(1).mean(0)
        grids = torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64) for n in fields.shape[2:]],
                               indexing="ij")
        radius = torch.stack(grids).pow(2).sum(0).sqrt().round().long().to(power.device)
        largest = min(fields.shape[2:]) // 2  # the wavenumbers every direction resolves
        kept = radius <= largest
        spectrum = torch.zeros(largest + 1, dtype=torch.float64, device=power.device)
        return list(range(largest + 1)), spectrum.index_add_(0, radius[kept], power[kept]).tolist()

    def training_set(self, dataset, config):
        """Windows of as many targets as ``--unroll`` unrolls at most, of trajectories; pairs as they are."""
        steps = most_unrolled(config.unroll)
        return dataset.with_unroll(steps) if steps > 1 else dataset

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
        if config.augment:
            self.augmentation(config, train)  # refuses what cannot be a symmetry of these data

    def augmentation(self, config, train) -> Augmentation | None:
        """``--augment``'s transformation of training batches (checked against the data), or ``None``."""
        if not config.augment:
            return None
        kinds, types = self.symmetries(config, train, config.augment)
        note = None
        if config.channel_types is None:
            note = (f"--augment: channel types from {train.path.name}: inputs {','.join(types.inputs)}, outputs "
                    f"{','.join(types.outputs)}" if self._file_channel_types(train) else
                    "--augment: every channel transforms as a scalar (declare vectors and pseudo-scalars with "
                    "--channel-types)")
        return Augmentation(kinds, types, **self.symmetry_options(config, self.grid(train)), note=note)

    @staticmethod
    def _symmetry_kinds(dataset, kinds: Sequence[str]) -> list[str]:
        """``kinds`` as a list (``shift,flip`` or ``shift flip``); trajectories refused."""
        if isinstance(dataset, TrajectoryWindows):
            raise ValueError("symmetries do not apply to trajectories yet (a window's snapshots and static inputs "
                             "would share one symmetry); drop --augment and --symmetry-check")
        return [kind for value in kinds for kind in value.split(",") if kind]

    def symmetry_representatives(self, config, kinds: Sequence[str], dataset) -> dict:
        """The symmetries ``mpno evaluate --symmetry-check`` measures on ``dataset``'s grid
        (:func:`mpno.data.symmetries.representatives`)."""
        grid = self.grid(dataset)
        return representatives(kinds, grid, **self.symmetry_options(config, grid))

    def symmetry_options(self, config, grid: Sequence[int]) -> dict:
        """How symmetries act on this domain's grids (:func:`mpno.data.symmetries.draw`): periodic fields
        reflected about their first point, every axis shifted."""
        return {"about_first_point": config.periodic, "shift_axes": None}

    def symmetries(self, config, dataset, kinds: Sequence[str]) -> tuple[list[str], ChannelTypes]:
        """The symmetries ``kinds`` names (``shift,flip`` or ``shift flip``) and the channels' types
        (``--channel-types``), refused where they cannot be symmetries of ``dataset``'s fields. Periodic fields
        (``x_j = j/n``) are reflected about their first point, others about the grid's centre
        (:class:`mpno.data.symmetries.GridSymmetry`)."""
        kinds = self._symmetry_kinds(dataset, kinds)
        (in_channels, *grid), (out_channels, *_) = dataset.shapes
        declared = config.channel_types or self._file_channel_types(dataset)
        try:
            types = ChannelTypes.parse(declared, len(grid), in_channels, out_channels)
        except ValueError:
            if config.channel_types is not None:
                raise
            raise DataError(f"{dataset.path}: the channel_type attributes of its arrays ({declared}) do not fit "
                            f"its {in_channels} input and {out_channels} output channels; declare the types: "
                            "--channel-types INPUTS/OUTPUTS") from None
        check_augment(kinds, grid, config.periodic, types, declared is not None)
        return kinds, types

    @staticmethod
    def _file_channel_types(dataset) -> str | None:
        """``INPUTS/OUTPUTS`` from the ``channel_type`` attributes of the file's input and output arrays (mpno's
        generators write them), or ``None`` where either array has none."""
        declared = declared_channel_types(dataset.path)
        keys = (dataset.pairs.x_key, dataset.pairs.y_key)
        return "/".join(declared[key] for key in keys) if all(key in declared for key in keys) else None

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
        static = self._static_channels(dataset)
        if static != model.static_channels:
            raise DataError(f"{dataset.path}: holds {static} channels of static inputs, and the model was trained "
                            f"with {model.static_channels}; check --static-key and the file")

    def channels_and_modes(self, config, train) -> tuple[int, int, tuple[int, ...]]:
        """Input channels, output channels and modes of the operator for ``train``."""
        x_shape, y_shape = train.shapes
        return x_shape[0], y_shape[0], self.modes(config, train)

    def fitted(self, operator, train, residual: bool = False) -> NormalizedOperator:
        """``operator`` with normalisers fitted on ``train`` (on trajectories: over samples and times, every
        target snapshot of a window counted; with ``residual``, on the increments from the snapshot before).
        Trajectories' static inputs are recorded in the model, so that a rollout holds them fixed."""
        static = self._static_channels(train)

        def outputs():
            for x, y in train:
                targets = y if y.ndim > x.ndim else y.unsqueeze(0)
                if residual:
                    newest = x.shape[0] - static
                    before = torch.cat([x[newest - targets.shape[1]:newest].unsqueeze(0), targets[:-1]])
                    targets = targets - before
                yield from targets

        return NormalizedOperator(operator, UnitGaussianNormalizer.fit(x for x, _ in train),
                                  UnitGaussianNormalizer.fit(outputs()), residual=residual, static_channels=static)

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
        """``--loss`` and ``--eval-losses``: relative L2, H1 or MSE (H1 differentiates ``periodic`` fields)."""
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
        x = torch.randn(config.batch_size, config.channels, *config.resolution, device=device)
        y = torch.randn(config.batch_size, config.channels, *config.resolution, device=device)
        return x, y, losses.LpLoss(2)
