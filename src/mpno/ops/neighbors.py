"""Radius neighbourhoods of points, and sums over them in bounded memory.

A :class:`Neighborhood` lists, for each query point, the source points within a
radius, in compressed-row form: the neighbours of query ``i`` are
``indices[offsets[i]:offsets[i + 1]]``. :func:`radius_search` finds them with
SciPy's ``cKDTree`` on the CPU and a chunked brute-force search in torch on CUDA;
:func:`segment_sum` sums per-edge messages into per-query sums, a bounded number
of edges at a time, accumulating in float32 (or finer) whatever the messages'
dtype, so a half-precision sum cannot overflow while it accumulates;
:func:`nearest_distance` gives each query's distance to its nearest neighbour,
as many edges at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

SEARCHES = ("auto", "kdtree", "torch")


@dataclass(frozen=True)
class Neighborhood:
    """Sources within a radius of each query: ``indices[offsets[i]:offsets[i + 1]]`` for query ``i``.

    ``indices`` (edges,) and ``offsets`` (queries + 1,) are int64; the neighbours
    of each query are in increasing order.
    """

    indices: torch.Tensor
    offsets: torch.Tensor

    @property
    def n_queries(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_edges(self) -> int:
        return len(self.indices)

    def counts(self) -> torch.Tensor:
        """Number of neighbours of each query, (queries,)."""
        return self.offsets[1:] - self.offsets[:-1]

    def queries_of(self, start: int, stop: int) -> torch.Tensor:
        """The query of each edge in ``[start, stop)``, (stop - start,) int64."""
        edges = torch.arange(start, stop, device=self.offsets.device)
        return torch.searchsorted(self.offsets, edges, right=True) - 1

    def transpose(self, n_sources: int) -> "Neighborhood":
        """The same edges seen from the sources: for each of the ``n_sources`` points, the queries near it."""
        queries = self.queries_of(0, self.n_edges)
        order = torch.argsort(self.indices, stable=True)
        offsets = torch.zeros(n_sources + 1, dtype=torch.int64, device=self.indices.device)
        torch.cumsum(torch.bincount(self.indices, minlength=n_sources), 0, out=offsets[1:])
        return Neighborhood(queries[order], offsets)

    def to(self, device: torch.device | str) -> "Neighborhood":
        return Neighborhood(self.indices.to(device), self.offsets.to(device))

    @staticmethod
    def cat(parts: Sequence["Neighborhood"], source_counts: Sequence[int]) -> "Neighborhood":
        """Block-diagonal union: queries and sources of part ``k`` follow those of parts ``< k``.

        ``source_counts[k]`` is the number of source points of part ``k``.
        """
        if len(parts) != len(source_counts):
            raise ValueError(f"source_counts has {len(source_counts)} entries for {len(parts)} neighbourhoods")
        indices, offsets = [], [parts[0].offsets[:1]]
        edges = sources = 0
        for part, count in zip(parts, source_counts):
            indices.append(part.indices + sources)
            offsets.append(part.offsets[1:] + edges)
            edges += part.n_edges
            sources += int(count)
        return Neighborhood(torch.cat(indices), torch.cat(offsets))


def _check_points(name: str, points: torch.Tensor, dim: int | None = None) -> None:
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or not points.is_floating_point():
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{name} must be a floating-point tensor (points, coordinates); got {shape}")
    if dim is not None and points.shape[1] != dim:
        raise ValueError(f"{name} has {points.shape[1]} coordinates per point but the other set has {dim}")
    if not torch.isfinite(points).all():
        bad = int((~torch.isfinite(points).all(1)).nonzero()[0])
        raise ValueError(f"{name} holds NaN or inf coordinates (point {bad} first); remove or repair those points")


def check_radius(radius: float) -> float:
    """``radius`` as a float; ``ValueError`` unless it is finite and positive."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius={radius!r} is not supported; give a finite positive number")
    return float(radius)


