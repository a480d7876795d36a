"""Defaults sized to the data: the batch size and the modes of a run.

A run's options left unset (``None``) are chosen here from the training set, once,
before the model is built, and recorded in the run's ``config.json``:

* **batch size**: the largest power of two, at most :data:`MAX_BATCH`, that gives
  every epoch at least :data:`STEPS_PER_EPOCH` optimizer steps (the global batch
  counts every process under ``torchrun``): 4 for 200 samples, 8 for 300, 32 from
  960 on. Small data sets then still get hundreds of steps in a default run. The
  learning rate stays 2e-3: scaling it down with the batch (as ``√(batch / 32)``)
  learnt less in the same epochs (docs/training.md);
* **modes**: as the operator's domain chooses them (:meth:`mpno.run.domains.Domain.default_modes`):
  12 per dimension on a grid, 8 for a point operator's latent grid, and on the sphere
  every degree the training grid carries, ``(nlat, min(nlat, nlon // 2 + 1))``
  (docs/sphere.md measures the aliasing above the exact quadrature).
"""

from __future__ import annotations

import math
from typing import Sequence

from . import domains

#: The most samples per batch a default run uses (per process).
MAX_BATCH = 32
#: The fewest optimizer steps per epoch the default batch size allows.
STEPS_PER_EPOCH = 30


def batch_size(samples: int, processes: int = 1) -> int:
    """The default batch size (per process) for ``samples`` training samples shared by ``processes``."""
    per_step = samples / (STEPS_PER_EPOCH * processes)
    return 2 ** min(int(math.log2(MAX_BATCH)), max(0, math.floor(math.log2(per_step)))) if per_step >= 1 else 1


def sized_to_data(config, samples: int, grid: Sequence[int], processes: int = 1) -> tuple[dict, str | None]:
    """The options of ``config`` left unset, chosen from the training data: ``{name: value}``, and a line saying
    what was chosen (``None`` when nothing was)."""
    chosen, said = {}, []
    if config.batch_size is None:
        chosen["batch_size"] = batch_size(samples, processes)
        steps = math.ceil(samples / (chosen["batch_size"] * processes))
        said.append(f"batch size {chosen['batch_size']} ({steps} steps per epoch for {samples} training samples)")
    if config.n_modes is None:
        domain = domains.of(config.model)
        chosen["n_modes"] = domain.default_modes(grid)
        said.append(f"n_modes {' '.join(map(str, chosen['n_modes']))}{domain.modes_note(grid)}")
    return chosen, "defaults sized to the data: " + ", ".join(said) if said else None
