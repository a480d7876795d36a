"""The operators by name: what ``mpno train --model`` and checkpoints call them, and how to build one."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .gno import GINO
from .models import FNO, TFNO
from .spherical import SFNO

#: Operators by the name ``mpno train --model`` and checkpoints use.
MODELS = {"fno": FNO, "tfno": TFNO, "gino": GINO, "sfno": SFNO}


def build_operator(kind: str, in_channels: int, out_channels: int, n_modes: int | Sequence[int],
                   factorization: str | None = None, **arguments) -> FNO:
    """An operator of ``kind`` (a key of :data:`MODELS`) with its constructor's ``arguments``.

    ``factorization=None`` keeps the kind's default (dense, Tucker for TFNO);
    ``"dense"``, ``"cp"``, ``"tucker"`` and ``"tt"`` are what they say for every kind.
    """
    if kind not in MODELS:
        raise ValueError(f"model={kind!r} is not supported; allowed: {', '.join(map(repr, MODELS))}")
    if factorization is not None:
        arguments["factorization"] = factorization
    return MODELS[kind](in_channels, out_channels, n_modes, **arguments)


def model_kind(model: nn.Module) -> str:
    """The name of ``model``'s class in :data:`MODELS`."""
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise ValueError(f"{type(model).__name__} is not one of mpno's operators ({', '.join(MODELS)})")