def _kdtree_search(queries: torch.Tensor, points: torch.Tensor, radius: float) -> Neighborhood:
    from scipy.spatial import cKDTree

    tree = cKDTree(points.detach().cpu().double().numpy())
    lists = tree.query_ball_point(queries.detach().cpu().double().numpy(), radius, return_sorted=True)
    counts = np.fromiter((len(found) for found in lists), dtype=np.int64, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    indices = np.concatenate([np.asarray(found, dtype=np.int64) for found in lists]) if len(lists) else offsets[:0]
    device = queries.device
    return Neighborhood(torch.from_numpy(indices).to(device), torch.from_numpy(offsets).to(device))


def _torch_search(queries: torch.Tensor, points: torch.Tensor, radius: float, pairs_per_chunk: int) -> Neighborhood:
    dtype = torch.promote_types(torch.promote_types(queries.dtype, points.dtype), torch.float32)
    queries, points = queries.detach().to(dtype), points.detach().to(dtype)
    step = max(1, pairs_per_chunk // max(1, len(points)))
    indices, counts = [], []
    for start in range(0, len(queries), step):
        block = queries[start:start + step]
        within = (block[:, None, :] - points[None, :, :]).square().sum(-1) <= radius * radius
        indices.append(within.nonzero()[:, 1])  # row-major: grouped by query, sources increasing
        counts.append(within.sum(1))
    counts = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64, device=queries.device)
    offsets = torch.zeros(len(queries) + 1, dtype=torch.int64, device=queries.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    indices = torch.cat(indices) if indices else offsets[:0]
    return Neighborhood(indices, offsets)


def radius_search(queries: torch.Tensor, points: torch.Tensor, radius: float, method: str = "auto",
                  pairs_per_chunk: int = 2**22) -> Neighborhood:
    """The ``points`` within Euclidean distance ``radius`` (inclusive) of each of ``queries``.

    Args:
        queries, points: (M, d) and (N, d) coordinates.
        radius: a positive distance.
        method: ``"kdtree"`` (SciPy's ``cKDTree``, on the CPU), ``"torch"`` (brute
            force on the queries' device, ``pairs_per_chunk`` query-point pairs at a
            time) or ``"auto"`` (``"torch"`` on CUDA, ``"kdtree"`` elsewhere).

    The result lives on the queries' device. Both methods return the same
    neighbourhoods (up to points at distance ``radius`` within rounding).
    """
    if method not in SEARCHES:
        raise ValueError(f"method={method!r} is not supported; allowed: {', '.join(map(repr, SEARCHES))}")
    radius = check_radius(radius)
    _check_points("queries", queries)
    _check_points("points", points, queries.shape[1])
    if method == "auto":
        method = "torch" if queries.device.type == "cuda" else "kdtree"
    if method == "kdtree":
        return _kdtree_search(queries, points, radius)
    if pairs_per_chunk < 1:
        raise ValueError(f"pairs_per_chunk={pairs_per_chunk!r} must be positive")
    return _torch_search(queries, points, radius, pairs_per_chunk)


def _chunk_sum(message: Callable, neighborhood: Neighborhood, start: int, stop: int, dtype: torch.dtype):
    """Per-query sums of the messages of edges ``[start, stop)``, for the queries those edges span."""
    queries = neighborhood.queries_of(start, stop)
    first = int(queries[0])
    values = message(queries, neighborhood.indices[start:stop])
    rows = int(queries[-1]) - first + 1
    return values.new_zeros(rows, values.shape[1], dtype=dtype).index_add_(0, queries - first, values.to(dtype)), first


def segment_sum(message: Callable, neighborhood: Neighborhood, channels: int, dtype: torch.dtype = torch.float32,
                chunk_size: int | None = None) -> torch.Tensor:
    """``out[i] = Σ_{edges e of query i} message(e)``, (queries, channels) in ``dtype``.

    Args:
        message: ``message(queries, sources)`` returns the (edges, channels) messages
            of a chunk of edges given by their query and source indices (any
            floating dtype; converted to ``dtype`` before they are added).
        neighborhood: the edges.
        dtype: the accumulation dtype (at least float32 for half messages).
        chunk_size: edges per chunk (``None``: all at once). With gradients enabled,
            each chunk is recomputed in backward (activation checkpointing), so
            neither pass holds more than one chunk's messages and intermediates.
            Under ``torch.compile`` all edges are processed in one pass (chunk
            bounds would depend on the neighbourhood's values).

    A query without edges gets 0.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} is not supported; give a positive int or None")
    edges = neighborhood.n_edges
    out = torch.zeros(neighborhood.n_queries, channels, dtype=dtype, device=neighborhood.offsets.device)
    if torch.compiler.is_compiling():  # one pass without value-dependent sizes; the compiler plans the memory
        values = message(neighborhood.queries_of(0, edges), neighborhood.indices)
        return out.index_add(0, neighborhood.queries_of(0, edges), values.to(dtype))
    if edges == 0:
        return out
    step = edges if chunk_size is None else chunk_size
    recompute = step < edges and torch.is_grad_enabled()
    for start in range(0, edges, step):
        stop = min(edges, start + step)
        if recompute:
            partial, first = checkpoint(_chunk_sum, message, neighborhood, start, stop, dtype,
                                        use_reentrant=False, preserve_rng_state=False)
        else:
            partial, first = _chunk_sum(message, neighborhood, start, stop, dtype)
        out[first:first + len(partial)] += partial
    return out


def nearest_distance(queries: torch.Tensor, points: torch.Tensor, neighborhood: Neighborhood, cap: float,
                     chunk_size: int | None = None) -> torch.Tensor:
    """Distance from each query to its nearest neighbour in ``neighborhood``, capped at ``cap``: (queries,).

    A query without neighbours gets ``cap``. The distances are computed ``chunk_size``
    edges at a time (``None``: all at once), without gradients, in the coordinates'
    dtype promoted to at least float32.
    """
    dtype = torch.promote_types(torch.promote_types(queries.dtype, points.dtype), torch.float32)
    out = torch.full((neighborhood.n_queries,), float(cap), dtype=dtype, device=queries.device)
    step = neighborhood.n_edges if chunk_size is None else chunk_size
    with torch.no_grad():
        for start in range(0, neighborhood.n_edges, max(1, step)):
            stop = min(neighborhood.n_edges, start + step)
            query = neighborhood.queries_of(start, stop)
            gap = (points[neighborhood.indices[start:stop]].to(dtype) - queries[query].to(dtype)).norm(dim=1)
            out.scatter_reduce_(0, query, gap, "amin")
    return out
