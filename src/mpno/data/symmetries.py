"""Symmetries of fields on a grid and of point clouds, and the training augmentation they give (``mpno train
--augment``).

A grid symmetry maps grid axis ``order[k]`` to axis ``k``, reverses the axes
``k`` with ``signs[k] = -1`` and rolls axis ``k`` by ``shifts[k]`` points
(periodic axes only). A reversal reflects about the grid's centre (index
``j → n−1−j``: cell centres, or nodes with both ends stored), or with
``about_first_point`` about its first point (``j → −j mod n``: ``x → −x`` on a
periodic grid ``x_j = j/n``, and mpno's Darcy data, which store the nodes
``j/n`` with the boundary at ``j = 0``). In coordinates it is
``x'_k = signs[k] · x_order[k]`` (plus the shift): a signed permutation ``R``,
with ``det R = sign(order) · Π signs``. Its flips and axis permutations map the
square (cube) onto itself; quarter turns are the permutations combined with flips
that keep ``det R = 1``.

Each channel transforms by its type (:data:`TYPES`): a scalar moves with the
grid; a pseudo-scalar (the vorticity of a 2D flow) also changes sign where
``det R = -1``; a vector's ``d`` consecutive channels (its components along the
grid axes, in axis order) become ``R v``; a pseudo-vector's (3D vorticity),
``det R · R v``. An augmentation is an exact symmetry only of a problem that
has it: a forcing or a boundary that is not symmetric breaks it.

A point-cloud symmetry (:class:`PointSymmetry`) is any orthogonal map ``Q`` of
space, a rotation or (``det Q = -1``) a reflection, applied to each cloud about
its centroid: ``p' = c + Q (p − c)``; channels transform by their type with ``Q``
for ``R``. Potential flow past a body is unchanged by it when the body, its
normals and the stream turn together.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

#: Channel types: the name, its short form, and whether it spans ``d`` channels (a vector) and flips sign under
#: a reflection (pseudo).
TYPES = {"scalar": ("s", False, False), "pseudoscalar": ("p", False, True),
         "vector": ("v", True, False), "pseudovector": ("a", True, True)}
#: Augmentations of fields on a grid, as ``--augment`` names them.
KINDS = ("shift", "flip", "rotate")
#: Augmentations of point clouds, as ``--augment`` names them.
POINT_KINDS = ("rotate", "reflect")


def parse_types(text: str) -> tuple[str, ...]:
    """One type per field (:data:`TYPES`, full or short names) from ``"vector,scalar"``."""
    short = {abbreviation: name for name, (abbreviation, _, _) in TYPES.items()}
    fields = []
    for word in (w.strip().lower() for w in text.split(",")):
        name = short.get(word, word)
        if name not in TYPES:
            raise ValueError(f"--channel-types: {word!r} is not a channel type; use "
                             + ", ".join(f"{n} ({a})" for n, (a, _, _) in TYPES.items()))
        fields.append(name)
    return tuple(fields)


def channel_count(types: Sequence[str], dims: int) -> int:
    """Channels the fields of ``types`` fill on a grid of ``dims`` dimensions."""
    return sum(dims if TYPES[name][1] else 1 for name in types)


@dataclass(frozen=True)
class ChannelTypes:
    """The types of the input and of the output channels (:data:`TYPES`), one per field."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def parse(cls, text: str | None, dims: int, in_channels: int, out_channels: int) -> ChannelTypes:
        """``--channel-types INPUTS[/OUTPUTS]`` (one list for both when there is no ``/``), checked against the
        channel counts; ``None``: every channel a scalar."""
        if text is None:
            return cls(("scalar",) * in_channels, ("scalar",) * out_channels)
        first, _, second = text.partition("/")
        inputs, outputs = parse_types(first), parse_types(second or first)
        for side, types, channels in (("input", inputs, in_channels), ("output", outputs, out_channels)):
            if channel_count(types, dims) != channels:
                raise ValueError(f"--channel-types {text!r}: the {side} types fill {channel_count(types, dims)} "
                                 f"channels, and the data have {channels} {side} channels (a vector fills {dims} "
                                 "on this grid); give INPUTS/OUTPUTS, e.g. vector/pseudoscalar")
        return cls(inputs, outputs)


