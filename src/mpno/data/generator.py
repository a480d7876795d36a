"""What a data generator declares, so that ``mpno generate`` needs to know nothing else of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Generator:
    """A generator of ``mpno generate``, declared by its module (``GENERATOR`` there).

    Attributes:
        name: the name ``mpno generate`` takes (``"navier-stokes"``).
        defaults: every parameter of the equation and its default.
        flags: the parameters ``mpno generate`` offers as flags, ``{parameter: (type, help)}``
            (the others are set with ``--set KEY=VALUE``).
        spatial_dims: dimensions of the grid, or of the points.
        batch_size: samples solved together by default.
        solve: ``solve(resolution, seed, indices, **params) -> (x, y)`` for pairs of fields
            (batch, channels, *grid) on a grid of ``resolution`` points per dimension.
        trajectories: ``trajectories(resolution, seed, indices, steps, interval, **params)``, the fields at
            ``steps`` times ``interval`` apart, (batch, steps, channels, *grid), where the equation can be
            written as trajectories (``mpno generate --steps``).
        write: ``write(out, n, seed=, overwrite=, progress=, **params) -> Path`` for data written
            in their own layout (point clouds: no resolution, no coarsening). A generator
            has ``solve`` or ``write``.
        grid_description: ``grid_description(resolution, **params) -> (coordinates, attributes)``
            of a grid other than ``j / n`` along every dimension (the sphere's; such grids do
            not nest, so coarsened copies are refused).
        channel_types: how one input field and one output field transform under rotations and reflections
            (``("pseudoscalar", "pseudoscalar")`` for vorticity; :data:`mpno.data.symmetries.TYPES`), written
            into pair files as each array's ``channel_type`` attribute (``mpno train --augment`` reads it);
            ``None`` where that does not apply (the sphere).
        values: ``values(resolution, params)``: numbers per sample, input and output (the size
            estimates before solving); default ``2 · resolution ** spatial_dims``.
    """

    name: str
    defaults: dict
    flags: dict = field(default_factory=dict)
    spatial_dims: int = 2
    batch_size: int = 16
    solve: Callable | None = None
    trajectories: Callable | None = None
    write: Callable | None = None
    grid_description: Callable | None = None
    values: Callable[[int, dict], int] | None = None
    channel_types: tuple[str, str] | None = None

    def __post_init__(self):
        if (self.solve is None) == (self.write is None):
            raise ValueError(f"generator {self.name!r}: give solve (fields on a grid) or write (its own layout)")
        unknown = set(self.flags) - set(self.defaults)
        if unknown:
            raise ValueError(f"generator {self.name!r}: flags {sorted(unknown)} are not parameters")

    def values_per_sample(self, resolution: int, params: dict) -> int:
        """Numbers per sample, input and output, at ``resolution``."""
        if self.values is not None:
            return self.values(resolution, params)
        return 2 * resolution ** self.spatial_dims
