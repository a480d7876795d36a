"""Reading (input, output) field pairs from the files users have, and writing our own.

Formats, chosen by extension and checked against the file's first bytes:

* ``.pt`` / ``.pth``: the ``neuraloperator`` layout, a dict of tensors with the
  inputs and outputs under ``x`` and ``y`` (or ``x_key``/``y_key``), loaded with
  ``torch.load(weights_only=True)`` (memory-mapped where the file allows).
* ``.h5`` / ``.hdf5``: mpno's own files (``x``, ``y``), PDEBench 2D Darcy
  (``nu`` → ``tensor``), PDEBench time series (one ``tensor`` of shape
  (N, T, *grid) with a ``t-coordinate``: the input is snapshot ``time_in``, the
  output snapshot ``time_out``), or any two datasets named by ``x_key``/``y_key``.
  Read lazily, one sample at a time: a file larger than memory can be trained on.
* ``.npz``: named arrays (``x``, ``y`` or ``x_key``/``y_key``), no pickles.

Arrays are (N, *grid) or (N, C, *grid); ``spatial_dims`` says which when the
file does not (default: 2, the common ``neuraloperator`` case).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from ..checks import one_line, reason
from ..writing import new_hdf5

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FORMAT_VERSION = 1


class DataError(ValueError):
    """A data file is missing, malformed or holds values we cannot train on."""


def _kind_by_content(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        return "HDF5"
    if head[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "npz" if names and all(n.endswith(".npy") for n in names) else "torch"
    if head[:1] == b"\x80":
        return "torch"  # a legacy (pickle) torch file
    return "unknown"


def file_kind(path: Path) -> str:
    """``"torch"``, ``"HDF5"`` or ``"npz"``; ``DataError`` if the file is not what its extension says."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    expected = {".pt": "torch", ".pth": "torch", ".h5": "HDF5", ".hdf5": "HDF5", ".npz": "npz"}.get(path.suffix.lower())
    if expected is None:
        raise DataError(f"{path}: unknown extension {path.suffix!r}; use .pt/.pth (torch), .h5/.hdf5 or .npz")
    actual = _kind_by_content(path)
    if actual != expected:
        found = "unrecognised bytes" if actual == "unknown" else f"a {actual} file"
        raise DataError(f"{path}: the extension says {expected} but the content is {found}; "
                        "rename the file or convert it")
    return actual


#: What :func:`identify` says a file holds.
CHECKPOINT, GRID, POINT_CLOUDS, SPHERE = "checkpoint", "grid", "point clouds", "sphere"
_IS = {CHECKPOINT: "an mpno checkpoint (a trained model)", GRID: "a data file of fields on a grid",
       POINT_CLOUDS: "a data file of point clouds", SPHERE: "a data file of fields on the sphere"}
_EXPECTED = {**_IS, CHECKPOINT: "a checkpoint (checkpoint.pt or best.pt of a run)"}
_USAGE = "mpno predict CHECKPOINT DATA, mpno evaluate CHECKPOINT --data DATA, mpno bounds DATA --model CHECKPOINT"
_FIX = {CHECKPOINT: f"give the data file here and the checkpoint where a model is asked for ({_USAGE})",
        "data for a checkpoint": f"give the checkpoint here and the data file where data are asked for ({_USAGE})",
        POINT_CLOUDS: "point clouds are for --model gino (and its checkpoints)",
        GRID: "fields on a grid are for --model fno, tfno or sfno (and their checkpoints)",
        SPHERE: "fields on the sphere are for --model sfno (and its checkpoints)"}


def _keys_and_attributes(path: Path, kind: str) -> tuple[object, dict]:
    """The top-level content of a file of ``kind`` (its keys, or a non-dict object) and its HDF5 attributes."""
    if kind == "HDF5":
        with h5py.File(path, "r") as f:
            return list(f.keys()), {key: f.attrs[key] for key in ("grid", "equation", "mpno_format") if key in f.attrs}
    if kind == "npz":
        with np.load(path, allow_pickle=False) as data:
            return list(data.files), {}
    content = _load_torch(path)
    return (list(content) if isinstance(content, dict) else content), {}


