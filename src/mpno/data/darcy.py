"""Darcy flow: ``-∇·(a ∇u) = f`` on the unit square, ``u = 0`` on the boundary.

Second-order finite differences on the nodes ``(i/n, j/n)``, ``i, j = 0..n``
(face coefficients are the mean of the two nodes), solved with a sparse direct
solver (SuperLU). Data sets store the ``n × n`` nodes ``j / n``, ``j < n``: the
last row and column lie on the boundary (u = 0) and are the next period's first.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from . import grf
from .generator import Generator

DEFAULTS = {"alpha": 2.0, "tau": 3.0, "a_high": 12.0, "a_low": 3.0, "forcing": 1.0}


def solve(a: np.ndarray, f: np.ndarray | float) -> np.ndarray:
    """Solve on the ``(n+1) × (n+1)`` nodes given ``a`` (and ``f``) at the nodes; returns ``u`` there."""
    n = a.shape[0] - 1
    m = n - 1  # interior nodes per side
    h2 = (1.0 / n) ** 2
    ax = 0.5 * (a[1:, :] + a[:-1, :])  # faces between (i, j) and (i+1, j): (n, n+1)
    ay = 0.5 * (a[:, 1:] + a[:, :-1])  # faces between (i, j) and (i, j+1): (n+1, n)
    west, east = ax[:-1, 1:-1], ax[1:, 1:-1]  # for interior i = 1..n-1, j = 1..n-1
    south, north = ay[1:-1, :-1], ay[1:-1, 1:]
    index = np.arange(m * m).reshape(m, m)
    rows, cols, vals = [index.ravel()], [index.ravel()], [(west + east + south + north).ravel() / h2]
    for coeff, di, dj in ((west, -1, 0), (east, 1, 0), (south, 0, -1), (north, 0, 1)):
        si = slice(max(0, -di), m - max(0, di))
        sj = slice(max(0, -dj), m - max(0, dj))
        ti = slice(max(0, di), m - max(0, -di))
        tj = slice(max(0, dj), m - max(0, -dj))
        rows.append(index[si, sj].ravel())
        cols.append(index[ti, tj].ravel())
        vals.append(-coeff[si, sj].ravel() / h2)
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)[1:-1, 1:-1].ravel()
    u = np.zeros_like(a, dtype=np.float64)
    u[1:-1, 1:-1] = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(m, m)
    return u


def generate_batch(resolution: int, seed: int, indices, alpha: float, tau: float,
                   a_high: float, a_low: float, forcing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``indices``: x = a, y = u, each (B, 1, resolution, resolution).

    ``a`` is ``a_high`` where a Neumann GRF with covariance ``(-Δ + τ²)^(-α)`` is
    non-negative and ``a_low`` elsewhere (the FNO recipe: 12 and 3, τ = 3, α = 2).
    """
    nodes = torch.arange(resolution + 1, dtype=torch.float64) / resolution
    xs, ys = [], []
    for index in indices:
        field = grf.neumann(nodes, alpha, tau, grf.sample_generator(seed, index))
        a = torch.where(field >= 0, a_high, a_low).numpy()
        u = solve(a, forcing)
        xs.append(torch.from_numpy(a[:-1, :-1]))
        ys.append(torch.from_numpy(u[:-1, :-1]))
    return torch.stack(xs).unsqueeze(1), torch.stack(ys).unsqueeze(1)


#: What ``mpno generate darcy`` knows of this module.
GENERATOR = Generator("darcy", DEFAULTS, spatial_dims=2, batch_size=16, solve=generate_batch,
                      channel_types=("scalar", "scalar"))
