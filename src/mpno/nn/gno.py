"""Graph neural operators on point clouds: the GNO kernel integral and GINO (GNO → FNO → GNO)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from .. import precision as precision_module
from ..checks import as_modes, positive_int
from ..ops.neighbors import Neighborhood, check_radius, nearest_distance, radius_search, segment_sum
from ..precision import Precision
from .layers import ChannelMLP, PointwiseLinear
from .models import FNO
from .operator import Operator, OutdatedArchitecture

KERNELS = ("linear", "nonlinear")


def _channels_first(rows: torch.Tensor) -> torch.Tensor:
    """(points, channels) -> (1, channels, points), the layout of :class:`PointwiseLinear`."""
    return rows.T.unsqueeze(0)


class GNOBlock(nn.Module):
    """Kernel integral over a radius neighbourhood: ``u(x) = ∫_{|y - x| ≤ r} κ((y - x) / r) · (W f)(y) dy``.

    Args:
        in_channels, out_channels: channels of ``f`` and ``u``.
        coord_dim: coordinates per point (2 or 3, say).
        radius: the neighbourhood radius ``r`` (used when no neighbourhood is given).
        kernel: ``"linear"``: ``κ((y − x) / r)``, an MLP of the displacement from the
            query to the source in units of the radius; ``"nonlinear"``:
            ``κ((y − x) / r, f(y))``, which also sees the input features (the GINO
            paper's two kernel integrals, on the displacement). The kernel's
            ``out_channels`` values multiply ``W f`` channel by channel, ``W`` a
            learned ``in_channels → out_channels`` matrix. The kernel's output bias
            starts at 1, so that an untrained block is close to the neighbourhood
            mean of ``W f``.
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
        kernel_in = coord_dim + (in_channels if kernel == "nonlinear" else 0)
        self.kernel = ChannelMLP(kernel_in, positive_int("kernel_hidden", kernel_hidden), out_channels)
        with torch.no_grad():
            self.kernel.fc2.bias.fill_(1.0)
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
            # the displacement in the coordinates' dtype, rounded once by the kernel's first layer
            parts = [((points[source] - queries[query]) / self.radius).T]
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


#: The fraction of the dense spectral parameters a GINO's latent FNO keeps by default (Tucker factorisation).
RANK = 0.05
#: Radius of a GINO's neighbourhoods when none is given, in latent cells (the largest spacing of the grid).
RADIUS_CELLS = 1.5


class LatentGridOperator(Operator):
    """What operators between point clouds through a latent grid share (:class:`GINO` is one):
    the latent grid and its box, the neighbourhood radius, the position map, the neighbourhoods of a batch, the
    checks of their input, and the way back to the points (:meth:`_to_points`: an output GNO ``gno_out``, then a
    per-point MLP ``projection`` of its result beside the point's own features).

    Args:
        in_channels, out_channels: channels of the per-point input features and outputs.
        n_modes: the latent FNO's kept modes, one per dimension (2 or 3 dims).
        latent_grid: points per dimension of the latent grid.
        radius: the neighbourhood radius of the graph kernel integrals, in the latent box's
            units (default: 1.5 latent cells; at least half a cell's diagonal, so that
            every point of the box has a latent neighbour).
        bounds: the latent box: ``(low, high)`` for every dimension or one pair
            per dimension. :meth:`fit_positions` maps the data into it.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (8, 8, 8),
                 latent_grid: int | Sequence[int] = 16, radius: float | None = None, bounds: Sequence = (-1.0, 1.0)):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_modes = as_modes(n_modes)
        ndim = len(self.n_modes)
        grid = (latent_grid,) * ndim if isinstance(latent_grid, int) else tuple(latent_grid)
        if len(grid) != ndim or not all(isinstance(n, int) and n >= max(2, m) for n, m in zip(grid, self.n_modes)):
            raise ValueError(f"latent_grid={latent_grid!r} is not supported; give {ndim} ints, each at least 2 and "
                             f"at least the matching n_modes {self.n_modes}")
        self.latent_grid = grid
        self.bounds = _bounds(bounds, ndim)
        spacings = [(hi - lo) / (n - 1) for n, (lo, hi) in zip(grid, self.bounds)]
        self.radius = RADIUS_CELLS * max(spacings) if radius is None else check_radius(radius)
        half_diagonal = math.sqrt(sum(h * h for h in spacings)) / 2
        if self.radius < half_diagonal:
            raise ValueError(f"radius={radius!r} is smaller than half a latent cell's diagonal ({half_diagonal:.4g}); "
                             "some points would have no latent neighbour: raise radius or refine latent_grid")
        self.register_buffer("position_scale", torch.ones(()))
        self.register_buffer("position_shift", torch.zeros(ndim))

    def fit_positions(self, clouds: Iterable[torch.Tensor]) -> "LatentGridOperator":
        """Fit the position map on ``clouds`` ((P, d) tensors, the training clouds): their common bounding
        box, scaled by one factor (aspect kept) and centred, fills the latent box. Returns ``self``."""
        low = high = None
        for cloud in clouds:
            if not isinstance(cloud, torch.Tensor) or cloud.ndim != 2 or cloud.shape[1] != len(self.bounds) \
                    or not len(cloud):
                raise ValueError(f"fit_positions: each cloud must be a non-empty ({len(self.bounds)})-column tensor "
                                 f"of points; got {getattr(cloud, 'shape', type(cloud).__name__)}")
            cloud = cloud.detach().double().cpu()
            low = cloud.min(0).values if low is None else torch.minimum(low, cloud.min(0).values)
            high = cloud.max(0).values if high is None else torch.maximum(high, cloud.max(0).values)
        if low is None:
            raise ValueError("fit_positions needs at least one cloud")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError("fit_positions: the clouds hold NaN or inf coordinates")
        box = torch.tensor(self.bounds, dtype=torch.float64)
        extent = float((high - low).max())
        scale = float((box[:, 1] - box[:, 0]).min()) / extent if extent > 0 else 1.0
        self.position_scale.fill_(scale)
        self.position_shift.copy_(box.mean(1) - scale * (low + high) / 2)
        return self

    def latent_coordinates(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (P, d) mapped into the latent box (:meth:`fit_positions`'s map, then clamped)."""
        mapped = points * self.position_scale.to(points.dtype) + self.position_shift.to(points.dtype)
        box = torch.tensor(self.bounds, dtype=mapped.dtype, device=mapped.device)
        return torch.maximum(torch.minimum(mapped, box[:, 1]), box[:, 0])

    def latent_points(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Coordinates of the latent grid's points, (grid points, d), in C order."""
        return _latent_points(self.latent_grid, self.bounds, device, dtype)

    def neighborhoods(self, points: torch.Tensor) -> tuple[Neighborhood, Neighborhood]:
        """For one cloud of ``points`` (P, d), as given: (points near each latent point, latent points near each point).

        Compute these once per sample and keep them (:class:`mpno.data.pointclouds.PointCloudBatches`
        does); :meth:`forward` searches when a batch holds none.
        """
        _check_points_shape(points, len(self.latent_grid), type(self).__name__)
        coordinates = self.latent_coordinates(points)
        inward = radius_search(self.latent_points(points.device, coordinates.dtype), coordinates, self.radius)
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
            raise ValueError(f"{type(self).__name__} expects a batch of point clouds "
                             f"(mpno.data.pointclouds.PointClouds); got {type(x).__name__}")
        _check_points_shape(x.points, len(self.latent_grid), type(self).__name__)
        if x.features.shape != (len(x.points), self.in_channels):
            raise ValueError(f"{type(self).__name__} expects features ({len(x.points)}, {self.in_channels}); "
                             f"got {tuple(x.features.shape)}")
        if not torch.compiler.is_compiling() and (not torch.isfinite(x.points).all()
                                                  or not torch.isfinite(x.features).all()):
            raise ValueError(f"{type(self).__name__}: the points or features hold NaN or inf values")
        return self._in_own_policy(x, x.points.device.type)

    def _latent_batch(self, x) -> tuple[Neighborhood, Neighborhood, torch.Tensor, torch.Tensor]:
        """The batch's neighbourhoods (checked to be this model's), its points mapped into the latent box, and the
        latent grid's points once per cloud."""
        inward, outward = self._batch_neighborhoods(x)
        batch, size = len(x.sizes), math.prod(self.latent_grid)
        if inward.n_queries != batch * size or outward.n_queries != len(x.points):
            raise ValueError(f"{type(self).__name__}: the batch's neighbourhoods have {inward.n_queries} latent and "
                             f"{outward.n_queries} point queries, not {batch * size} and {len(x.points)}: "
                             "they were computed for another model")
        empty = None if torch.compiler.is_compiling() else outward.counts() == 0  # value checks: eager only
        if empty is not None and empty.any():
            raise ValueError(f"{type(self).__name__}: point {int(empty.nonzero()[0])} of the batch has no latent "
                             "neighbour; the batch's neighbourhoods were computed for another model or before "
                             "fit_positions")
        points = self.latent_coordinates(x.points)
        return inward, outward, points, self.latent_points(x.points.device, points.dtype).repeat(batch, 1)

    def _to_points(self, h: torch.Tensor, x, points: torch.Tensor, latent: torch.Tensor,
                   outward: Neighborhood) -> torch.Tensor:
        """The output GNO (``gno_out``) from the latent field ``h`` (batch · grid, channels) to the points, and the
        final MLP (``projection``) of it beside each point's own features: the outputs (P, out_channels)."""
        u = self.gno_out(points, latent, h, outward)  # (P, hidden)
        u = torch.cat([u, x.features.to(u.dtype)], 1)  # the point's own features beside the latent field
        return self.projection(_channels_first(u))[0].T.to(x.points.dtype)


class GINO(LatentGridOperator, kind="gino", domain="points"):
    """Geometry-informed neural operator: points → latent grid (GNO) → FNO → points (GNO) → per-point MLP.

    Args:
        in_channels, out_channels: channels of the per-point input features and outputs.
        n_modes: the latent FNO's kept modes, one per dimension (2 or 3 dims).
        hidden_channels, n_layers: the latent FNO's width and depth.
        precision: a :class:`mpno.Precision` or mode name, applied to every layer
            (GNOs and FNO alike); change it with :meth:`set_precision`.
        latent_grid: points per dimension of the latent grid.
        radius: the neighbourhood radius of both GNOs, in the latent box's units
            (default: 1.5 latent cells; at least half a cell's diagonal, so that
            every point of the box has a latent neighbour).
        bounds: the latent box: ``(low, high)`` for every dimension or one pair
            per dimension. :meth:`fit_positions` maps the data into it.
        gno_channels: channels the input GNO puts on the latent grid (default
            ``hidden_channels``).
        kernel: the input GNO's kernel, ``"nonlinear"`` (``κ((y − x)/r, f(y))``)
            or ``"linear"`` (``κ((y − x)/r)``); the output GNO's is linear (see
            :class:`GNOBlock`).
        kernel_hidden, chunk_size: of both :class:`GNOBlock` s.
        projection_channels: hidden width of the final per-point MLP (default
            ``2 * hidden_channels``).
        factorization, rank: the latent FNO's spectral weights (see :class:`mpno.SpectralConv`;
            default: Tucker, keeping ``rank`` = 5% of the dense parameters, which
            generalises far better from few geometries than dense weights; ``None``
            or ``"dense"`` for dense weights).
        **fno_options: other arguments of the latent :class:`mpno.FNO` (``skip``,
            ``channel_mlp``, ``domain_padding``, ``factorization``, ``rank``, ...).

    Positions: every cloud goes through one affine map, ``points · scale + shift``
    (buffers ``position_scale``, ``position_shift``, saved with the weights),
    which :meth:`fit_positions` fits on the training clouds so that their common
    bounding box, with its aspect kept, fills the latent box; untouched, the map
    is the identity. A point the map puts outside the box is moved to the box's
    nearest point. Fit before computing neighbourhoods.

    Stages: the input GNO moves the features onto the latent grid; the latent
    FNO sees them beside the distance from each latent point to the nearest
    point of its cloud (in radii, capped at 1: the geometry where no point is
    near) and the grid's coordinates; the output GNO brings the latent field back
    to the points, and the final MLP maps it, beside the point's own input
    features, to the outputs.

    The input is a batch of point clouds (:class:`mpno.data.pointclouds.PointClouds`:
    ``points`` (P, d), ``features`` (P, in_channels), per-cloud ``sizes``, optional
    quadrature ``weights`` and cached neighbourhoods); clouds may differ in size.
    The output is (P, out_channels), the rows in the input's order, in the
    points' dtype. :attr:`arguments` holds the constructor's arguments (:mod:`mpno.nn.operator`).
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (8, 8, 8),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 latent_grid: int | Sequence[int] = 16, radius: float | None = None,
                 bounds: Sequence = (-1.0, 1.0), gno_channels: int | None = None, kernel: str = "nonlinear",
                 kernel_hidden: int = 64, chunk_size: int | None = 2**16, projection_channels: int | None = None,
                 factorization: str | None = "tucker", rank: float | int | Sequence[int] = RANK, **fno_options):
        super().__init__(in_channels, out_channels, n_modes, latent_grid, radius, bounds)
        ndim = len(self.n_modes)
        hidden = positive_int("hidden_channels", hidden_channels)
        gno = gno_channels or hidden
        self.gno_in = GNOBlock(in_channels, gno, ndim, self.radius, kernel, kernel_hidden, chunk_size)
        self.fno = FNO(gno + 1, hidden, self.n_modes, hidden_channels=hidden, n_layers=n_layers,
                       factorization=factorization, rank=rank, **fno_options)
        self.gno_out = GNOBlock(hidden, hidden, ndim, self.radius, "linear", kernel_hidden, chunk_size)
        self.projection = ChannelMLP(hidden + in_channels, projection_channels or 2 * hidden, out_channels)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "position_scale" not in state_dict and prefix + "gno_in.kernel.fc1.weight" in state_dict:
            raise OutdatedArchitecture(
                "these GINO weights come from an earlier mpno whose GINO had another design (kernels of both "
                "points' coordinates, no fitted position map, no latent distance channel); they cannot be "
                "loaded into the current GINO: train it again")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _forward(self, x) -> torch.Tensor:
        inward, outward, points, latent = self._latent_batch(x)
        batch, size = len(x.sizes), math.prod(self.latent_grid)
        h = self.gno_in(latent, points, x.features, inward, x.weights)  # (batch · grid, gno)
        distance = nearest_distance(latent, points, inward, self.radius, self.gno_in.chunk_size) / self.radius
        h = torch.cat([h, distance.to(h.dtype).unsqueeze(1)], 1)
        h = h.unflatten(0, (batch, *self.latent_grid)).movedim(-1, 1)
        h = self.fno(h).movedim(1, -1).reshape(batch * size, -1)
        return self._to_points(h, x, points, latent, outward)


def _check_points_shape(points, ndim: int, who: str) -> None:
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != ndim:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{who}: points must be (P, {ndim}); got {shape}")