def identify(path: str | os.PathLike) -> str | None:
    """What ``path`` holds, judged by its content whatever its name: :data:`CHECKPOINT`, :data:`GRID`,
    :data:`POINT_CLOUDS` or :data:`SPHERE`; ``None`` if it is unreadable or none of these."""
    path = Path(path)
    try:
        kind = _kind_by_content(path)
        if kind == "unknown":
            return None
        keys, attributes = _keys_and_attributes(path, kind)
    except Exception:  # noqa: BLE001 - unreadable: the caller's own message says so
        return None
    if not isinstance(keys, list) or not keys:
        return None
    if "model" in keys and "operator" in keys:
        return CHECKPOINT
    if "points" in keys:
        return POINT_CLOUDS
    if "grid" in attributes or attributes.get("equation") == "shallow-water":
        return SPHERE
    if {"x", "y"} <= set(keys) or "tensor" in keys or "mpno_format" in attributes:  # the layouts open_pairs reads
        return GRID
    return None


def _attribute(path: str | os.PathLike, name: str):
    """An HDF5 data file's attribute ``name``, or ``None`` (no such attribute, not HDF5, unreadable: reading
    the data says so, naming the file)."""
    path = Path(path)
    try:
        if _kind_by_content(path) != "HDF5":
            return None
        with h5py.File(path, "r") as f:
            return f.attrs.get(name)
    except (OSError, zipfile.BadZipFile):
        return None


def _text(value) -> str:
    return one_line(value.decode(errors="replace") if isinstance(value, bytes) else str(value))


def declared_grid(path: str | os.PathLike) -> str | None:
    """The spherical grid an HDF5 data file declares (its ``grid`` attribute, as
    :mod:`mpno.data.shallow_water` writes it), or ``None``."""
    value = _attribute(path, "grid")
    return None if value is None else _text(value)


def declared_equation(path: str | os.PathLike) -> str | None:
    """The equation whose solver wrote an HDF5 data file (its ``equation`` attribute, as
    :func:`mpno.data.generate` writes it), or ``None``."""
    value = _attribute(path, "equation")
    return None if value is None else _text(value)


def declared_channel_types(path: str | os.PathLike) -> dict[str, str]:
    """The ``channel_type`` attribute of each array of an HDF5 data file that has one: how the array's fields
    transform under rotations and reflections, one type per field, comma-separated (``"vector,scalar"``,
    :data:`mpno.data.symmetries.TYPES`); ``{}`` for other files."""
    path = Path(path)
    try:
        if _kind_by_content(path) != "HDF5":
            return {}
        with h5py.File(path, "r") as f:
            return {key: _text(f[key].attrs["channel_type"]) for key in f
                    if isinstance(f[key], h5py.Dataset) and "channel_type" in f[key].attrs}
    except (OSError, zipfile.BadZipFile):
        return {}


def declared_channels(path: str | os.PathLike) -> list[str] | None:
    """The names of the channels an HDF5 data file declares (its ``channels`` attribute, as
    :mod:`mpno.data.shallow_water` writes it), or ``None``."""
    value = _attribute(path, "channels")
    if value is None or np.ndim(value) != 1:
        return None
    return [_text(name) for name in value]


def misfit(path: str | os.PathLike, expected: str) -> DataError | None:
    """A ``DataError`` saying what ``path`` is, what was ``expected`` there (:data:`CHECKPOINT`,
    :data:`GRID` or :data:`POINT_CLOUDS`) and what to do, if the file is recognisably something else."""
    kind = identify(path)
    if kind is None or kind == expected or (expected == GRID and kind == SPHERE):
        return None
    fix = _FIX["data for a checkpoint" if expected == CHECKPOINT else kind]
    return DataError(f"{path} is {_IS[kind]}, but {_EXPECTED[expected]} is expected here; {fix}")


def check_array(path: Path, key: str, shape: Sequence[int], dtype) -> None:
    """``DataError`` naming the file and the array unless it is an array of real numbers with a sample axis."""
    if isinstance(dtype, torch.dtype):
        kind = "c" if dtype.is_complex else "b" if dtype == torch.bool else "f"
    else:
        kind = np.dtype(dtype).kind
    if kind == "c":
        raise DataError(f"{path}: '{key}' holds complex numbers ({dtype}); mpno trains on real fields and does "
                        "not drop imaginary parts: store the real and imaginary parts as two channels")
    if kind not in "biuf":
        raise DataError(f"{path}: '{key}' holds {'text' if kind in 'SUO' else dtype} values, not numbers; name a "
                        "numeric array")
    if len(shape) == 0:
        raise DataError(f"{path}: '{key}' is a single value, not an array of samples; name an array (N, ...)")


