"""Checkpoints: written atomically, read without unpickling arbitrary objects."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..nn.layers import OutdatedArchitecture
from ..nn.normalized import NormalizedOperator
from ..precision import Precision


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or not one of mpno's."""


def save(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same directory, then a rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; ``CheckpointError`` with the fix if it fails."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; train first (mpno train --out ...) or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason}); restore it, resume from "
                              "best.pt, or start a new run") from None
    if not isinstance(state, dict) or "model" not in state or "operator" not in state:
        raise CheckpointError(f"{path}: not an mpno checkpoint (no model state and architecture); "
                              "give the checkpoint.pt or best.pt of an mpno run")
    return state


def all_finite(state_dict: dict) -> bool:
    """Whether every floating-point tensor of a state dict is finite."""
    return all(torch.isfinite(t).all() for t in state_dict.values() if torch.is_tensor(t) and t.is_floating_point())


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> NormalizedOperator:
    """The trained model in a checkpoint (``checkpoint.pt`` or ``best.pt`` of a run), ready for inference.

    It takes raw inputs (the normalisers are inside) on any grid with at least
    ``n_modes`` points per dimension, runs in the precision it was saved in
    (change it with ``set_precision``), and is in ``eval()`` mode on ``device``.
    """
    return model_from_state(load(path), path).to(device).eval()


def model_from_state(state: dict, path: str | os.PathLike) -> NormalizedOperator:
    """The model of a loaded checkpoint ``state`` (read from ``path``, named in errors)."""
    try:
        model = NormalizedOperator.from_spec(state["operator"])
        model.load_state_dict(state["model"])
        model.set_precision(Precision(**state["precision"]))
    except OutdatedArchitecture as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: the weights do not fit the architecture it records ({reason}); "
                              "the file is damaged or was edited") from None
    return model