@dataclass(frozen=True)
class GridSymmetry:
    """A signed permutation of the grid axes and a periodic shift (module docstring)."""

    order: tuple[int, ...]
    signs: tuple[int, ...]
    shifts: tuple[int, ...]
    about_first_point: bool = False

    @property
    def det(self) -> int:
        """``det R``: -1 for a reflection, 1 for a rotation."""
        inversions = sum(a > b for a, b in itertools.combinations(self.order, 2))
        return (-1) ** inversions * math.prod(self.signs)

    def apply(self, fields: torch.Tensor, types: Sequence[str]) -> torch.Tensor:
        """The transformed fields (C, *grid) (or (B, C, *grid), one symmetry for all) whose channels have
        ``types``."""
        lead = fields.ndim - len(self.order)
        moved = fields.permute(*range(lead), *(lead + k for k in self.order))
        reversed_ = [lead + k for k, s in enumerate(self.signs) if s < 0]
        shifts = list(self.shifts)
        if reversed_:
            moved = moved.flip(reversed_)
            if self.about_first_point:  # n−1−j, then one point on: −j mod n
                shifts = [shift + (s < 0) for shift, s in zip(shifts, self.signs)]
        if any(shifts):
            moved = moved.roll(shifts, tuple(range(lead, moved.ndim)))
        return self._channels(moved, types, lead - 1)

    def _channels(self, fields: torch.Tensor, types: Sequence[str], axis: int) -> torch.Tensor:
        dims, pieces, start = len(self.order), [], 0
        for name in types:
            _, vector, pseudo = TYPES[name]
            factor = self.det if pseudo else 1
            if vector:
                components = fields.narrow(axis, start, dims)
                pieces += [factor * self.signs[k] * components.select(axis, self.order[k]).unsqueeze(axis)
                           for k in range(dims)]
                start += dims
            else:
                piece = fields.narrow(axis, start, 1)
                pieces.append(-piece if factor < 0 else piece)
                start += 1
        return torch.cat(pieces, axis)


@dataclass(frozen=True, eq=False)
class PointSymmetry:
    """An orthogonal map ``matrix`` (d, d) of space, applied to each cloud about its centroid (module
    docstring)."""

    matrix: torch.Tensor

    @property
    def det(self) -> int:
        """``det Q``: -1 for a reflection, 1 for a rotation."""
        return 1 if float(torch.linalg.det(self.matrix)) > 0 else -1

    def apply(self, values, types: Sequence[str]):
        """Per-point values (P, C) whose channels have ``types``, transformed; or a batch of clouds
        (:class:`mpno.data.pointclouds.PointClouds`) with its points turned about each cloud's centroid and its
        features transformed, its cached neighbourhoods dropped (the operator searches the moved points')."""
        if isinstance(values, torch.Tensor):
            return self._channels(values, types)
        matrix = self.matrix.to(values.points.dtype).to(values.points.device)
        sizes = torch.tensor(values.sizes, device=values.points.device)
        centres = torch.stack([cloud.mean(0) for cloud in values.points.split(list(values.sizes))])
        centres = centres.repeat_interleave(sizes, 0)
        return dataclasses.replace(values, points=centres + (values.points - centres) @ matrix.T,
                                   features=self._channels(values.features, types), neighbors=None)

    def _channels(self, values: torch.Tensor, types: Sequence[str]) -> torch.Tensor:
        matrix = self.matrix.to(values.dtype).to(values.device)
        pieces, start = [], 0
        for name in types:
            _, vector, pseudo = TYPES[name]
            width = len(matrix) if vector else 1
            piece = values[:, start:start + width]
            if vector:
                piece = piece @ matrix.T
            pieces.append(-piece if pseudo and self.det < 0 else piece)
            start += width
        return torch.cat(pieces, 1)


