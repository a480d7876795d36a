"""Graph neural operators on point clouds: the GNO kernel integral and GINO (GNO → FNO → GNO)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .. import precision as precision_module
from ..checks import as_modes, positive_int
from ..ops.neighbors import Neighborhood, check_radius, radius_search, segment_sum
from ..precision import Precision
from .layers import ChannelMLP, Operator, PointwiseLinear
from .models import FNO

KERNELS = ("linear", "nonlinear")


def _channels_first(rows: torch.Tensor) -> torch.Tensor:
    """(points, channels) -> (1, channels, points), the layout of :class:`PointwiseLinear`."""
    return rows.T.unsqueeze(0)


class GNOBlock(nn.Module):
    """Kernel integral over a radius neighbourhood: ``u(x) = ∫_{|y - x| ≤ r} κ(x, y) · (W f)(y) dy``.

    Args:
        in_channels, out_channels: channels of ``f`` and ``u``.
        coord_dim: coordinates per point (2 or 3, say).
        radius: the neighbourhood radius ``r`` (used when no neighbourhood is given).
        kernel: ``"linear"``: ``κ(x, y)``, an MLP of both points' coordinates;
            ``"nonlinear"``: ``κ(x, y, f(y))``, which also sees the input features
            (the GINO paper's two kernel integrals). The kernel's ``out_channels``
            values multiply ``W f`` channel by channel, ``W`` a learned
            ``in_channels → out_channels`` matrix.
        kernel_hidden: hidden width of the kernel MLP.
        chunk_size: edges processed at a time (``None``: all). Peak memory grows
            with the chunk, not with the number of edges; with gradients, each
            chunk is recomputed in backward.
        precision: a :class:`mpno.Precision` or mode name; outside ``full`` the
            kernel MLP, ``W f`` and the per-edge products run in the half dtype
            (half products with float32 accumulation, :mod:`mpno.ops.products`) and
            the sums over neighbourhoods accumulate in float32.

    Without quadrature ``weights`` the integral is the mean over the neighbourhood;
    with ``weights`` (one per source point, e.g. the area each point stands for) it
    is ``Σ_y w_y κ(x, y) (W f)(y)``. A query with an empty neighbourhood gets 0.
    """

    def __init__(self, in_channels: int, out_channels: int, coord_dim: int = 3, radius: float = 0.1,
                 kernel: str = "linear", kernel_hidden: int = 64, chunk_size: int | None = 2**16,
                 precision: Precision | str = "full"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not supported; allowed: {', '.join(map(repr, KERNELS))}")
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.coord_dim = positive_int("coord_dim", coord_dim)
        self.radius = check_radius(radius)
        if chunk_size is not None:
            positive_int("chunk_size", chunk_size)
        self.kernel_kind, self.chunk_size = kernel, chunk_size
        kernel_in = 2 * coord_dim + (in_channels if kernel == "nonlinear" else 0)
        self.kernel = ChannelMLP(kernel_in, positive_int("kernel_hidden", kernel_hidden), out_channels)
        self.transform = PointwiseLinear(in_channels, out_channels, bias=False)
        self.precision = precision_module.set_precision(self, precision)

    def neighborhood(self, queries: torch.Tensor, points: torch.Tensor) -> Neighborhood:
        """The ``points`` within :attr:`radius` of each query."""
        return radius_search(queries, points, self.radius)

    def _check(self, queries, points, features, neighborhood, weights) -> None:
        for name, coords in (("queries", queries), ("points", points)):
            if not isinstance(coords, torch.Tensor) or coords.ndim != 2 or coords.shape[1] != self.coord_dim:
                shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
                raise ValueError(f"GNOBlock: {name} must be ({name}, {self.coord_dim}); got {shape}")
        if features.ndim != 2 or features.shape != (len(points), self.in_channels):
            raise ValueError(f"GNOBlock: features must be ({len(points)}, {self.in_channels}) (one row per "
                             f"point); got {tuple(features.shape)}")
        if weights is not None and weights.shape != (len(points),):
            raise ValueError(f"GNOBlock: weights must be ({len(points)},) (one per point); got {tuple(weights.shape)}")
        if neighborhood.n_queries != len(queries):
            raise ValueError(f"GNOBlock: the neighbourhood has {neighborhood.n_queries} queries but "
                             f"{len(queries)} query points were given")
        if torch.compiler.is_compiling():  # the checks below read values: eager mode only
            return
        if neighborhood.n_edges and not 0 <= int(neighborhood.indices.min()) <= int(neighborhood.indices.max()) < len(points):
            raise ValueError(f"GNOBlock: the neighbourhood names points outside [0, {len(points)})")

    def forward(self, queries: torch.Tensor, points: torch.Tensor, features: torch.Tensor,
                neighborhood: Neighborhood | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` at ``queries`` (M, d) from ``features`` (N, in_channels) at ``points`` (N, d): (M, out_channels).

        ``neighborhood`` (from :meth:`neighborhood` or a data pipeline's cache)
        lists the points near each query; it is searched when not given. The
        result is in the policy's dtype (the master dtype in ``full``).
        """
        if neighborhood is None:
            neighborhood = self.neighborhood(queries, points)
        self._check(queries, points, features, neighborhood, weights)
        master = self.transform.weight.dtype
        dtype = self.precision.real_dtype or master
        transformed = self.transform(_channels_first(features))[0]  # (out, N), computed once per point
        sources_in = _channels_first(features)[0] if self.kernel_kind == "nonlinear" else None
        accumulate = torch.promote_types(torch.float32, master)
        scale = weights.to(accumulate) if weights is not None else None

        def message(query, source):
            parts = [queries[query].T, points[source].T]
            if sources_in is not None:
                parts.append(sources_in[:, source].to(queries.dtype))
            kernel = self.kernel(torch.cat(parts).unsqueeze(0))[0]
            values = (kernel * transformed[:, source]).T  # one rounding to the policy's dtype
            if scale is not None:  # in the accumulation dtype: small weights cannot underflow
                values = values.to(accumulate) * scale[source].unsqueeze(1)
            return values

        total = segment_sum(message, neighborhood, self.out_channels, accumulate, self.chunk_size)
        if weights is None:
            total = total / neighborhood.counts().clamp(min=1).unsqueeze(1).to(accumulate)
        return total.to(dtype)


def _latent_points(grid: tuple[int, ...], bounds: Sequence[tuple[float, float]], device, dtype) -> torch.Tensor:
    axes = [torch.linspace(lo, hi, n, device=device, dtype=dtype) for n, (lo, hi) in zip(grid, bounds)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


def _bounds(bounds, ndim: int) -> list[tuple[float, float]]:
    pairs = [tuple(bounds)] * ndim if len(bounds) == 2 and not isinstance(bounds[0], Sequence) else list(bounds)
    if len(pairs) != ndim or any(len(p) != 2 or not p[0] < p[1] for p in map(tuple, pairs)):
        raise ValueError(f"bounds={bounds!r} is not supported; give (low, high) for every dimension, or "
                         f"{ndim} such pairs, with low < high")
    return [(float(lo), float(hi)) for lo, hi in pairs]


class GINO(Operator):
    """Geometry-informed neural operator: points → latent grid (GNO) → FNO → points (GNO).

    Args:
        in_channels, out_channels: channels of the per-point input features and outputs.
        n_modes: the latent FNO's kept modes, one per dimension (2 or 3 dims).
        hidden_channels, n_layers: the latent FNO's width and depth.
        precision: a :class:`mpno.Precision` or mode name, applied to every layer
            (GNOs and FNO alike); change it with :meth:`set_precision`.
        latent_grid: points per dimension of the latent grid.
        radius: the neighbourhood radius of both GNOs (at least half a latent
            cell's diagonal, so that every point inside ``bounds`` has a latent
            neighbour).
        bounds: the box the latent grid spans: ``(low, high)`` for every
            dimension or one pair per dimension; the points must lie inside it.
        gno_channels: channels the input GNO puts on the latent grid (default
            ``hidden_channels``).
        kernel, kernel_hidden, chunk_size: of both :class:`GNOBlock` s.
        projection_channels: hidden width of the final per-point MLP (default
            ``2 * hidden_channels``).
        **fno_options: other arguments of the latent :class:`mpno.FNO` (``skip``,
            ``channel_mlp``, ``domain_padding``, ``factorization``, ``rank``, ...).

    The input is a batch of point clouds (:class:`mpno.data.pointclouds.PointClouds`:
    ``points`` (P, d), ``features`` (P, in_channels), per-cloud ``sizes``, optional
    quadrature ``weights`` and cached neighbourhoods); clouds may differ in size.
    The output is (P, out_channels), the rows in the input's order, in the
    points' dtype. :attr:`arguments` holds the constructor's arguments (all but
    ``precision``) for :func:`mpno.nn.registry.build_operator`.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (8, 8, 8),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 latent_grid: int | Sequence[int] = 16, radius: float = 0.2,
                 bounds: Sequence = (-1.0, 1.0), gno_channels: int | None = None, kernel: str = "linear",
                 kernel_hidden: int = 64, chunk_size: int | None = 2**16, projection_channels: int | None = None,
                 **fno_options):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = as_modes(n_modes)
        ndim = len(self.n_modes)
        grid = (latent_grid,) * ndim if isinstance(latent_grid, int) else tuple(latent_grid)
        if len(grid) != ndim or not all(isinstance(n, int) and n >= m for n, m in zip(grid, self.n_modes)):
            raise ValueError(f"latent_grid={latent_grid!r} is not supported; give {ndim} ints, each at least "
                             f"the matching n_modes {self.n_modes}")
        self.latent_grid = grid
        self.bounds = _bounds(bounds, ndim)
        self.radius = check_radius(radius)
        cell = math.sqrt(sum(((hi - lo) / max(1, n - 1)) ** 2 for n, (lo, hi) in zip(grid, self.bounds)))
        if self.radius < cell / 2:
            raise ValueError(f"radius={radius!r} is smaller than half a latent cell's diagonal ({cell / 2:.4g}); "
                             "some points would have no latent neighbour: raise radius or refine latent_grid")
        hidden = positive_int("hidden_channels", hidden_channels)
        gno = gno_channels or hidden
        self.arguments = {
            "in_channels": in_channels, "out_channels": out_channels, "n_modes": list(self.n_modes),
            "hidden_channels": hidden_channels, "n_layers": n_layers, "latent_grid": list(grid),
            "radius": self.radius, "bounds": [list(b) for b in self.bounds], "gno_channels": gno_channels,
            "kernel": kernel, "kernel_hidden": kernel_hidden, "chunk_size": chunk_size,
            "projection_channels": projection_channels, **fno_options,
        }
        self.gno_in = GNOBlock(in_channels, gno, ndim, self.radius, kernel, kernel_hidden, chunk_size)
        self.fno = FNO(gno, hidden, self.n_modes, hidden_channels=hidden, n_layers=n_layers, **fno_options)
        self.gno_out = GNOBlock(hidden, hidden, ndim, self.radius, kernel, kernel_hidden, chunk_size)
        self.projection = ChannelMLP(hidden, projection_channels or 2 * hidden, out_channels)
        self.set_precision(precision)

    def latent_points(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Coordinates of the latent grid's points, (grid points, d), in C order."""
        return _latent_points(self.latent_grid, self.bounds, device, dtype)

    def neighborhoods(self, points: torch.Tensor) -> tuple[Neighborhood, Neighborhood]:
        """For one cloud of ``points`` (P, d): (points near each latent point, latent points near each point).

        Compute these once per sample and keep them (:class:`mpno.data.pointclouds.PointCloudBatches`
        does); :meth:`forward` searches when a batch holds none.
        """
        latent = self.latent_points(points.device, points.dtype)
        inward = radius_search(latent, points, self.radius)
        return inward, inward.transpose(len(points))

    def _batch_neighborhoods(self, x) -> tuple[Neighborhood, Neighborhood]:
        if x.neighbors is not None:
            return x.neighbors
        pairs = [self.neighborhoods(cloud) for cloud in x.points.split(list(x.sizes))]
        latent = math.prod(self.latent_grid)
        return (Neighborhood.cat([p[0] for p in pairs], list(x.sizes)),
                Neighborhood.cat([p[1] for p in pairs], [latent] * len(pairs)))

    def forward(self, x) -> torch.Tensor:
        if not all(hasattr(x, name) for name in ("points", "features", "sizes", "weights", "neighbors")):
            raise ValueError(f"GINO expects a batch of point clouds (mpno.data.pointclouds.PointClouds); "
                             f"got {type(x).__name__}")
        if x.points.ndim != 2 or x.points.shape[1] != len(self.latent_grid):
            raise ValueError(f"GINO: points must be (P, {len(self.latent_grid)}); got {tuple(x.points.shape)}")
        if x.features.shape != (len(x.points), self.in_channels):
            raise ValueError(f"GINO expects features ({len(x.points)}, {self.in_channels}); "
                             f"got {tuple(x.features.shape)}")
        if not torch.compiler.is_compiling() and (not torch.isfinite(x.points).all()
                                                  or not torch.isfinite(x.features).all()):
            raise ValueError("GINO: the points or features hold NaN or inf values")
        return self._in_own_policy(x, x.points.device.type)

    def _forward(self, x) -> torch.Tensor:
        inward, outward = self._batch_neighborhoods(x)
        empty = None if torch.compiler.is_compiling() else outward.counts() == 0  # value checks: eager only
        if empty is not None and empty.any():
            first = int(empty.nonzero()[0])
            raise ValueError(f"GINO: point {first} of the batch has no latent grid point within radius "
                             f"{self.radius}; keep the points inside bounds {self.bounds}")
        batch, size = len(x.sizes), math.prod(self.latent_grid)
        latent = self.latent_points(x.points.device, x.points.dtype).repeat(batch, 1)
        h = self.gno_in(latent, x.points, x.features, inward, x.weights)  # (batch · grid, gno)
        h = h.unflatten(0, (batch, *self.latent_grid)).movedim(-1, 1)
        h = self.fno(h).movedim(1, -1).reshape(batch * size, -1)
        u = self.gno_out(x.points, latent, h, outward)  # (P, hidden)
        return self.projection(_channels_first(u))[0].T.to(x.points.dtype)
