"""Checkpoints: written atomically with a digest of their contents, read without unpickling arbitrary objects,
and refused when their contents changed after they were written; and weight files in the safetensors format
(:func:`save_weights`), which hold a model's tensors and its architecture record and nothing that runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch

from ..checks import reason
from ..data.files import CHECKPOINT, misfit
from ..nn.operator import OutdatedArchitecture
from ..nn.normalized import NormalizedOperator
from ..precision import Precision
from ..writing import open_replacing
from .reporting import log_line

#: The key under which a checkpoint records the digest of everything else it holds.
DIGEST = "digest"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, altered, or not one of mpno's."""


def digest(state: dict) -> str:
    """SHA-256 of everything in ``state`` but its digest: every tensor (by its place in the nested dicts and
    lists, its dtype, shape and bytes) and every other value (by its place and ``repr``), in a fixed order."""
    hasher = hashlib.sha256()

    def add(place: str, value) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                if not (place == "" and key == DIGEST):
                    add(f"{place}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                add(f"{place}[{i}]", item)
        elif torch.is_tensor(value):
            hasher.update(f"{place}:{value.dtype}:{tuple(value.shape)}:".encode())
            hasher.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            hasher.update(f"{place}={value!r};".encode())

    add("", state)
    return hasher.hexdigest()


def save(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` with its :func:`digest` to ``path`` atomically and never through a link
    (:func:`mpno.writing.open_replacing`)."""
    with open_replacing(path) as file:
        torch.save({**state, DIGEST: {"sha256": digest(state)}}, file)


def verify(state: dict, path: Path, note: Callable[[str], None] = log_line) -> None:
    """Refuse a checkpoint whose contents changed after it was written (its digest does not match); a checkpoint
    of an mpno that wrote no digest loads, with a ``note``."""
    recorded = state.get(DIGEST)
    if recorded is None:
        note(f"{path}: written by an mpno that recorded no digest; its contents are not verified")
        return
    if not isinstance(recorded, dict) or recorded.get("sha256") != digest(state):
        raise CheckpointError(f"{path}: its contents changed after it was written (the SHA-256 digest it records "
                              "does not match): restore a copy, use the run's other checkpoint (best.pt or "
                              "checkpoint.pt), or train again")


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (a ``.safetensors`` weight file with
    :func:`load_weights`); ``CheckpointError`` with the fix if it fails, if the file is not a checkpoint (a data
    file given in its place, say), if its contents changed after it was written (:func:`verify`), or if its
    weights are not finite."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; train first (mpno train --out ...) or check the path")
    if path.suffix == ".safetensors":
        state = load_weights(path)
        state["model"] = {key: value.to(map_location) for key, value in state["model"].items()}
        return state
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _misfit(path) or CheckpointError(
            f"{path}: holds Python objects other than tensors, which mpno will not unpickle ({reason(err)}); "
            "it is not a checkpoint mpno wrote") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise _misfit(path) or CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({reason(err)}); restore it, resume from best.pt, or start "
            "a new run") from None
    if not isinstance(state, dict) or "model" not in state or "operator" not in state:
        raise _misfit(path) or CheckpointError(f"{path}: not an mpno checkpoint (no model state and architecture); "
                                               "give the checkpoint.pt or best.pt of an mpno run")
    verify(state, path)
    if not isinstance(state["model"], dict) or not all_finite(state["model"]):
        raise CheckpointError(f"{path}: the weights hold NaN or inf values; the model is unusable: use best.pt or "
                              "an earlier copy, or train again")
    return state


#: What a checkpoint of ``mpno train`` holds beyond the model, to be resumed.
RESUME_KEYS = ("config", "optimizer", "scheduler", "scaler", "epoch", "floor", "nonfinite_run", "history", "best", "rng")


def run_options(state: dict, path: str | os.PathLike) -> dict:
    """The run options (``config``) of a loaded checkpoint of ``mpno train`` (read from ``path``);
    ``CheckpointError`` if it lacks them or the training state, so that it cannot be resumed."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if not isinstance(state.get("config"), dict):
        missing = ["its run options ('config')"]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}, so it cannot be resumed (it was not written by "
                              "mpno train, or was edited); start a new run (mpno evaluate and mpno.load_model can "
                              "still use its model)")
    return state["config"]


def _misfit(path: Path) -> CheckpointError | None:
    """The error for a file that is recognisably something other than a checkpoint (a data file)."""
    wrong = misfit(path, CHECKPOINT)
    return None if wrong is None else CheckpointError(str(wrong))


def all_finite(state_dict: dict) -> bool:
    """Whether every floating-point tensor of a state dict is finite."""
    return all(torch.isfinite(t).all() for t in state_dict.values() if torch.is_tensor(t) and t.is_floating_point())


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> NormalizedOperator:
    """The trained model in a checkpoint (``checkpoint.pt`` or ``best.pt`` of a run) or a safetensors weight file
    (``mpno export --format safetensors``), ready for inference.

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
        raise CheckpointError(f"{path}: the weights do not fit the architecture it records ({reason(err)}); "
                              "the file is damaged or was edited") from None
    return model


#: The metadata key of a safetensors weight file that holds mpno's record (JSON).
WEIGHTS_RECORD = "mpno"


def save_weights(model: NormalizedOperator, path: str | os.PathLike) -> None:
    """Write ``model``'s tensors (the normalisers' too) to a safetensors file, atomically, with its architecture
    and precision as JSON metadata (``"mpno"``: ``operator``, ``precision``, ``sha256``, the :func:`digest` of
    all three). The safetensors library alone reads it; :func:`load_weights` and ``mpno.load_model`` rebuild the
    model."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    state = {"model": tensors, "operator": model.spec(), "precision": dataclasses.asdict(model.precision)}
    record = {"operator": state["operator"], "precision": state["precision"], "sha256": digest(state)}
    with open_replacing(path) as file:
        file.write(save(tensors, metadata={WEIGHTS_RECORD: json.dumps(record)}))


def load_weights(path: Path) -> dict:
    """The state (``model``, ``operator``, ``precision``) of a safetensors weight file :func:`save_weights`
    wrote; ``CheckpointError`` naming the file and the problem if it is not one, or its record or tensors
    changed after it was written."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            text = (f.metadata() or {}).get(WEIGHTS_RECORD)
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason(err)}); restore it or export it "
                              "again (mpno export RUN/best.pt --format safetensors)") from None
    try:
        record = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not {"operator", "precision", "sha256"} <= set(record):
        raise CheckpointError(f"{path}: a safetensors file without mpno's architecture record (metadata "
                              f"'{WEIGHTS_RECORD}'); it was not written by mpno export, so mpno cannot rebuild its model")
    state = {"model": tensors, "operator": record["operator"], "precision": record["precision"]}
    if record["sha256"] != digest(state):
        raise CheckpointError(f"{path}: its architecture record or tensors changed after it was written (the "
                              "SHA-256 digest it records does not match); export it again from the checkpoint")
    if not all_finite(tensors):
        raise CheckpointError(f"{path}: the weights hold NaN or inf values; the model is unusable")
    return state
