"""Mini-batches of a dataset: in memory, or read from disk by DataLoader workers; this process's share."""

from __future__ import annotations

import math
import re

import torch
from tqdm.auto import tqdm

from ..data import DataError, OperatorDataset
from . import distributed


class Batches:
    """Mini-batches of a dataset held in memory; this process's share of each global batch."""

    def __init__(self, dataset: OperatorDataset, batch_size: int, device: torch.device, desc: str = "",
                 context: distributed.Context = distributed.SINGLE_PROCESS):
        pairs = [dataset[i] for i in tqdm(range(len(dataset)), desc=f"loading {desc}", unit="sample",
                                          leave=False, disable=None if context.main else True)]
        self.x = torch.stack([x for x, _ in pairs]).to(device)
        self.y = torch.stack([y for _, y in pairs]).to(device)
        self.batch_size, self.context = batch_size, context

    def __len__(self) -> int:
        return len(distributed.rank_batches(len(self.x), self.batch_size, None, self.context))

    def iterate(self, seed: int | None = None):
        """``(x, y, global batch size)``, shuffled by ``seed`` (``None``: in order)."""
        for index, total in distributed.rank_batches(len(self.x), self.batch_size, seed, self.context):
            index = index.to(self.x.device)
            yield self.x[index], self.y[index], total


class LazyBatches:
    """The same batches read from disk by DataLoader workers (data sets larger than the memory limit)."""

    def __init__(self, dataset: OperatorDataset, batch_size: int, device: torch.device,
                 context: distributed.Context = distributed.SINGLE_PROCESS, workers: int = 2):
        self.dataset, self.batch_size, self.device, self.context, self.workers = \
            dataset, batch_size, device, context, workers

    def __len__(self) -> int:
        return len(distributed.rank_batches(len(self.dataset), self.batch_size, None, self.context))

    def iterate(self, seed: int | None = None):
        shares = distributed.rank_batches(len(self.dataset), self.batch_size, seed, self.context)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=[i.tolist() for i, _ in shares],
                                             num_workers=self.workers)
        try:
            for (x, y), (_, total) in zip(loader, shares):
                yield x.to(self.device), y.to(self.device), total
        except DataError as err:  # raised in a worker: keep its message, not the worker's traceback
            last = str(err).strip().splitlines()[-1]
            raise DataError(re.sub(r"^[\w.]*DataError: ", "", last)) from None

    def check(self) -> None:
        """Read every sample once, so that a bad one is reported before training starts."""
        for _ in self.iterate():
            pass


def batches_for(dataset: OperatorDataset, batch_size: int, device: torch.device, limit_gb: float, desc: str,
                context: distributed.Context = distributed.SINGLE_PROCESS):
    x_shape, y_shape = dataset.shapes
    size_gb = len(dataset) * (math.prod(x_shape) + math.prod(y_shape)) * 4 / 2**30
    if size_gb <= limit_gb:
        return Batches(dataset, batch_size, device, desc, context)
    return LazyBatches(dataset, batch_size, device, context)
