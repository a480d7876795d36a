"""Precomputed tables: DFT twiddle matrices, weights, bases and contraction plans.

Every table is a pure function of its arguments (sizes, dtype, device), computed
once in float64, rounded to the working dtype and kept in a bounded
least-recently-used cache owned by this module. A model does not hold them as
buffers because a neural operator runs on any grid: the tables depend on the
grid it is called on, not on the model. :func:`clear` frees them all, for
example after moving a model off a GPU; they are rebuilt on the next call.

Under ``torch.compile`` a table is an input of the graph, not a computation in
it: the compiler looks the table up (computing it once, in plain Python, if it
is missing) and reads it as an attribute of this module's store, so neither
the numpy nor the recurrences that build some tables are traced, and a step
launches no kernel to rebuild them.
"""

from __future__ import annotations

import collections
import hashlib
import inspect

import torch


class _Store:
    """Every cached table, held as an attribute named after its function and arguments."""


_STORE = _Store()
_CACHES: list = []


def cached(maxsize: int):
    """Cache a table function's results (at most ``maxsize`` per function, least recently used dropped).

    The function's arguments are sizes, names, dtypes and devices, never tensors.
    The cached function has ``cache_clear()``.
    """

    def decorate(fn):
        names: collections.OrderedDict = collections.OrderedDict()  # least recently used first
        signature = inspect.signature(fn)

        @torch.compiler.assume_constant_result  # run, not traced, by torch.compile: the result is a name
        def locate(*args, **kwargs) -> str:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = repr(tuple(bound.arguments.values()))
            name = f"{fn.__name__}_{hashlib.sha1(key.encode()).hexdigest()}"
            if name in names:
                names.move_to_end(name)
                return name
            setattr(_STORE, name, fn(*bound.args, **bound.kwargs))
            names[name] = None
            if len(names) > maxsize:
                delattr(_STORE, names.popitem(last=False)[0])
            return name

        def table(*args, **kwargs):
            if torch.compiler.is_exporting():  # sizes may be symbolic: the table is computed in the graph
                return fn(*args, **kwargs)
            return getattr(_STORE, locate(*args, **kwargs))

        def cache_clear() -> None:
            while names:
                delattr(_STORE, names.popitem()[0])

        table.__name__, table.__qualname__, table.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        table.__module__, table.cache_clear = fn.__module__, cache_clear
        _CACHES.append(table)
        return table

    return decorate


def clear() -> None:
    """Free every cached table (on every device)."""
    for table in _CACHES:
        table.cache_clear()
