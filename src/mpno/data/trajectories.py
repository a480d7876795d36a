"""Trajectories, (N, T, C, *grid) arrays of fields at T equally spaced times, and the windows a forecasting
operator trains on: ``history`` input snapshots, then the next ``unroll`` target snapshots.

Files that hold trajectories:

* mpno's own (``mpno generate ... --steps T``): ``u`` (N, T, C, *grid), ``t`` (T,) and the attributes
  ``layout = "trajectories"``, ``interval`` and ``spatial_dims``;
* PDEBench time series, ``tensor`` (N, T, *grid) with a ``t-coordinate``, one channel;
* any ``.h5``, ``.pt`` or ``.npz`` array (``key``, default ``u``) of shape (N, T, C, *grid) or (N, T, *grid),
  when ``spatial_dims`` is given: a 5-D array is 3-D fields or 2-D fields with channels, and mpno does not
  guess which.

Any of them may also hold static inputs (``static_key``, default ``static``): fields that stay fixed through a
trajectory (a forcing, a coefficient, the geometry), (N, S, *grid) per trajectory or (S, *grid) shared. A
window's input carries them after its snapshots, and a rollout keeps them as they are.

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
        static_channels: channels of the static inputs (0: the file has none).
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None, spatial_dims: int | None = None,
                 static_key: str = "static"):
        self.path = Path(path)
        try:
            self._open(key, spatial_dims, static_key)
        except DataError:
            raise
        except UNREADABLE as err:
            raise unreadable(self.path, err) from None

    def _open(self, key: str | None, spatial_dims: int | None, static_key: str) -> None:
        kind = file_kind(self.path)
        self.interval, self._array, self._handle, self._pid, static = None, None, None, None, None
        if kind == "HDF5":
            with h5py.File(self.path, "r") as f:
                declared = f.attrs.get("layout") == LAYOUT
                pdebench = "tensor" in f and "t-coordinate" in f
                self.key = key or ("tensor" if pdebench and "u" not in f else "u")
                if self.key not in f or not isinstance(f[self.key], h5py.Dataset):
                    raise DataError(f"{self.path}: no array '{self.key}' of trajectories; the file has "
                                    f"{sorted(f.keys())}: name it with --x-key")
                shape, dtype = f[self.key].shape, f[self.key].dtype
                if static_key in f and static_key != self.key and isinstance(f[static_key], h5py.Dataset):
                    static = np.asarray(f[static_key])
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
            if static_key in data.keys() and static_key != self.key:
                static = data[static_key]
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
        self._static = self._static_inputs(static, static_key)
        self.static_channels = self._static.shape[1]

    def _static_inputs(self, static, key: str) -> torch.Tensor:
        """The static inputs (N or 1, S, *grid) as float32, checked; (1, 0, *grid) where there are none."""
        if static is None:
            return torch.zeros(1, 0, *self.grid)
        check_array(self.path, key, tuple(static.shape), static.dtype)
        static = torch.as_tensor(np.asarray(static) if not isinstance(static, torch.Tensor) else static).float()
        shape, grid = tuple(static.shape), ", ".join(map(str, self.grid))
        if shape[-self.spatial_dims:] != self.grid or len(shape) - self.spatial_dims not in (1, 2) or (
                len(shape) - self.spatial_dims == 2 and shape[0] not in (1, self.count)):
            raise DataError(f"{self.path}: the static inputs '{key}' have shape {shape}; for {self.count} "
                            f"trajectories on the grid {self.grid} they must be ({self.count}, S, {grid}) or "
                            f"(S, {grid})")
        if len(shape) - self.spatial_dims == 1 and shape[0] == self.count > 1:
            raise DataError(f"{self.path}: the static inputs '{key}' have shape {shape}: {self.count} channels "
                            f"shared by every trajectory, or one channel per trajectory? Store them as "
                            f"({self.count}, 1, {grid}) or (1, {self.count}, {grid})")
        if not torch.isfinite(static).all():
            raise DataError(f"{self.path}: the static inputs '{key}' hold NaN or inf values; repair them")
        return static if static.ndim == self.spatial_dims + 2 else static.unsqueeze(0)

    def static(self, n: int) -> torch.Tensor:
        """The static inputs of trajectory ``n``: (S, *grid), S = 0 where the file has none."""
        return self._static[n if len(self._static) > 1 else 0]

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
    ``u[n, t : t + history]`` with its snapshots stacked as channels, oldest first, then the trajectory's
    static inputs: (history · C + S, *grid); and the target ``u[n, t + history]`` (C, *grid), or with
    ``unroll`` > 1 the next ``unroll`` snapshots (unroll, C, *grid).

    Args:
        source: a path (:class:`Trajectories` reads it) or opened trajectories.
        history, unroll: input and target snapshots of a window.
        indices: which trajectories (default: all).
        key, spatial_dims, static_key: as :class:`Trajectories` takes them.
    """

    def __init__(self, source: str | os.PathLike | Trajectories, history: int = 1, unroll: int = 1,
                 indices: Sequence[int] | None = None, key: str | None = None, spatial_dims: int | None = None,
                 static_key: str = "static"):
        self.trajectories = (source if isinstance(source, Trajectories)
                             else Trajectories(source, key, spatial_dims, static_key))
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
    def static_channels(self) -> int:
        """Channels of static inputs at the end of every input window."""
        return self.trajectories.static_channels

    @property
    def units(self) -> int:
        """What :meth:`subset` selects among: trajectories (a held-out set never shares one with training)."""
        return len(self.indices)

    @property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of an operator's input (history · C + S, *grid) and of one output snapshot (C, *grid)."""
        if not self.indices:
            raise DataError(f"{self.path}: the selection holds no trajectories")
        channels, grid = self.trajectories.channels, self.trajectories.grid
        return (self.history * channels + self.static_channels, *grid), (channels, *grid)

    def __len__(self) -> int:
        return len(self.indices) * self.per_trajectory

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.indices[i // self.per_trajectory], i % self.per_trajectory
        frames = self.trajectories.frames(n, t, t + self.history + self.unroll)
        y = frames[self.history:]
        return self.window(n, frames[:self.history]), y[0] if self.unroll == 1 else y

    def window(self, n: int, snapshots: torch.Tensor) -> torch.Tensor:
        """The input of trajectory ``n`` for ``snapshots`` (history, C, *grid): them stacked as channels, then
        the static inputs."""
        return torch.cat([snapshots.flatten(0, 1), self.trajectories.static(n)])

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