def _with_channels(array_shape: Sequence[int], spatial_dims: int, path: Path, key: str) -> bool:
    """Whether an (N, ...) array has a channel axis; DataError if neither reading fits."""
    if len(array_shape) == spatial_dims + 1:
        return False
    if len(array_shape) == spatial_dims + 2:
        return True
    raise DataError(f"{path}: '{key}' has shape {tuple(array_shape)}; expected (N, *grid) or (N, C, *grid) "
                    f"with {spatial_dims} spatial dims (pass spatial_dims= if that is wrong)")


class FieldPairs:
    """(input, output) fields stored in one file, read one sample at a time as float32 (C, *grid)."""

    def __init__(self, path: Path, x_key: str, y_key: str, length: int, spatial_dims: int):
        self.path, self.x_key, self.y_key = path, x_key, y_key
        self.length, self.spatial_dims = length, spatial_dims

    def __len__(self) -> int:
        return self.length

    def _raw(self, index: int) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        fields = []
        try:
            raws = self._raw(index)
        except UNREADABLE as err:  # a lazily read file that is damaged past its header
            raise unreadable(self.path, err) from None
        for key, raw in zip((self.x_key, self.y_key), raws):
            field = torch.as_tensor(np.asarray(raw) if not isinstance(raw, torch.Tensor) else raw)
            field = field.to(torch.float32)
            if field.ndim == self.spatial_dims:
                field = field.unsqueeze(0)
            if not torch.isfinite(field).all():
                raise DataError(f"{self.path}: '{key}' sample {index} holds NaN or inf values; "
                                "remove or repair that sample")
            fields.append(field)
        return fields[0], fields[1]


class TensorPairs(FieldPairs):
    """Pairs held in memory (or memory-mapped): .pt and .npz files."""

    def __init__(self, path: Path, x, y, x_key: str, y_key: str, spatial_dims: int):
        super().__init__(path, x_key, y_key, len(x), spatial_dims)
        self.x, self.y = x, y

    def _raw(self, index):
        return self.x[index], self.y[index]


class HDF5Pairs(FieldPairs):
    """Pairs read lazily from HDF5; each process opens its own handle (safe with DataLoader workers)."""

    def __init__(self, path: Path, x_key: str, y_key: str, length: int, spatial_dims: int,
                 x_time: int | None = None, y_time: int | None = None):
        super().__init__(path, x_key, y_key, length, spatial_dims)
        self.x_time, self.y_time = x_time, y_time
        self._handle, self._pid = None, None

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._handle

    def _raw(self, index):
        f = self._file()
        x = f[self.x_key][index] if self.x_time is None else f[self.x_key][index, self.x_time]
        y = f[self.y_key][index] if self.y_time is None else f[self.y_key][index, self.y_time]
        return x, y

    def __getstate__(self):
        return {**self.__dict__, "_handle": None, "_pid": None}


def _pick_keys(path: Path, available: Sequence[str], x_key: str | None, y_key: str | None,
               defaults: Sequence[tuple[str, str]]) -> tuple[str, str]:
    if x_key or y_key:
        chosen = (x_key or "x", y_key or "y")
    else:
        chosen = next(((x, y) for x, y in defaults if x in available and y in available), defaults[0])
    for key in chosen:
        if key not in available:
            raise misfit(path, GRID) or DataError(
                f"{path}: no key '{key}'; the file has {sorted(available)}; name the input and output with x_key= "
                "and y_key= (--x-key/--y-key)")
    return chosen


def _check_pair_shapes(path, x_key, y_key, x_shape, y_shape, spatial_dims) -> None:
    if x_shape[0] != y_shape[0]:
        raise DataError(f"{path}: '{x_key}' has {x_shape[0]} samples but '{y_key}' has {y_shape[0]}; "
                        "they must pair up one to one")
    x_grid = x_shape[1 + _with_channels(x_shape, spatial_dims, path, x_key):]
    y_grid = y_shape[1 + _with_channels(y_shape, spatial_dims, path, y_key):]
    if tuple(x_grid) != tuple(y_grid):
        raise DataError(f"{path}: input '{x_key}' is on grid {tuple(x_grid)} but output '{y_key}' on "
                        f"{tuple(y_grid)}; resample one so both share a grid")


