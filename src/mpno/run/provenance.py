"""What produced a result: the versions, the device, the precision, the checkpoint and the data files, recorded
in the JSON of ``mpno evaluate``, ``predict``, ``bounds`` and ``bench`` and in the files ``predict`` writes."""

from __future__ import annotations

import os
from typing import Iterable

import torch

from .. import __version__
from ..data.fingerprint import fingerprint


def provenance(device: torch.device | str, precision: str | None = None,
               checkpoint: str | os.PathLike | None = None, data: Iterable[str | os.PathLike] = ()) -> dict:
    """``{"mpno", "torch", "device", "precision", "checkpoint", "data_files"}``: the versions, the device and the
    precision used, and the :func:`mpno.data.fingerprint.fingerprint` (path, size, modification time,
    SHA-256) of the checkpoint and of each data file."""
    return {"mpno": __version__, "torch": torch.__version__, "device": str(device), "precision": precision,
            "checkpoint": None if checkpoint is None else fingerprint(checkpoint),
            "data_files": [fingerprint(path) for path in data]}