def draw_orthogonal(kinds: Sequence[str], dims: int, generator: torch.Generator) -> PointSymmetry:
    """A map drawn uniformly from the group ``kinds`` generate in ``dims`` dimensions: ``rotate`` any
    rotation (Haar measure on SO(d)), with ``reflect`` as well any orthogonal map (on O(d)); ``reflect`` alone
    the identity or the reflection through a plane of uniformly random normal, each with probability 1/2."""
    if "rotate" in kinds:
        q, r = torch.linalg.qr(torch.randn(dims, dims, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # the QR of a Gaussian matrix, signs fixed: Haar on O(d)
        if "reflect" not in kinds and torch.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return PointSymmetry(q)
    normal = torch.randn(dims, generator=generator, dtype=torch.float64)
    reflected = int(torch.randint(2, (1,), generator=generator))
    return PointSymmetry(torch.eye(dims, dtype=torch.float64)
                         - 2 * reflected * torch.outer(normal, normal) / normal.square().sum())


def point_representatives(kinds: Sequence[str], dims: int) -> dict[str, PointSymmetry]:
    """One map per generator of the group ``kinds`` generate, by name (``mpno evaluate --symmetry-check``): a
    turn by 72° in each plane of two axes (not a quarter turn, which would map a latent grid onto itself) and
    a reflection of each axis."""
    chosen, angle = {}, 2 * math.pi / 5
    if "rotate" in kinds:
        for i, j in itertools.combinations(range(dims), 2):
            turn = torch.eye(dims, dtype=torch.float64)
            turn[i, i] = turn[j, j] = math.cos(angle)
            turn[i, j], turn[j, i] = -math.sin(angle), math.sin(angle)
            chosen[f"turn by 72° in the plane of axes {i},{j}"] = PointSymmetry(turn)
    if "reflect" in kinds:
        for k in range(dims):
            mirror = torch.eye(dims, dtype=torch.float64)
            mirror[k, k] = -1
            chosen[f"reflection of axis {k}"] = PointSymmetry(mirror)
    return chosen


def check_augment(kinds: Sequence[str], grid: Sequence[int], periodic: bool, types: ChannelTypes,
                  types_given: bool) -> None:
    """Refuse augmentations that cannot be symmetries of the data: an unknown name, a shift of non-periodic
    fields, a quarter turn of a grid that is not square, and flips or turns of data whose vector channels are
    not declared (as many channels as grid axes, left as scalars)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--augment {','.join(unknown)}: not an augmentation of fields on a grid; use "
                         f"{', '.join(KINDS)}")
    if "shift" in kinds and not periodic:
        raise ValueError("--augment shift rolls the fields around a periodic grid, and these are not periodic "
                         "(--no-periodic); drop shift")
    if "rotate" in kinds and len(set(grid)) > 1:
        raise ValueError(f"--augment rotate turns the grid by quarter turns, which map a square (cube) grid onto "
                         f"itself, and this grid is {'×'.join(map(str, grid))}; drop rotate or resample the data")
    dims = len(grid)
    if {"flip", "rotate"} & set(kinds) and not types_given and dims > 1 \
            and dims in (len(types.inputs), len(types.outputs)):
        raise ValueError(f"--augment {','.join(k for k in kinds if k != 'shift')} transforms vector components "
                         f"with the grid, and these data have {dims} channels on a {dims}D grid, left as scalars; "
                         f"declare them: --channel-types vector (or scalar,scalar,... if they are scalars)")


def draw(kinds: Sequence[str], grid: Sequence[int], generator: torch.Generator,
         about_first_point: bool = False, shift_axes: Sequence[int] | None = None) -> GridSymmetry:
    """A symmetry drawn uniformly from the group ``kinds`` generate: ``shift`` any roll of every axis (of
    ``shift_axes`` only, if given), ``flip`` any reflections of the axes, ``rotate`` any quarter turns (with
    ``flip`` as well: every signed permutation); reflections about the first point or the centre
    (:class:`GridSymmetry`)."""
    dims = len(grid)

    def integers(high: int, count: int) -> list[int]:
        return torch.randint(high, (count,), generator=generator).tolist()

    order = tuple(torch.randperm(dims, generator=generator).tolist()) if "rotate" in kinds else tuple(range(dims))
    signs = tuple(1 - 2 * b for b in integers(2, dims)) if {"flip", "rotate"} & set(kinds) else (1,) * dims
    rolled = range(dims) if shift_axes is None else shift_axes
    shifts = tuple(integers(n, 1)[0] if "shift" in kinds and k in rolled else 0 for k, n in enumerate(grid))
    if "rotate" in kinds and "flip" not in kinds and GridSymmetry(order, signs, shifts).det < 0:
        signs = (-signs[0], *signs[1:])  # rotations only: undo one reflection
    return GridSymmetry(order, signs, shifts, about_first_point)


def representatives(kinds: Sequence[str], grid: Sequence[int], about_first_point: bool = False,
                    shift_axes: Sequence[int] | None = None) -> dict[str, GridSymmetry]:
    """One symmetry per generator of the group ``kinds`` generate, by name: a shift of each axis (of
    ``shift_axes``, if given) by a third of it, a flip of each axis, a quarter turn in each plane of two axes
    (``mpno evaluate --symmetry-check``); reflections about the first point or the centre (:class:`GridSymmetry`)."""
    dims = len(grid)
    identity, ones, zeros = tuple(range(dims)), (1,) * dims, (0,) * dims
    chosen = {}
    if "shift" in kinds:
        for k, n in enumerate(grid):
            if shift_axes is not None and k not in shift_axes:
                continue
            step = max(1, n // 3)
            shifts = tuple(step * (j == k) for j in identity)
            chosen[f"shift axis {k} by {step}"] = GridSymmetry(identity, ones, shifts, about_first_point)
    if "flip" in kinds:
        for k in identity:
            signs = tuple(-1 if j == k else 1 for j in identity)
            chosen[f"flip axis {k}"] = GridSymmetry(identity, signs, zeros, about_first_point)
    if "rotate" in kinds:
        for i, j in itertools.combinations(identity, 2):
            order = list(identity)
            order[i], order[j] = j, i
            signs = tuple(-1 if a == i else 1 for a in identity)
            chosen[f"quarter turn of axes {i},{j}"] = GridSymmetry(tuple(order), signs, zeros, about_first_point)
    return chosen


class Augmentation:
    """``--augment``: each training sample transformed by a symmetry drawn for it (:func:`draw`). ``note``: a
    line for the run's log about the channel types (``None``: nothing to say)."""

    def __init__(self, kinds: Sequence[str], types: ChannelTypes, about_first_point: bool = False,
                 shift_axes: Sequence[int] | None = None, note: str | None = None):
        self.kinds, self.types, self.note = tuple(kinds), types, note
        self.about_first_point, self.shift_axes = about_first_point, shift_axes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
        """The batch ``(x, y)`` (B, C, *grid), each sample's input and target transformed alike."""
        grid = x.shape[2:]
        xs, ys = [], []
        for sample_x, sample_y in zip(x, y):
            symmetry = draw(self.kinds, grid, generator, self.about_first_point, self.shift_axes)
            xs.append(symmetry.apply(sample_x, self.types.inputs))
            ys.append(symmetry.apply(sample_y, self.types.outputs))
        return torch.stack(xs), torch.stack(ys)


class PointAugmentation:
    """``--augment`` of point clouds: each training cloud and its values transformed by a map drawn for it
    (:func:`draw_orthogonal`), its neighbourhoods searched again by the operator. ``note``: as
    :class:`Augmentation`'s."""

    def __init__(self, kinds: Sequence[str], types: ChannelTypes, note: str | None = None):
        self.kinds, self.types, self.note = tuple(kinds), types, note

    def __call__(self, x, y, generator: torch.Generator) -> tuple:
        """The batch ``(x, y)`` (:class:`mpno.data.pointclouds.PointClouds`, ``PointValues``), each cloud and
        its values transformed alike."""
        dims, sizes = x.points.shape[1], list(x.sizes)
        clouds, values = [], []
        for points, features, targets in zip(x.points.split(sizes), x.features.split(sizes), y.values.split(sizes)):
            symmetry = draw_orthogonal(self.kinds, dims, generator)
            cloud = dataclasses.replace(x, points=points, features=features, sizes=(len(points),), weights=None,
                                        neighbors=None)
            clouds.append(symmetry.apply(cloud, self.types.inputs))
            values.append(symmetry.apply(targets, self.types.outputs))
        moved = dataclasses.replace(x, points=torch.cat([c.points for c in clouds]),
                                    features=torch.cat([c.features for c in clouds]), neighbors=None)
        return moved, dataclasses.replace(y, values=torch.cat(values))
