"""Option declarations: a field of a run's configuration with its kind, range, help and aliases, from which
the CLI's flags, the checks of config files and their type coercion are generated (:mod:`mpno.run.config`).
Domains declare their own options the same way (:mod:`mpno.run.domains`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

#: Option kinds: how a value is read from a flag or a config file.
KINDS = ("str", "int", "float", "number", "bool", "int_list", "str_list")


def option(default, kind: str, help: str, *, choices=None, low=None, high=None, open_low: bool = False,
           aliases: tuple = (), optional: bool = False, group: str = ""):
    """A :class:`RunConfig` field with what the CLI and the file readers need to know about it.

    ``kind`` is one of :data:`KINDS` (``number``: an int or a float); ``low``/``high``
    bound numbers (``open_low``: strictly above ``low``); ``optional``: ``None`` is allowed.
    """
    metadata = {"kind": kind, "help": help, "choices": choices, "low": low, "high": high, "open_low": open_low,
                "aliases": aliases, "optional": optional, "group": group}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)



def _scalar(spec: dataclasses.Field, value, form: str):
    """``value`` as one item of the kind ``form`` (``int``, ``float``, ``number``, ``str``, ``bool``), or
    ``ValueError``."""
    name = spec.name
    if form == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{name}={value!r} is not supported; give true or false")
    if form == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name}={value!r} is not supported; give a string")
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not supported; give a number")
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; a flag is always a string
        try:
            value = float(value) if form == "float" or any(c in value for c in ".eE") or "inf" in value.lower() \
                or "nan" in value.lower() else int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a number") from None
    if form == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{name}={value!r} is not supported; give an int")
    elif form == "float":
        if not isinstance(value, (int, float)):
            raise ValueError(f"{name}={value!r} is not supported; give a number")
        value = float(value)
    elif not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is not supported; give a number")
    return value


def _check_range(spec: dataclasses.Field, value) -> None:
    meta = spec.metadata
    if isinstance(value, str):
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{spec.name}={value!r} is not supported; allowed: "
                             + ", ".join(repr(c) for c in meta["choices"]))
        return
    if isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise ValueError(f"{spec.name}={value!r} must be a finite number")
    low, high = meta["low"], meta["high"]
    too_low = low is not None and (value <= low if meta["open_low"] else value < low)
    if too_low or (high is not None and value > high):
        lower = "" if low is None else f"{'>' if meta['open_low'] else '≥'} {low:g}"
        upper = "" if high is None else f"≤ {high:g}"
        raise ValueError(f"{spec.name}={value!r} is out of range; it must be {' and '.join(filter(None, (lower, upper)))}")


def coerce(spec: dataclasses.Field, value):
    """``value`` converted to the kind ``spec`` declares and checked against its range and choices."""
    meta = spec.metadata
    if value is None:
        if meta["optional"]:
            return None
        raise ValueError(f"{spec.name} needs a value")
    form = meta["kind"]
    if form.endswith("_list"):
        items = value if isinstance(value, (list, tuple)) else [value]  # TOML modes = 8, data_test = "file"
        if not items and (spec.default_factory is dataclasses.MISSING or spec.default_factory()):
            raise ValueError(f"{spec.name} needs at least one value")
        items = [_scalar(spec, item, form.removesuffix("_list")) for item in items]
        for item in items:
            _check_range(spec, item)
        return items
    value = _scalar(spec, value, form)
    _check_range(spec, value)
    return value
