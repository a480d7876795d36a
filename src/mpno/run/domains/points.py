"""Point clouds: per-point features in, per-point values out, clouds of any size: the domain of GINO and
FNO-GNO."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...checks import modes_per_dim
from ...data import DataError
from ...data.files import POINT_CLOUDS, available_keys
from ...data.pointclouds import POTENTIAL_FLOW_KEYS, PointCloudBatches, PointCloudDataset, PointValues
from ...data.symmetries import POINT_KINDS, TYPES, ChannelTypes, PointAugmentation, point_representatives
from ...nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from ...nn.point_losses import PointL2Loss
from .. import distributed
from ..options import option
from ..plots import plot_point_samples
from .base import Domain
from .grid import OPTIONS as GRID_OPTIONS

OPTIONS = {
    "inputs": option([], "str_list", "point clouds: the input arrays (default: normals flow)", group="data"),
    "outputs": option([], "str_list", "point clouds: the output arrays (default: cp)", group="data"),
    "latent_grid": option(16, "int", "point clouds: points per dimension of the latent grid", low=2, group="model"),
    "radius": option(None, "float", "point clouds: neighbourhood radius of the graph kernel integrals, in the "
                     "latent box's units (default: 1.5 latent cells)", low=0.0, open_low=True, optional=True,
                     group="model"),
    "kernel": option(None, "str", "point clouds: the form of the graph kernel integral the operator lets you "
                     "choose; default: the operator's (gino: its input one, nonlinear; fno-gno: its output one, "
                     "linear)", choices=("linear", "nonlinear"), optional=True, group="model"),
    "chunk_size": option(65536, "int", "point clouds: edges per message-passing chunk (bounds its memory)", low=1,
                         group="model"),
    "augment": GRID_OPTIONS["augment"],
    "channel_types": GRID_OPTIONS["channel_types"],
}

#: ``mpno bench`` on point clouds: potential flow past ellipsoids, this many surface points per cloud ...
BENCH_POINTS = 2048
#: ... and the neighbourhood radius of the operator's graph kernel integrals.
BENCH_RADIUS = 0.2


class PointsDomain(Domain):
    """Point clouds: per-point features in, per-point values out, clouds of any size: GINO."""

    name = "points"
    data = "point clouds"
    capabilities = frozenset({"plots", "symmetries"})
    lacks = {"auto_precision": "audits Fourier coefficients of grid data on the cube, and a point cloud has none",
             "audit": "it audits the Fourier or spherical harmonic coefficients of fields on a grid or the sphere, "
                      "and a point cloud has none",
             "rollout": "point clouds are read as pairs of inputs and outputs, not as trajectories",
             "export": "its operators search the neighbourhoods of their input points at run time, which a traced "
                       "program cannot hold; export --format safetensors and run it through mpno.load_model",
             "onnx": "its operators search the neighbourhoods of their input points at run time, which ONNX "
                     "cannot hold; export --format safetensors and run it through mpno.load_model"}
    declared_options = OPTIONS
    operator_arguments = ("latent_grid", "radius", "kernel", "chunk_size", "domain_padding")
    own_loss = "the relative L2 error over each cloud's points"
    default_mode = 8
    file_kind = POINT_CLOUDS

    def dataset(self, path: str, config) -> PointCloudDataset:
        return PointCloudDataset(path, inputs=config.inputs or None, outputs=config.outputs or None)

    def grid(self, dataset) -> list[int]:
        """Point clouds have no grid: empty."""
        return []

    def check_data(self, train, tests: dict, config) -> None:
        """Refuse test sets whose channels per point differ from the training set's, and ``--augment`` where it
        cannot be a symmetry of the training clouds."""
        for name, test in tests.items():
            if test.channels != train.channels:
                raise DataError(f"{name}: {test.channels} (input, output) channels per point, but the training "
                                f"data have {train.channels}")
        if config.augment:
            self.augmentation(config, train)

    def augmentation(self, config, train) -> PointAugmentation | None:
        """``--augment``'s transformation of training batches (checked against the data), or ``None``."""
        if not config.augment:
            return None
        kinds, types = self.symmetries(config, train, config.augment)
        note = None
        if config.channel_types is None:
            note = (f"--augment: channel types from {train.path.name}: inputs {','.join(types.inputs)}, outputs "
                    f"{','.join(types.outputs)}")
        return PointAugmentation(kinds, types, note)

    def symmetries(self, config, dataset, kinds) -> tuple[list[str], ChannelTypes]:
        """The maps ``kinds`` names (``rotate,reflect`` or ``rotate reflect``) and the channels' types: from
        ``--channel-types``, else from the ``channel_type`` attributes of the file's arrays; refused where an
        array does not say."""
        kinds = [kind for value in kinds for kind in value.split(",") if kind]
        unknown = [kind for kind in kinds if kind not in POINT_KINDS]
        if unknown:
            raise ValueError(f"--augment {','.join(unknown)}: not an augmentation of point clouds; use "
                             f"{', '.join(POINT_KINDS)} (about each cloud's centroid; translations and scalings "
                             "are not offered: they move clouds off the box the operator's position map was fitted "
                             "on)")
        dims = dataset.points.shape[-1]
        in_channels, out_channels = dataset.channels
        if config.channel_types is not None:
            return kinds, ChannelTypes.parse(config.channel_types, dims, in_channels, out_channels)
        keys = dataset.keys or ((), ())
        missing = [key for key in (*keys[0], *keys[1]) if key not in dataset.channel_types]
        if missing or dataset.keys is None:
            raise ValueError(f"--augment {','.join(kinds)}: the arrays {', '.join(missing) or 'of these clouds'} of "
                             f"{dataset.path} do not say how they transform (an attribute channel_type); declare "
                             f"every input and output channel: --channel-types INPUTS/OUTPUTS, e.g. "
                             f"vector,vector/scalar (a vector fills {dims} channels)")
        declared = [[dataset.channel_types[key].lower() for key in side] for side in keys]
        bad = [kind for side in declared for kind in side if kind not in TYPES]
        if bad:
            raise DataError(f"{dataset.path}: channel_type {bad[0]!r} is not a channel type; use "
                            f"{', '.join(TYPES)}")
        return kinds, ChannelTypes.parse("/".join(",".join(side) for side in declared), dims, in_channels,
                                         out_channels)

    def symmetry_representatives(self, config, kinds, dataset) -> dict:
        """The maps ``mpno evaluate --symmetry-check`` measures on ``dataset``'s clouds
        (:func:`mpno.data.symmetries.point_representatives`)."""
        return point_representatives(kinds, dataset.points.shape[-1])

    def check_for_model(self, path: str, dataset, model: NormalizedOperator) -> None:
        if dataset.channels != (model.operator.in_channels, model.operator.out_channels):
            raise DataError(f"{path}: {dataset.channels} (input, output) channels per point do not fit the model")

    def channels_and_modes(self, config, train) -> tuple[int, int, tuple[int, ...]]:
        return (*train.channels, modes_per_dim(config.n_modes, train[0][0].points.shape[-1], "--n-modes"))

    def fitted(self, operator, train, residual: bool = False) -> NormalizedOperator:
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

    def outside_training(self, model: NormalizedOperator, dataset) -> str | None:
        """Points that the model's position map (fitted on the training clouds) puts outside its latent box: they
        are moved to the box's nearest point."""
        operator = model.operator
        box = torch.tensor(operator.bounds, dtype=torch.float64)
        scale, shift = operator.position_scale.double().cpu(), operator.position_shift.double().cpu()
        outside, total, clouds, farthest = 0, 0, 0, 0.0
        for i in range(len(dataset)):
            mapped = dataset[i][0].points.double() * scale + shift
            beyond = (box[:, 0] - mapped).clamp_min(0) + (mapped - box[:, 1]).clamp_min(0)
            count = int((beyond.amax(1) > 0).sum())
            outside, total, clouds = outside + count, total + len(mapped), clouds + bool(count)
            farthest = max(farthest, float(beyond.norm(dim=1).max()) / float(scale))
        if not outside:
            return None
        return (f"{outside} of {total} points ({clouds} of {len(dataset)} clouds) lie outside the box the model's "
                f"position map was fitted on, up to {farthest:.3g} beyond it in the data's units; they are moved to "
                "the box's nearest point")

    def describe_predictions(self, file, dataset) -> None:
        """The clouds' sizes (the arrays are padded)."""
        file.create_dataset("sizes", data=np.array([dataset.sizes[i] for i in dataset.indices]))

    def plot(self, model: NormalizedOperator, batches, path: Path, name: str, dataset) -> None:
        """The first test cloud as 3D scatter plots of truth, prediction and error."""
        x, y, _ = next(batches.iterate())
        plot_point_samples(model, x, y, path, title=name)

    def bench_model(self, config):
        """A model for clouds of potential flow past ellipsoids (6 input features: normal and stream direction;
        1 output: the pressure coefficient); ``config.resolution`` is its latent grid."""
        return self.bench_operator(config, 6, 1, latent_grid=tuple(config.resolution), radius=BENCH_RADIUS)

    def bench_batch(self, config, model, device: torch.device) -> tuple:
        """``config.batch_size`` clouds of :data:`BENCH_POINTS` points, their neighbourhoods searched."""
        from ...data import potential_flow  # imported here: only the point-cloud benchmarks need it (and scipy)

        clouds = potential_flow.dataset(config.batch_size, points=BENCH_POINTS)
        model.fit_positions(clouds[i][0].points for i in range(len(clouds)))
        batches = PointCloudBatches(clouds, config.batch_size, device, neighborhoods=model.neighborhoods)
        return (*batches.batch(range(config.batch_size)), PointL2Loss())

    def in_float64(self, x):
        """A batch of clouds with its positions, features and weights in float64."""
        return dataclasses.replace(x, points=x.points.double(), features=x.features.double(),
                                   weights=None if x.weights is None else x.weights.double())


def _padded(sizes: tuple[int, ...], values: torch.Tensor, width: int) -> torch.Tensor:
    """Per-point ``values`` (P, C) of clouds of ``sizes`` as (clouds, width, C), zero beyond each cloud."""
    out = values.new_zeros(len(sizes), width, *values.shape[1:])
    for i, part in enumerate(values.split(list(sizes))):
        out[i, :len(part)] = part
    return out
