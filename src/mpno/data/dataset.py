"""A ``DataLoader``-ready dataset of field pairs, and train/test splits."""

from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

from .files import DataError, FieldPairs, open_pairs


class OperatorDataset(torch.utils.data.Dataset):
    """Samples ``(x, y)``, each float32 ``(channels, *grid)``, read lazily from a data file.

    Args:
        source: a path (any format of :mod:`mpno.data.files`) or opened pairs.
        indices: which samples (default: all).
        subsample: keep every ``subsample``-th grid point along each dimension
            (the grid size must be divisible by it).
        **open_kwargs: ``x_key``, ``y_key``, ``spatial_dims``, ``time_in``, ``time_out``.
    """

    def __init__(self, source: str | os.PathLike | FieldPairs, indices: Sequence[int] | None = None,
                 subsample: int = 1, **open_kwargs):
        self.pairs = source if isinstance(source, FieldPairs) else open_pairs(source, **open_kwargs)
        count = len(self.pairs)
        self.indices = list(range(count)) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < count for i in self.indices):
            raise DataError(f"{self.pairs.path}: sample indices must lie in [0, {count})")
        if isinstance(subsample, bool) or not isinstance(subsample, int) or subsample < 1:
            raise DataError(f"subsample={subsample!r} is not supported; give a positive int")
        self.subsample = subsample
        if subsample > 1 and self.indices:
            grid = self.pairs[self.indices[0]][0].shape[1:]
            if any(n % subsample for n in grid):
                raise DataError(f"{self.pairs.path}: grid {tuple(grid)} is not divisible by subsample={subsample}")

    @property
    def path(self):
        return self.pairs.path

    @property
    def name(self) -> str:
        suffix = f"/{self.subsample}" if self.subsample > 1 else ""
        return f"{self.path.name}{suffix}"

    @property
    def spatial_dims(self) -> int:
        return self.pairs.spatial_dims

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.pairs[self.indices[i]]
        if self.subsample > 1:
            stride = (slice(None), *[slice(None, None, self.subsample)] * (x.ndim - 1))
            x, y = x[stride].contiguous(), y[stride].contiguous()
        return x, y

    @functools.cached_property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of one input and one output, ``(C, *grid)``."""
        if not self.indices:
            raise DataError(f"{self.path}: the selection holds no samples")
        x, y = self[0]
        return tuple(x.shape), tuple(y.shape)

    @property
    def units(self) -> int:
        """What :meth:`subset` selects among: samples."""
        return len(self)

    def subset(self, indices: Sequence[int]) -> "OperatorDataset":
        """The samples at positions ``indices`` of this dataset."""
        return OperatorDataset(self.pairs, [self.indices[i] for i in indices], self.subsample)


def split_indices(count: int, test: int | float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random (train, test) positions: ``test`` is a count or a fraction of ``count``."""
    n_test = round(test * count) if isinstance(test, float) else int(test)
    if not 0 < n_test < count:
        raise DataError(f"test={test!r} leaves no training or no test samples out of {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_test:]), sorted(order[:n_test])
