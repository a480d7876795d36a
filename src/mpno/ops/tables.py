"""Precomputed tables: DFT twiddle matrices, weights, bases and contraction plans.

Every table is a pure function of its arguments (sizes, dtype, device), computed
once in float64, rounded to the working dtype and kept in a bounded LRU cache
owned by this module. A model does not hold them as buffers because a neural
operator runs on any grid: the tables depend on the grid it is called on, not on
the model. :func:`clear` frees them all, for example after moving a model off a
GPU; they are rebuilt on the next call.
"""

from __future__ import annotations

import functools

_CACHES: list = []


def cached(maxsize: int):
    """``functools.lru_cache(maxsize)`` that :func:`clear` also empties."""

    def decorate(fn):
        wrapped = functools.lru_cache(maxsize=maxsize)(fn)
        _CACHES.append(wrapped)
        return wrapped

    return decorate


def clear() -> None:
    """Free every cached table (on every device)."""
    for cache in _CACHES:
        cache.cache_clear()