def _open_hdf5(path: Path, x_key, y_key, spatial_dims, time_in, time_out) -> HDF5Pairs:
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
        if "mpno_format" in f.attrs:
            spatial_dims = int(f.attrs["spatial_dims"])
        if not (x_key or y_key) and "tensor" in f and "t-coordinate" in f and "nu" not in f:
            check_array(path, "tensor", f["tensor"].shape, f["tensor"].dtype)
            shape = f["tensor"].shape  # PDEBench time series: (N, T, *grid)
            steps = shape[1]
            for name, t in (("time_in", time_in), ("time_out", time_out)):
                if not -steps <= t < steps:
                    raise DataError(f"{path}: {name}={t} is outside the {steps} snapshots of 'tensor'")
            snapshot = (shape[0], *shape[2:])
            _with_channels(snapshot, spatial_dims, path, "tensor")
            return HDF5Pairs(path, "tensor", "tensor", shape[0], spatial_dims, time_in % steps, time_out % steps)
        x_key, y_key = _pick_keys(path, keys, x_key, y_key, [("x", "y"), ("nu", "tensor")])
        for key in (x_key, y_key):
            if not isinstance(f[key], h5py.Dataset):
                raise DataError(f"{path}: '{key}' is a group, not an array; name a dataset with x_key=/y_key=")
            check_array(path, key, f[key].shape, f[key].dtype)
        _check_pair_shapes(path, x_key, y_key, f[x_key].shape, f[y_key].shape, spatial_dims)
        return HDF5Pairs(path, x_key, y_key, f[x_key].shape[0], spatial_dims)


def _load_torch(path: Path):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: holds Python objects other than tensors, which mpno will not unpickle "
                        f"({reason(err)}); save a plain dict of tensors instead") from None


def available_keys(path: str | os.PathLike) -> list[str]:
    """The names of the arrays in a data file (``DataError`` if it cannot be read)."""
    path = Path(path)
    try:
        kind = file_kind(path)
        if kind == "HDF5":
            with h5py.File(path, "r") as f:
                return list(f.keys())
        data = _load_torch(path) if kind == "torch" else np.load(path, allow_pickle=False)
    except DataError:
        raise
    except UNREADABLE as err:
        raise unreadable(path, err) from None
    return list(data.keys()) if hasattr(data, "keys") else []


#: What h5py, zipfile, numpy and torch raise on a truncated or corrupt file.
UNREADABLE = (OSError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, ValueError)


def unreadable(path: Path, err: Exception, expected: str = GRID) -> DataError:
    """The error for a file that failed to read: what it is if it is something other than ``expected``
    (:func:`misfit`), else truncated or corrupt."""
    return misfit(path, expected) or DataError(
        f"{path}: cannot be read ({reason(err)}); the file is truncated or corrupt: regenerate, re-download or "
        "restore it")


def open_pairs(path: str | os.PathLike, x_key: str | None = None, y_key: str | None = None,
               spatial_dims: int = 2, time_in: int = 0, time_out: int = -1) -> FieldPairs:
    """The (input, output) pairs of a data file; raises ``DataError`` naming the file and the fix."""
    try:
        return _open_pairs(Path(path), x_key, y_key, spatial_dims, time_in, time_out)
    except DataError:
        raise
    except UNREADABLE as err:
        raise unreadable(Path(path), err) from None


def _open_pairs(path: Path, x_key, y_key, spatial_dims, time_in, time_out) -> FieldPairs:
    kind = file_kind(path)
    if kind == "HDF5":
        return _open_hdf5(path, x_key, y_key, spatial_dims, time_in, time_out)
    if kind == "torch":
        data = _load_torch(path)
        if not isinstance(data, dict):
            raise DataError(f"{path}: holds a {type(data).__name__}; expected a dict of tensors with 'x' and 'y'")
    else:
        data = np.load(path, allow_pickle=False)
    keys = list(data.keys())
    x_key, y_key = _pick_keys(path, keys, x_key, y_key, [("x", "y")])
    x, y = data[x_key], data[y_key]
    for key, array in ((x_key, x), (y_key, y)):
        if not isinstance(array, (torch.Tensor, np.ndarray)):
            raise DataError(f"{path}: '{key}' is a {type(array).__name__}, not an array")
        check_array(path, key, tuple(array.shape), array.dtype)
    _check_pair_shapes(path, x_key, y_key, tuple(x.shape), tuple(y.shape), spatial_dims)
    return TensorPairs(path, x, y, x_key, y_key, spatial_dims)


#: The prefix of the attributes that record the SHA-256 of a generated file's arrays.
DIGEST_ATTRIBUTE = "sha256_"


