"""Inviscid potential flow past ellipsoids: the exact surface pressure coefficient, as point clouds.

An ellipsoid with semi-axes ``(a, b, c)`` sits in a uniform stream ``U`` (unit
speed). With ``Δ(λ) = √((a²+λ)(b²+λ)(c²+λ))`` the shape constants (Lamb,
*Hydrodynamics*, §114)

    α_a = abc ∫₀^∞ dλ / ((a²+λ) Δ(λ)) = (2abc/3) R_D(b², c², a²)    (likewise b, c)

sum to 2 (``R_D`` is Carlson's symmetric elliptic integral). The flow inside the
body's potential is linear, so on the surface the velocity is the tangential part
of ``Σ_i C_i U_i e_i`` (body axes) with ``C_i = 2 / (2 − α_i)``, and the pressure
coefficient is ``Cp = 1 − |u_s|² / |U|²``. A sphere has ``α_i = 2/3``, ``C_i = 3/2``
and ``Cp = 1 − (9/4) sin²θ``.

Sample ``i`` (depending only on the seed and ``i``) draws semi-axes uniformly in
``[min_axis, max_axis]``, a uniformly random orientation ``R`` (``x_world = R x_body``)
and a uniformly random stream direction, and ``points`` surface points uniformly by area.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import elliprd

from ..writing import check_output, new_hdf5, require_space
from .files import FORMAT_VERSION
from .generator import Generator
from .pointclouds import PointCloudDataset
from .progress import Progress

DEFAULTS = {"points": 1024, "min_axis": 0.3, "max_axis": 1.0}
#: The arrays that turn with the body and the stream, and those that do not (``--augment rotate``).
CHANNEL_TYPES = {"normals": "vector", "flow": "vector", "cp": "scalar"}


def shape_constants(semi_axes: np.ndarray) -> np.ndarray:
    """``α_i`` of ellipsoids with semi-axes (..., 3); they sum to 2."""
    s = np.asarray(semi_axes, dtype=np.float64)
    a, b, c = s[..., 0], s[..., 1], s[..., 2]
    squares = s**2
    scale = 2.0 * a * b * c / 3.0
    return np.stack([scale * elliprd(squares[..., (i + 1) % 3], squares[..., (i + 2) % 3], squares[..., i])
                     for i in range(3)], axis=-1)


def pressure_coefficient(normals: np.ndarray, semi_axes: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``Cp`` at surface points with unit outward ``normals`` (P, 3), all in body axes; ``flow`` (3,) unit."""
    speeds = 2.0 / (2.0 - shape_constants(semi_axes)) * np.asarray(flow, dtype=np.float64)
    tangential = speeds - (normals @ speeds)[:, None] * normals
    return 1.0 - (tangential**2).sum(1)


def surface_points(semi_axes: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly distributed by area on an ellipsoid, and their unit outward normals (body axes)."""
    s = np.asarray(semi_axes, dtype=np.float64)
    points = np.empty((0, 3))
    while len(points) < count:
        u = rng.standard_normal((2 * count, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # x = s ⊙ u maps the sphere onto the ellipsoid with area ratio ∝ |u / s|; accept in proportion
        keep = rng.random(len(u)) * (1.0 / s.min()) <= np.linalg.norm(u / s, axis=1)
        points = np.concatenate([points, u[keep] * s])
    points = points[:count]
    normals = points / s**2
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def sample(seed: int, index: int, points: int, min_axis: float, max_axis: float) -> dict[str, np.ndarray]:
    """Sample ``index``: world-frame ``points``, ``normals``, ``cp`` and its ``semi_axes``, ``rotation``, ``flow``."""
    rng = np.random.default_rng([seed, index])
    semi_axes = rng.uniform(min_axis, max_axis, 3)
    rotation = Rotation.random(random_state=rng).as_matrix()
    flow = rng.standard_normal(3)
    flow /= np.linalg.norm(flow)
    body_points, body_normals = surface_points(semi_axes, points, rng)
    cp = pressure_coefficient(body_normals, semi_axes, rotation.T @ flow)
    return {"points": body_points @ rotation.T, "normals": body_normals @ rotation.T, "cp": cp,
            "semi_axes": semi_axes, "rotation": rotation, "flow": flow}


def write(out: str | os.PathLike, n: int, seed: int = 0, overwrite: bool = False, progress: bool | None = None,
          points: int = DEFAULTS["points"], min_axis: float = DEFAULTS["min_axis"],
          max_axis: float = DEFAULTS["max_axis"]) -> Path:
    """Write ``n`` samples to the HDF5 file ``out`` (``points``, ``normals``, ``cp``, ``semi_axes``,
    ``rotation``, ``flow``); the file appears only when complete. Returns its path."""
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"out={str(out)!r}: generated data are HDF5; give a .h5 path")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(points, bool) \
            or not isinstance(points, int) or points < 1:
        raise ValueError(f"n={n!r} and points={points!r} must be positive ints")
    if not 0 < min_axis <= max_axis:
        raise ValueError(f"min_axis={min_axis!r} and max_axis={max_axis!r} must satisfy 0 < min_axis <= max_axis")
    check_output(out, overwrite)
    require_space(out, n * points * 7 * 4)  # points, normals and cp in float32
    out.parent.mkdir(parents=True, exist_ok=True)
    shapes = {"points": (points, 3), "normals": (points, 3), "cp": (points,), "semi_axes": (3,),
              "rotation": (3, 3), "flow": (3,)}
    params = {"points": points, "min_axis": min_axis, "max_axis": max_axis}
    with new_hdf5(out) as output, Progress(n, "potential-flow", progress) as bar:
        f = output.file
        f.attrs.update({"mpno_format": FORMAT_VERSION, "equation": "potential-flow", "params": json.dumps(params),
                        "seed": seed})
        arrays = {key: f.create_dataset(key, (n, *shape), dtype="float32" if key in ("points", "normals", "cp")
                                        else "float64") for key, shape in shapes.items()}
        for key, kind in CHANNEL_TYPES.items():  # how each array transforms under rotations (--augment)
            arrays[key].attrs["channel_type"] = kind
        for i in range(n):
            for key, value in sample(seed, i, **params).items():
                arrays[key][i] = value
            output.check()
            bar.update(1)
    return out


def dataset(n: int, points: int = DEFAULTS["points"], seed: int = 0, min_axis: float = DEFAULTS["min_axis"],
            max_axis: float = DEFAULTS["max_axis"]) -> PointCloudDataset:
    """``n`` samples in memory as a :class:`~mpno.data.pointclouds.PointCloudDataset` (inputs: normals
    and stream direction at every point; output: ``cp``), the same samples :func:`write` stores."""
    clouds = []
    for i in range(n):
        s = sample(seed, i, points, min_axis, max_axis)
        features = np.concatenate([s["normals"], np.broadcast_to(s["flow"], (points, 3))], axis=1)
        clouds.append((s["points"], features, s["cp"][:, None], None))
    return PointCloudDataset.from_clouds(f"potential-flow (seed {seed})", clouds)


#: What ``mpno generate potential-flow`` knows of this module: point clouds, written in their own layout.
GENERATOR = Generator("potential-flow", DEFAULTS, spatial_dims=3, batch_size=1, write=write,
                      flags={"points": (int, "surface points per sample")})
