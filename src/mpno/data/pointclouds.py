"""Point-cloud data: the batch types, a dataset of variable-size clouds, and batches with cached neighbourhoods.

Files (``.h5``/``.hdf5`` or ``.npz``) hold, for N samples of up to P points in d dimensions:

* ``points`` (N, P, d), required;
* input and output arrays, each per point, (N, P) or (N, P, C), or per sample,
  (N,) or (N, C), repeated at every point of the sample (an array whose second
  axis has P entries is per point);
* optional ``sizes`` (N,): sample ``i`` uses its first ``sizes[i]`` points (the
  rest is padding), so clouds of different sizes share one file;
* optional quadrature ``weights`` (N, P) (a key given as ``weights=``).

An input or output array may say how it transforms under rotations and
reflections (``mpno train --augment rotate``) in its attribute ``channel_type``:
``scalar``, ``pseudoscalar``, ``vector`` or ``pseudovector``
(:mod:`mpno.data.symmetries`).

:mod:`mpno.data.potential_flow` writes such files (inputs ``normals`` and
``flow``, output ``cp``). :func:`car_cfd` reads the car-pressure layout used by
``neuraloperator``'s GINO example.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from ..ops.neighbors import Neighborhood
from .files import (POINT_CLOUDS, UNREADABLE, DataError, check_array, declared_channel_types, file_kind, misfit,
                    unreadable)

#: Inputs and outputs of :mod:`mpno.data.potential_flow` files, the defaults when a file has them.
POTENTIAL_FLOW_KEYS = (("normals", "flow"), ("cp",))


@dataclass
class PointClouds:
    """A batch of point clouds, concatenated: the input of :class:`mpno.GINO`.

    Attributes:
        points: (P, d) coordinates of every cloud, one after another.
        features: (P, C) input features at the points.
        sizes: points per cloud (they sum to P).
        weights: optional (P,) quadrature weights (e.g. the area each point stands for).
        neighbors: optional cached neighbourhoods (latent ← points, points ← latent)
            of the whole batch, as :meth:`mpno.GINO.neighborhoods` gives them per cloud.

    ``len()`` is the number of clouds. Arithmetic with a tensor acts on the
    features (``clouds - mean`` shifts them), so :class:`mpno.NormalizedOperator`
    standardises a GINO's input features as it does an FNO's fields.
    """

    points: torch.Tensor
    features: torch.Tensor
    sizes: tuple[int, ...]
    weights: torch.Tensor | None = None
    neighbors: tuple[Neighborhood, Neighborhood] | None = None

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if sum(self.sizes) != len(self.points) or len(self.features) != len(self.points):
            raise ValueError(f"PointClouds: sizes {self.sizes} must sum to the {len(self.points)} points, "
                             f"and features must have one row per point (got {len(self.features)})")

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    @property
    def ndim(self) -> int:
        return self.features.ndim

    def __sub__(self, other: torch.Tensor) -> "PointClouds":
        return dataclasses.replace(self, features=self.features - other)

    def __truediv__(self, other: torch.Tensor) -> "PointClouds":
        return dataclasses.replace(self, features=self.features / other)

    def to(self, device: torch.device | str) -> "PointClouds":
        neighbors = None if self.neighbors is None else tuple(n.to(device) for n in self.neighbors)
        return PointClouds(self.points.to(device), self.features.to(device), self.sizes,
                           None if self.weights is None else self.weights.to(device), neighbors)

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-point ``values`` (P, ...) as one tensor per cloud."""
        return list(values.split(list(self.sizes)))

    @classmethod
    def cat(cls, clouds: Sequence["PointClouds"]) -> "PointClouds":
        """One batch of the clouds of several batches (neighbourhoods kept if all have them)."""
        if not clouds:
            raise ValueError("PointClouds.cat needs at least one batch")
        if len({c.weights is None for c in clouds}) > 1:
            raise ValueError("PointClouds.cat: either every batch has quadrature weights or none has")
        neighbors = None
        if all(c.neighbors is not None for c in clouds):
            latent = [c.neighbors[0].n_queries // len(c) for c in clouds]
            neighbors = (Neighborhood.cat([c.neighbors[0] for c in clouds], [len(c.points) for c in clouds]),
                         Neighborhood.cat([c.neighbors[1] for c in clouds], [g * len(c) for g, c in zip(latent, clouds)]))
        weights = None if clouds[0].weights is None else torch.cat([c.weights for c in clouds])
        return cls(torch.cat([c.points for c in clouds]), torch.cat([c.features for c in clouds]),
                   sum((c.sizes for c in clouds), ()), weights, neighbors)


@dataclass
class PointValues:
    """Target values of a batch of point clouds: ``values`` (P, C), ``sizes``, optional ``weights`` (P,)."""

    values: torch.Tensor
    sizes: tuple[int, ...]
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.sizes)

    def to(self, device: torch.device | str) -> "PointValues":
        return PointValues(self.values.to(device), self.sizes, None if self.weights is None else self.weights.to(device))

    @classmethod
    def cat(cls, parts: Sequence["PointValues"]) -> "PointValues":
        weights = None if parts[0].weights is None else torch.cat([p.weights for p in parts])
        return cls(torch.cat([p.values for p in parts]), sum((p.sizes for p in parts), ()), weights)


