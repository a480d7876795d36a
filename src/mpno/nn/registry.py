"""The operators by name: what ``mpno train --model`` and checkpoints call them, and how to build one.

Operators register themselves when their class is defined (``class FNO(Operator, kind="fno",
domain="grid")``, :mod:`mpno.nn.operator`). So that every operator is known wherever the registry
is asked, it imports every module of :mod:`mpno.nn` the first time it is asked: an operator in a
new module of ``mpno.nn`` needs no line here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Sequence

from torch import nn

#: Operators by the name ``mpno train --model`` and checkpoints use (filled as their modules are imported).
_MODELS: dict[str, type] = {}


def register(kind: str, cls: type) -> None:
    """Record the operator class ``cls`` under ``kind`` (called by :class:`mpno.nn.operator.Operator`)."""
    known = _MODELS.get(kind)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"two operators are named {kind!r}: {known.__qualname__} and {cls.__qualname__}")
    _MODELS[kind] = cls


@functools.cache
def _discover() -> None:
    """Import every module of :mod:`mpno.nn` (each operator registers itself as its class is defined)."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def models() -> dict[str, type]:
    """``{kind: operator class}`` of every registered operator."""
    _discover()
    return dict(_MODELS)


def operator_class(kind: str) -> type:
    """The operator class registered as ``kind``; ``ValueError`` naming the known ones otherwise."""
    known = models()
    if kind not in known:
        raise ValueError(f"model={kind!r} is not supported; allowed: {', '.join(map(repr, known))}")
    return known[kind]


def build_operator(kind: str, in_channels: int, out_channels: int, n_modes: int | Sequence[int],
                   factorization: str | None = None, **arguments) -> nn.Module:
    """An operator of ``kind`` (a key of :func:`models`) with its constructor's ``arguments``.

    ``factorization=None`` keeps the kind's default (dense, Tucker for TFNO);
    ``"dense"``, ``"cp"``, ``"tucker"`` and ``"tt"`` are what they say for every kind.
    """
    cls = operator_class(kind)
    if factorization is not None:
        arguments["factorization"] = factorization
    return cls(in_channels, out_channels, n_modes, **arguments)


def model_kind(model: nn.Module) -> str:
    """The name ``model``'s class is registered under."""
    kind = getattr(type(model), "kind", None)
    if kind is None or models().get(kind) is not type(model):
        raise ValueError(f"{type(model).__name__} is not one of mpno's operators ({', '.join(models())})")
    return kind