def recorded_digests(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file records digests of its arrays (``sha256_<name>`` attributes)."""
    with h5py.File(path, "r") as f:
        return any(key.startswith(DIGEST_ATTRIBUTE) for key in f.attrs)


def verify_arrays(path: str | os.PathLike) -> list[str]:
    """Check the arrays of an mpno HDF5 file against the digests it records (``sha256_<name>``), reading each
    whole, in chunks of samples; the names checked (none: the file records no digest). ``DataError`` naming the
    file and the array whose values changed after it was written."""
    path = Path(path)
    checked = []
    with h5py.File(path, "r") as f:
        for key, recorded in f.attrs.items():
            if not key.startswith(DIGEST_ATTRIBUTE) or key[len(DIGEST_ATTRIBUTE):] not in f:
                continue
            name = key[len(DIGEST_ATTRIBUTE):]
            array, hasher = f[name], hashlib.sha256()
            step = max(1, (64 * 2**20) // max(1, array[0].nbytes if len(array) else 1))
            for start in range(0, len(array), step):
                hasher.update(np.ascontiguousarray(array[start:start + step], dtype=np.float32).tobytes())
            if hasher.hexdigest() != _text(recorded):
                raise DataError(f"{path}: the values of '{name}' changed after mpno wrote the file (its SHA-256 "
                                "digest does not match the one the file records); regenerate the file or restore a "
                                "copy")
            checked.append(name)
    return checked


class SampleWriter:
    """Writes samples of named arrays to an mpno HDF5 file that appears only when complete.

    Use as a context manager: samples go to a temporary file in the same
    directory, renamed to ``path`` on success and deleted on error (a full disk,
    Ctrl-C), so a generation that stops half-way leaves nothing behind; the file
    is never written through a link (:func:`mpno.writing.new_hdf5`).

    Args:
        path: the file.
        count: samples in all.
        shapes: ``{name: shape of one sample}`` of each array (``x`` and ``y`` for pairs, ``u`` for
            trajectories (T, C, *grid)).
        attributes: the file's attributes (dicts are stored as JSON).
        coordinates: the grid's coordinates along each spatial dimension (``grid_0``, ...).
        extra: other arrays written whole (a trajectory's times ``t``).
        array_attributes: ``{name: {attribute: value}}`` of the arrays of ``shapes`` (``channel_type``).

    Each array's SHA-256 (of its float32 values in C order) is recorded as the attribute ``sha256_<name>``
    (:func:`verify_arrays` checks it).
    """

    def __init__(self, path: Path, count: int, shapes: dict, attributes: dict, coordinates, extra: dict | None = None,
                 array_attributes: dict | None = None):
        self.path, self.count = Path(path), count
        self.array_attributes = array_attributes or {}
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.attributes, self.coordinates, self.extra = attributes, coordinates, extra or {}
        self.written, self.hashers = 0, {}

    def __enter__(self) -> "SampleWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        with self._stack:
            self.output = self._stack.enter_context(new_hdf5(self.path))
            self.file = self.output.file
            self.file.attrs["mpno_format"] = FORMAT_VERSION
            self.file.attrs["spatial_dims"] = len(self.coordinates)
            for key, value in self.attributes.items():
                self.file.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
            for axis, values in enumerate(self.coordinates):
                self.file.create_dataset(f"grid_{axis}", data=np.asarray(values))
            for name, values in self.extra.items():
                self.file.create_dataset(name, data=np.asarray(values))
            self.arrays = {name: self.file.create_dataset(name, (self.count, *shape), dtype="float32",
                                                          chunks=(1, *shape))
                           for name, shape in self.shapes.items()}
            for name, values in self.array_attributes.items():
                self.arrays[name].attrs.update(values)
            self._stack = self._stack.pop_all()  # opened: kept open until __exit__
        return self

    def append(self, **samples: np.ndarray) -> None:
        """Write the next samples, one array of each name (each array's digest follows what is written)."""
        count = len(next(iter(samples.values())))
        for name, values in samples.items():
            values = np.ascontiguousarray(values, dtype=np.float32)
            self.arrays[name][self.written:self.written + count] = values
            self.hashers.setdefault(name, hashlib.sha256()).update(values.tobytes())
        self.written += count
        self.output.check()  # a full disk stops the generation now, not after the last sample

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self.written != self.count:
            incomplete = RuntimeError(f"{self.path}: {self.written} of {self.count} samples written; nothing was kept")
            self._stack.__exit__(RuntimeError, incomplete, None)
            raise incomplete
        if exc_type is None:
            for name, hasher in self.hashers.items():
                self.file.attrs[DIGEST_ATTRIBUTE + name] = hasher.hexdigest()
        return self._stack.__exit__(exc_type, exc, tb)
