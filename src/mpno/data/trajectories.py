"""Trajectories, (N, T, C, *grid) arrays of fields at T equally spaced times, and the windows a forecasting
operator trains on: ``history`` input snapshots, then the next ``unroll`` target snapshots.

Files that hold trajectories:

* mpno's own (``mpno generate ... --steps T``): ``u`` (N, T, C, *grid), ``t`` (T,) and the attributes
  ``layout = "trajectories"``, ``interval`` and ``spatial_dims``;
* PDEBench time series, ``tensor`` (N, T, *grid) with a ``t-coordinate``, one channel;
* any ``.h5``, ``.pt`` or ``.npz`` array (``key``, default ``u``) of shape (N, T, C, *grid) or (N, T, *grid),
  when ``spatial_dims`` is given: a 5-D array is 3-D fields or 2-D fields with channels, and mpno does not
  guess which.

Windows are cut when a sample is read: nothing is copied or expanded on disk or in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from .files import UNREADABLE, DataError, _load_torch, check_array, file_kind, unreadable

#: The ``layout`` attribute of files of trajectories.
LAYOUT = "trajectories"


class Trajectories:
    """The trajectories of one file, read a few snapshots at a time as float32 (steps, C, *grid).

    Attributes:
        path, key: the file and its array.
        count, steps: trajectories and snapshots per trajectory.
        spatial_dims: dimensions of the grid.
        interval: the time between snapshots, where the file records it (else ``None``).
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None, spatial_dims: int | None = None):
        self.path = Path(path)
        try:
            self._open(key, spatial_dims)
        except DataError:
            raise
        except UNREADABLE as err:
            raise unreadable(self.path, err) from None

    def _open(self, key: str | None, spatial_dims: int | None) -> None:
        kind = file_kind(self.path)
        self.interval, self._array, self._handle, self._pid = None, None, None, None
        if kind == "HDF5":
            with h5py.File(self.path, "r") as f:
                declared = f.attrs.get("layout") == LAYOUT
                pdebench = "tensor" in f and "t-coordinate" in f
                self.key = key or ("tensor" if pdebench and "u" not in f else "u")
                if self.key not in f or not isinstance(f[self.key], h5py.Dataset):
                    raise DataError(f"{self.path}: no array '{self.key}' of trajectories; the file has "
                                    f"{sorted(f.keys())}: name it with --x-key")
                shape, dtype = f[self.key].shape, f[self.key].dtype
                if declared:
                    spatial_dims = int(f.attrs["spatial_dims"])
                    self.interval = float(f.attrs["interval"]) if "interval" in f.attrs else None
                elif pdebench and self.key == "tensor" and spatial_dims is None:
                    spatial_dims = len(shape) - 2  # PDEBench: (N, T, *grid), one field
                    times = np.asarray(f["t-coordinate"])
                    self.interval = float(times[1] - times[0]) if len(times) > 1 else None
        else:
            data = _load_torch(self.path) if kind == "torch" else np.load(self.path, allow_pickle=False)
            if not hasattr(data, "keys"):
                raise DataError(f"{self.path}: holds a {type(data).__name__}; expected named arrays")
            self.key = key or "u"
            if self.key not in data.keys():
                raise DataError(f"{self.path}: no array '{self.key}' of trajectories; the file has "
                                f"{sorted(data.keys())}: name it with --x-key")
            self._array = data[self.key]
            shape, dtype = tuple(self._array.shape), self._array.dtype
        check_array(self.path, self.key, shape, dtype)
        if spatial_dims is None:
            raise DataError(f"{self.path}: '{self.key}' has shape {tuple(shape)}, which can be (N, T, C, *grid) or "
                            "(N, T, *grid) with more spatial dims, and the file does not say which; pass "
                            "--spatial-dims")
        if len(shape) not in (spatial_dims + 2, spatial_dims + 3):
            raise DataError(f"{self.path}: '{self.key}' has shape {tuple(shape)}; trajectories with {spatial_dims} "
                            "spatial dims are (N, T, C, *grid) or (N, T, *grid)")
        self.count, self.steps, self.spatial_dims = shape[0], shape[1], spatial_dims
        self.channels = shape[2] if len(shape) == spatial_dims + 3 else 1
        self.grid = tuple(shape[-spatial_dims:])

    def _read(self, n: int, start: int, stop: int):
        if self._array is not None:
            return self._array[n, start:stop]
        if self._handle is None or self._pid != os.getpid():  # one handle per process (DataLoader workers)
            self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._handle[self.key][n, start:stop]

    def frames(self, n: int, start: int, stop: int) -> torch.Tensor:
        """Snapshots ``start:stop`` of trajectory ``n``, float32 (stop - start, C, *grid)."""
        try:
            raw = self._read(n, start, stop)
        except UNREADABLE as err:
            raise unreadable(self.path, err) from None
        frames = torch.as_tensor(np.asarray(raw) if not isinstance(raw, torch.Tensor) else raw).to(torch.float32)
        frames = frames.reshape(stop - start, self.channels, *self.grid)
        finite = torch.isfinite(frames).flatten(1).all(1)
        if not finite.all():
            bad = ", ".join(str(start + int(i)) for i in (~finite).nonzero().flatten())
            raise DataError(f"{self.path}: trajectory {n} holds NaN or inf values at snapshot {bad}; remove or repair "
                            "that trajectory")
        return frames

    def __getstate__(self):
        return {**self.__dict__, "_handle": None, "_pid": None}