def collate(samples: Sequence[tuple[PointClouds, PointValues]]) -> tuple[PointClouds, PointValues]:
    """One batch of ``(clouds, values)`` samples: the ``collate_fn`` for a ``DataLoader``."""
    return PointClouds.cat([x for x, _ in samples]), PointValues.cat([y for _, y in samples])


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .h5/.npz file (loaded into memory: point-cloud files are small)."""
    kind = file_kind(path)
    try:
        if kind == "HDF5":
            with h5py.File(path, "r") as f:
                return {key: f[key][()] for key in f if isinstance(f[key], h5py.Dataset)}
        if kind == "npz":
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
    except UNREADABLE as err:
        raise unreadable(path, err, POINT_CLOUDS) from None
    raise misfit(path, POINT_CLOUDS) or DataError(f"{path}: point clouds are read from .h5/.hdf5 or .npz files")


def _array(path: Path, arrays: dict, key: str) -> np.ndarray:
    """``arrays[key]``, checked to be numbers with a sample axis."""
    if key not in arrays:
        raise DataError(f"{path}: no array '{key}'; the file has {sorted(arrays)}")
    array = np.asarray(arrays[key])
    check_array(path, key, array.shape, array.dtype)
    return array


def _channels(path: Path, arrays: dict, keys: Sequence[str], count: int, width: int) -> np.ndarray:
    """The arrays ``keys`` as (count, width, channels), per-sample arrays repeated at every point."""
    columns = []
    for key in keys:
        array = _array(path, arrays, key).astype(np.float32)
        if len(array) != count:
            raise DataError(f"{path}: '{key}' has {len(array)} samples but 'points' has {count}")
        if array.ndim >= 2 and array.shape[1] == width:  # per point
            array = array.reshape(count, width, -1)
        elif array.ndim <= 2:  # per sample: repeated at every point
            array = np.broadcast_to(array.reshape(count, 1, -1), (count, width, array.size // count))
        else:
            raise DataError(f"{path}: '{key}' has shape {array.shape}; expected (N, P[, C]) or (N[, C])")
        columns.append(array)
    return np.concatenate(columns, axis=2)


class PointCloudDataset(torch.utils.data.Dataset):
    """Samples ``(PointClouds, PointValues)`` of one cloud each, from a point-cloud file.

    Args:
        source: an ``.h5``/``.npz`` path (the layout of this module's docstring).
        inputs, outputs: keys of the input and output arrays, concatenated along
            channels (default: ``normals``, ``flow`` → ``cp`` when the file has them).
        weights: key of the quadrature weights (default: none, or ``weights`` if present).
        indices: which samples (default: all).

    ``keys`` holds the input and the output keys (``None`` for :meth:`from_clouds`), ``channel_types`` the
    ``channel_type`` the file gives its arrays.
    """

    def __init__(self, source: str | os.PathLike, inputs: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, weights: str | None = None,
                 indices: Sequence[int] | None = None):
        path = Path(source)
        arrays = _read_arrays(path)
        if "points" not in arrays:
            raise misfit(path, POINT_CLOUDS) or DataError(f"{path}: no 'points' array; the file has {sorted(arrays)}")
        points = _array(path, arrays, "points")
        if points.ndim != 3:
            raise DataError(f"{path}: 'points' has shape {points.shape}; expected (samples, points, dims)")
        count, width = points.shape[:2]
        if inputs is None and outputs is None:
            inputs, outputs = POTENTIAL_FLOW_KEYS
        if inputs is None or outputs is None:
            raise DataError(f"{path}: name both inputs= and outputs= (the file has {sorted(arrays)})")
        if weights is None and "weights" in arrays:
            weights = "weights"
        sizes = _array(path, arrays, "sizes") if "sizes" in arrays else np.full(count, width)
        if sizes.shape != (count,) or not np.isin(sizes, np.arange(1, width + 1)).all():
            raise DataError(f"{path}: 'sizes' must hold {count} whole counts in [1, {width}]")
        if weights is not None and (weights not in arrays or _array(path, arrays, weights).shape != (count, width)):
            raise DataError(f"{path}: quadrature weights '{weights}' must be an array ({count}, {width})")
        channels = [_channels(path, arrays, keys, count, width) for keys in (inputs, outputs)]
        self._store(path, points, *channels, sizes, None if weights is None else arrays[weights], indices)
        self.keys, self.channel_types = (tuple(inputs), tuple(outputs)), declared_channel_types(path)

    @classmethod
    def from_clouds(cls, name: str | os.PathLike, clouds: Sequence[tuple]) -> "PointCloudDataset":
        """A dataset of ``(points (P, d), inputs (P, C), outputs (P, C'), weights (P,) or None)``
        arrays, one tuple per cloud (padded to the largest cloud internally)."""
        width = max(len(c[0]) for c in clouds)

        def padded(k):
            if clouds[0][k] is None:
                return None
            out = np.zeros((len(clouds), width, *np.shape(clouds[0][k])[1:]))
            for i, cloud in enumerate(clouds):
                out[i, :len(cloud[k])] = cloud[k]
            return out

        dataset = cls.__new__(cls)
        dataset.keys, dataset.channel_types = None, {}
        dataset._store(Path(name), padded(0), padded(1), padded(2), np.array([len(c[0]) for c in clouds]), padded(3))
        return dataset

    def _store(self, path: Path, points, inputs, outputs, sizes, weights, indices=None) -> None:
        self.path = path
        self.points = torch.from_numpy(np.asarray(points, dtype=np.float32))
        self.inputs = torch.from_numpy(np.asarray(inputs, dtype=np.float32))
        self.outputs = torch.from_numpy(np.asarray(outputs, dtype=np.float32))
        self.sizes = [int(s) for s in sizes]
        self.weights = None if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float32))
        count = len(self.points)
        self.indices = list(range(count)) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < count for i in self.indices):
            raise DataError(f"{self.path}: sample indices must lie in [0, {count})")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def channels(self) -> tuple[int, int]:
        """(input channels, output channels)."""
        return self.inputs.shape[2], self.outputs.shape[2]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[PointClouds, PointValues]:
        index = self.indices[i]
        size = self.sizes[index]
        points, x, y = self.points[index, :size], self.inputs[index, :size], self.outputs[index, :size]
        weights = None if self.weights is None else self.weights[index, :size]
        for name, values in (("points", points), ("inputs", x), ("outputs", y), ("weights", weights)):
            if values is not None and not torch.isfinite(values).all():
                raise DataError(f"{self.path}: sample {index} holds NaN or inf {name}; remove or repair it")
        return PointClouds(points, x, (size,), weights), PointValues(y, (size,), weights)

    @property
    def units(self) -> int:
        """What :meth:`subset` selects among: samples."""
        return len(self)

    def subset(self, indices: Sequence[int]) -> "PointCloudDataset":
        """The samples at positions ``indices`` of this dataset (sharing its arrays)."""
        clone = copy.copy(self)
        clone.indices = [self.indices[i] for i in indices]
        return clone


class PointCloudBatches:
    """Mini-batches of a :class:`PointCloudDataset` held in memory, each cloud's neighbourhoods computed once.

    Args:
        dataset: the samples.
        batch_size: clouds per batch.
        device: where batches go.
        neighborhoods: ``neighborhoods(points) -> (inward, outward)`` for one cloud,
            usually a model's :meth:`mpno.GINO.neighborhoods`; its results are cached
            per sample on the CPU. ``None``: the model searches at every call.
        shares: ``shares(count, seed) -> [(indices, global batch size), ...]``: which
            samples this process takes of each batch, in order (seed ``None``) or
            shuffled (:func:`mpno.run.distributed.rank_batches` under ``torchrun``).
            Default: every sample, ``batch_size`` at a time, in one process.

    ``iterate(seed)`` yields ``(clouds, values, global batch size)`` as the trainer expects.
    """

    def __init__(self, dataset: PointCloudDataset, batch_size: int, device: torch.device | str = "cpu",
                 neighborhoods: Callable[[torch.Tensor], tuple[Neighborhood, Neighborhood]] | None = None,
                 shares: Callable[[int, int | None], list[tuple[torch.Tensor, int]]] | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not supported; give a positive int")
        self.samples = []
        for i in range(len(dataset)):
            x, y = dataset[i]
            if neighborhoods is not None:
                x.neighbors = tuple(n.to("cpu") for n in neighborhoods(x.points))
            self.samples.append((x, y))
        self.batch_size, self.device = batch_size, torch.device(device)
        self.shares = shares or self._one_process

    def _one_process(self, count: int, seed: int | None) -> list[tuple[torch.Tensor, int]]:
        order = torch.arange(count) if seed is None else torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        return [(index, len(index)) for index in order.split(self.batch_size)]

    def __len__(self) -> int:
        return len(self.shares(len(self.samples), None))

    def batch(self, indices: Sequence[int]) -> tuple[PointClouds, PointValues]:
        """The samples at ``indices`` as one batch on the device."""
        x, y = collate([self.samples[int(i)] for i in indices])
        return x.to(self.device), y.to(self.device)

    def iterate(self, seed: int | None = None):
        """``(clouds, values, global batch size)``, shuffled by ``seed`` (``None``: in order)."""
        for index, total in self.shares(len(self.samples), seed):
            yield (*self.batch(index), total)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a triangle mesh in a PLY file (ASCII or binary)."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise DataError(f"{path}: not a PLY file")
        fmt, elements = None, []  # [name, count, [(property, dtype) or (property, (count dtype, item dtype))]]
        for raw in f:
            words = raw.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append([words[1], int(words[2]), []])
            elif words[0] == "property" and words[1] == "list":
                elements[-1][2].append((words[4], (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif words[0] == "property":
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        body = f.read()
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataError(f"{path}: unknown PLY format {fmt!r}")
    order = ">" if fmt == "binary_big_endian" else "<"
    tokens = np.array(body.split(), dtype=np.float64) if fmt == "ascii" else None
    offset, found = 0, {}
    for name, count, properties in elements:
        lists = [p for p in properties if isinstance(p[1], tuple)]
        if lists and (len(properties) != 1 or name != "face"):
            raise DataError(f"{path}: element '{name}' has list properties mpno does not read")
        if fmt == "ascii":
            width = 4 if lists else len(properties)  # triangles: "3 i j k"
            rows = tokens[offset:offset + count * width].reshape(count, width)
            offset += count * width
            found[name] = rows[:, 1:] if lists else {p: rows[:, k] for k, (p, _) in enumerate(properties)}
            continue
        if lists:
            length, item = lists[0][1]
            dtype = np.dtype([("n", order + length), ("i", order + item, 3)])
        else:
            dtype = np.dtype([(p, order + t) for p, t in properties])
        rows = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
        found[name] = rows
        if lists and (rows["n"] != 3).any():
            raise DataError(f"{path}: faces must be triangles")
    if "vertex" not in found or "face" not in found:
        raise DataError(f"{path}: a mesh needs 'vertex' and 'face' elements")
    vertex = found["vertex"]
    vertices = np.stack([np.asarray(vertex[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    face = found["face"]
    triangles = np.asarray(face if fmt == "ascii" else face["i"], dtype=np.int64)
    return vertices, triangles


def vertex_normals_and_areas(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vertex normals (area-weighted face normals) and the area each vertex stands for (⅓ of its triangles')."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)  # |cross| = 2 · area, along the face normal
    normals, areas = np.zeros_like(vertices), np.zeros(len(vertices))
    for k in range(3):
        np.add.at(normals, triangles[:, k], cross)
        np.add.at(areas, triangles[:, k], np.linalg.norm(cross, axis=1) / 6)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300), areas


def car_cfd(root: str | os.PathLike, split: str = "train", n: int | None = None) -> PointCloudDataset:
    """The car-pressure data of ``neuraloperator``'s GINO example (Umetani & Bickel 2018), as point clouds.

    ``root`` holds ``train.txt`` and ``test.txt`` (comma-separated sample names) and
    ``data/<name>/tri_mesh.ply`` with ``data/<name>/press.npy``. Each cloud is a
    mesh's vertices, scaled per axis into [-1, 1] by the bounding box of all
    listed meshes; inputs are vertex normals, the output is the pressure, and the
    quadrature weights are vertex areas. As in ``neuraloperator``, a pressure file
    with 96 values more than vertices drops values 16 to 111.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not supported; allowed: 'train', 'test'")
    names = {}
    for part in ("train", "test"):
        listing = root / f"{part}.txt"
        if not listing.is_file():
            raise DataError(f"{listing}: no such file; is {root} the car-pressure data directory?")
        names[part] = [s.strip() for s in listing.read_text().split(",") if s.strip()]
    meshes = {name: read_ply(root / "data" / name / "tri_mesh.ply") for part in names.values() for name in part}
    low = np.min([v.min(0) for v, _ in meshes.values()], axis=0)
    high = np.max([v.max(0) for v, _ in meshes.values()], axis=0)
    clouds = []
    for name in names[split][:n]:
        vertices, triangles = meshes[name]
        scaled = 2 * (vertices - low) / (high - low) - 1
        normals, areas = vertex_normals_and_areas(scaled, triangles)
        pressure = np.load(root / "data" / name / "press.npy", allow_pickle=False).reshape(-1)
        if len(pressure) == len(vertices) + 96:
            pressure = np.concatenate([pressure[:16], pressure[112:]])
        if len(pressure) != len(vertices):
            raise DataError(f"{root / 'data' / name}: {len(pressure)} pressures for {len(vertices)} vertices")
        clouds.append((scaled, normals, pressure[:, None], areas))
    return PointCloudDataset.from_clouds(root / split, clouds)
