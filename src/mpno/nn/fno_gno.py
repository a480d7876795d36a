"""FNO-GNO: an FNO on a latent grid that sees the geometry, then a graph kernel integral out to the points."""

from __future__ import annotations

from typing import Sequence

import torch

from ..checks import positive_int
from ..ops.neighbors import nearest_distance
from ..precision import Precision
from .gno import RANK, GNOBlock, LatentGridOperator
from .layers import ChannelMLP
from .models import FNO


def cloud_means(x) -> torch.Tensor:
    """The mean input features of each cloud of a batch (:class:`mpno.data.pointclouds.PointClouds`), weighted by
    its quadrature weights when it has them: (clouds, channels)."""
    features = x.features.split(list(x.sizes))
    if x.weights is None:
        return torch.stack([f.mean(0) for f in features])
    weights = x.weights.to(x.features.dtype).split(list(x.sizes))
    return torch.stack([(f * w[:, None]).sum(0) / w.sum() for f, w in zip(features, weights)])


class FNOGNO(LatentGridOperator, kind="fno-gno", domain="points"):
    """FNO-GNO: the geometry on a latent grid → FNO → the points (GNO) → per-point MLP.

    neuraloperator's FNO-GNO (the car-CFD model: an FNO over a distance field on a
    regular grid, then a GNO from that grid to the surface points), on the point clouds
    a GINO takes. Where a GINO moves the features onto the latent grid with a graph
    kernel integral, the latent FNO here sees, at every latent point, the distance to
    the nearest point of its cloud (in radii, capped at 1: the geometry) and the cloud's
    mean features (weighted by its quadrature weights; a per-sample input such as a
    stream direction, repeated at every point, comes through whole), beside the grid's
    coordinates. The output graph kernel integral (:class:`mpno.GNOBlock`) brings the
    latent field to the points, and the final MLP maps it, beside each point's own
    features, to the outputs.

    Args:
        in_channels, out_channels, n_modes, latent_grid, radius, bounds: as :class:`mpno.GINO`.
        hidden_channels, n_layers: the latent FNO's width and depth.
        precision: a :class:`mpno.Precision` or mode name, applied to every layer.
        kernel: the output GNO's kernel, ``"linear"`` (``κ((y − x)/r)``, default) or
            ``"nonlinear"`` (``κ((y − x)/r, h(y))``, which also sees the latent field).
        kernel_hidden, chunk_size: of the output :class:`mpno.GNOBlock`.
        projection_channels: hidden width of the final per-point MLP (default ``2 * hidden_channels``).
        factorization, rank, **fno_options: of the latent :class:`mpno.FNO` (default: Tucker
            at 5% of the dense parameters, as a GINO's).

    Positions (:meth:`fit_positions`), neighbourhoods, input and output are those of a
    :class:`mpno.GINO`.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int | Sequence[int] = (8, 8, 8),
                 hidden_channels: int = 32, n_layers: int = 4, precision: Precision | str = "full",
                 latent_grid: int | Sequence[int] = 16, radius: float | None = None, bounds: Sequence = (-1.0, 1.0),
                 kernel: str = "linear", kernel_hidden: int = 64, chunk_size: int | None = 2**16,
                 projection_channels: int | None = None, factorization: str | None = "tucker",
                 rank: float | int | Sequence[int] = RANK, **fno_options):
        super().__init__(in_channels, out_channels, n_modes, latent_grid, radius, bounds)
        hidden = positive_int("hidden_channels", hidden_channels)
        self.fno = FNO(in_channels + 1, hidden, self.n_modes, hidden_channels=hidden, n_layers=n_layers,
                       factorization=factorization, rank=rank, **fno_options)
        self.gno_out = GNOBlock(hidden, hidden, len(self.n_modes), self.radius, kernel, kernel_hidden, chunk_size)
        self.projection = ChannelMLP(hidden + in_channels, projection_channels or 2 * hidden, out_channels)

    def _forward(self, x) -> torch.Tensor:
        inward, outward, points, latent = self._latent_batch(x)
        batch, grid = len(x.sizes), self.latent_grid
        distance = nearest_distance(latent, points, inward, self.radius, self.gno_out.chunk_size) / self.radius
        means = cloud_means(x).to(distance.dtype)
        field = torch.cat([distance.view(batch, 1, *grid),
                           means.view(batch, -1, *[1] * len(grid)).expand(-1, -1, *grid)], 1)
        h = self.fno(field).movedim(1, -1).reshape(len(distance), -1)  # (batch · grid, hidden)
        return self._to_points(h, x, points, latent, outward)