class TrajectoryWindows(torch.utils.data.Dataset):
    """The windows of trajectories a one-step operator trains on: sample ``(n, t)`` is the input
    ``u[n, t : t + history]`` with its snapshots stacked as channels (history · C, *grid), oldest first, and
    the target ``u[n, t + history]`` (C, *grid), or with ``unroll`` > 1 the next ``unroll`` snapshots
    (unroll, C, *grid).

    Args:
        source: a path (:class:`Trajectories` reads it) or opened trajectories.
        history, unroll: input and target snapshots of a window.
        indices: which trajectories (default: all).
        key, spatial_dims: as :class:`Trajectories` takes them.
    """

    def __init__(self, source: str | os.PathLike | Trajectories, history: int = 1, unroll: int = 1,
                 indices: Sequence[int] | None = None, key: str | None = None, spatial_dims: int | None = None):
        self.trajectories = source if isinstance(source, Trajectories) else Trajectories(source, key, spatial_dims)
        self.history, self.unroll = history, unroll
        count, steps = self.trajectories.count, self.trajectories.steps
        self.indices = list(range(count)) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < count for i in self.indices):
            raise DataError(f"{self.path}: trajectory indices must lie in [0, {count})")
        if history < 1 or unroll < 1:
            raise DataError(f"history={history} and unroll={unroll} must be at least 1")
        self.per_trajectory = steps - history - unroll + 1
        if self.per_trajectory < 1:
            raise DataError(f"{self.path}: trajectories of {steps} snapshots are too short for --history {history} "
                            f"and --unroll {unroll} (a window needs {history + unroll}); lower them or give longer "
                            "trajectories")

    @property
    def path(self) -> Path:
        return self.trajectories.path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spatial_dims(self) -> int:
        return self.trajectories.spatial_dims

    @property
    def units(self) -> int:
        """What :meth:`subset` selects among: trajectories (a held-out set never shares one with training)."""
        return len(self.indices)

    @property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of an operator's input (history · C, *grid) and of one output snapshot (C, *grid)."""
        if not self.indices:
            raise DataError(f"{self.path}: the selection holds no trajectories")
        channels, grid = self.trajectories.channels, self.trajectories.grid
        return (self.history * channels, *grid), (channels, *grid)

    def __len__(self) -> int:
        return len(self.indices) * self.per_trajectory

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.indices[i // self.per_trajectory], i % self.per_trajectory
        frames = self.trajectories.frames(n, t, t + self.history + self.unroll)
        x = frames[:self.history].flatten(0, 1)
        y = frames[self.history:]
        return x, y[0] if self.unroll == 1 else y

    def subset(self, indices: Sequence[int]) -> "TrajectoryWindows":
        """The windows of the trajectories at positions ``indices`` of this selection."""
        return TrajectoryWindows(self.trajectories, self.history, self.unroll, [self.indices[i] for i in indices])

    def with_unroll(self, unroll: int) -> "TrajectoryWindows":
        """The same trajectories cut into windows of ``unroll`` targets."""
        return TrajectoryWindows(self.trajectories, self.history, unroll, self.indices)


def holds_trajectories(path: str | os.PathLike) -> bool:
    """Whether a data file declares that it holds trajectories (its ``layout`` attribute)."""
    try:
        if file_kind(Path(path)) != "HDF5":
            return False
        with h5py.File(path, "r") as f:
            return f.attrs.get("layout") == LAYOUT
    except (DataError, *UNREADABLE):  # reading the file says what is wrong with it
        return False
