"""Generating operator-learning data sets with mpno's own solvers."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from . import burgers, darcy, navier_stokes, potential_flow, shallow_water
from .. import memory
from ..writing import check_output, require_space
from .files import SampleWriter
from .generator import Generator
from .progress import Progress
from .symmetries import TYPES

#: The generators by name: each module declares its own (:class:`mpno.data.generator.Generator`).
GENERATORS: dict[str, Generator] = {module.GENERATOR.name: module.GENERATOR for module in
                                    (darcy, navier_stokes, burgers, potential_flow, shallow_water)}


def flags() -> dict[str, tuple[type, str]]:
    """Every generator's flags, ``{parameter: (type, help naming the generators that take it)}``."""
    helps: dict[str, dict[str, list[str]]] = {}
    types: dict[str, type] = {}
    for generator in GENERATORS.values():
        for name, (kind, text) in generator.flags.items():
            types.setdefault(name, kind)
            helps.setdefault(name, {}).setdefault(text, []).append(generator.name)
    return {name: (types[name], "; ".join(f"{', '.join(users)}: {text}" for text, users in helps[name].items()))
            for name in types}


def coarse_path(out: Path, resolution: int) -> Path:
    """Where the copy of ``out`` subsampled to ``resolution`` goes: ``name_<resolution>.h5``."""
    return out.with_name(f"{out.stem}_{resolution}{out.suffix}")


def _check_size(generator: Generator, targets: dict[int, Path], n: int, resolution: int, batch_size: int,
                params: dict) -> None:
    """Refuse, before solving anything, a request whose batches cannot fit in memory or whose files cannot fit
    on their disk. The estimates are lower bounds: the input and output channels at every grid point, solved
    in float64 and stored in float32."""
    batch = min(batch_size, n)
    memory.require(batch * generator.values_per_sample(resolution, params) * 8, "cpu",
                   f"generating {generator.name} at resolution {resolution} in batches of {batch}",
                   "lower --resolution or --batch-size")
    for r, path in targets.items():
        require_space(path, n * generator.values_per_sample(r, params) * 4)


def _channel_types(generator: Generator, shapes: dict) -> dict:
    """``{"x": {"channel_type": ...}, "y": ...}``: each pair array's fields' types, one per field (a vector fills
    one channel per spatial dimension); ``{}`` for trajectories and generators that declare none."""
    if generator.channel_types is None or "x" not in shapes:
        return {}
    attributes = {}
    for name, kind in zip(("x", "y"), generator.channel_types):
        per_field = generator.spatial_dims if TYPES[kind][1] else 1
        attributes[name] = {"channel_type": ",".join([kind] * (shapes[name][0] // per_field))}
    return attributes


def _check_types(equation: str, defaults: dict, params: dict) -> None:
    """Refuse a parameter whose value is not of its default's kind (``forced="false"`` would be true)."""
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, bool):
            fits = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            fits = True
        if not fits:
            raise ValueError(f"{equation} parameter {key}={value!r}: expected "
                             f"{'true or false' if isinstance(default, bool) else 'a number'} (default {default!r})")


def generate(equation: str, out: str | Path, n: int, resolution: int | None = None, seed: int = 0,
             coarsen: Sequence[int] = (), batch_size: int | None = None, progress: bool | None = None,
             overwrite: bool = False, steps: int | None = None, interval: float | None = None,
             **params) -> list[Path]:
    """Solve ``n`` samples of ``equation`` at ``resolution`` and write them (plus coarser copies).

    Args:
        equation: ``"darcy"``, ``"navier-stokes"``, ``"burgers"``, ``"shallow-water"`` (on the
            sphere: ``resolution`` latitudes, no coarsening) or ``"potential-flow"``
            (point clouds: no resolution or coarsening; ``points=`` per sample).
        out: an ``.h5`` path; copies subsampled to each resolution in ``coarsen``
            go beside it (:func:`coarse_path`).
        n, resolution, seed: sample count, grid points per dimension (grid
            equations only), and seed (sample ``i`` depends only on ``seed`` and
            ``i``, not on the batch size).
        progress: ``None`` (default): a progress bar on a terminal, and off one a line per chunk of
            samples on stderr; ``True``: a bar; ``False``: nothing (:class:`mpno.data.progress.Progress`).
        overwrite: replace existing files (otherwise refuse).
        steps: write trajectories instead of pairs: ``u`` (n, steps, C, *grid), the fields at ``steps`` times
            ``interval`` apart (default: the equation's ``time``, what a pair spans), their times ``t``, and
            the attributes ``layout = "trajectories"`` and ``interval`` (``docs/forecasting.md``).
        **params: the equation's parameters (its generator's ``defaults``).

    Returns the paths written. Each file is written under a temporary name and
    renamed when complete.
    """
    if equation not in GENERATORS:
        raise ValueError(f"equation={equation!r} is not supported; allowed: {', '.join(GENERATORS)}")
    generator = GENERATORS[equation]
    unknown = set(params) - set(generator.defaults)
    if unknown:
        raise ValueError(f"unknown {equation} parameters {sorted(unknown)}; allowed: {sorted(generator.defaults)}")
    _check_types(equation, generator.defaults, params)
    if generator.write is not None:  # not grid pairs: the generator writes its own layout
        if coarsen or resolution is not None:
            raise ValueError(f"{equation} data are point clouds; resolution and coarsen apply to grid data only")
        return [generator.write(out, n, seed=seed, overwrite=overwrite, progress=progress, **params)]
    params = {**generator.defaults, **params}
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"out={str(out)!r}: generated data are HDF5; give a .h5 path")
    if resolution is None:
        raise ValueError(f"{equation} data live on a grid: give resolution (--resolution)")
    if n < 1 or resolution < 4:
        raise ValueError(f"n={n} and resolution={resolution} must be at least 1 and 4")
    if coarsen and generator.grid_description is not None:
        raise ValueError(f"coarsen: {equation} grids do not nest; generate each resolution with the same seed "
                         "(sample i is the same flow on every grid)")
    for r in coarsen:
        if not 0 < r < resolution or resolution % r:
            raise ValueError(f"coarsen={r} must divide resolution={resolution} and be smaller")
    if interval is not None and steps is None:
        raise ValueError("interval (--interval) is the time between the snapshots of a trajectory: give steps "
                         "(--steps) too")
    if steps is not None:
        if generator.trajectories is None:
            raise ValueError(f"steps: {equation} is not written as trajectories (those that are: "
                             f"{', '.join(name for name, g in GENERATORS.items() if g.trajectories)})")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps={steps!r}: a trajectory needs at least 2 snapshots")
        interval = params["time"] if interval is None else interval
        if not interval > 0:
            raise ValueError(f"interval={interval!r} must be a positive time between snapshots")
    targets = {resolution: out, **{r: coarse_path(out, r) for r in coarsen}}
    for path in targets.values():
        check_output(path, overwrite)
    batch_size = batch_size or generator.batch_size
    _check_size(generator, targets, n * (steps or 1), resolution, batch_size, params)
    ndim = generator.spatial_dims

    def batches():  # {array name: values} of each batch of samples
        for start in range(0, n, batch_size):
            indices = range(start, min(n, start + batch_size))
            if steps is not None:
                yield {"u": generator.trajectories(resolution, seed, indices, steps, interval, **params).float().numpy()}
            else:
                x, y = generator.solve(resolution, seed, indices, **params)
                yield {"x": x.float().numpy(), "y": y.float().numpy()}

    lead = 3 if steps is not None else 2  # sample, (time,) channel
    layout = {} if steps is None else {"layout": "trajectories", "interval": interval, "steps": steps}
    extra = {} if steps is None else {"t": params.get("start", 0.0) + interval * np.arange(steps)}

    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(n, f"{equation} {resolution}", progress))
        stream = batches()
        first = next(stream)  # the writers take their shapes from it
        writers = {}
        for r, path in targets.items():
            stride = (*[slice(None)] * lead, *[slice(None, None, resolution // r)] * ndim)
            coords, described = ([np.arange(r) / r] * ndim, {}) if generator.grid_description is None \
                else generator.grid_description(r, **params)
            attributes = {"equation": equation, "params": params, "seed": seed, "resolution": r,
                          "generated_resolution": resolution, **described, **layout}
            shapes = {name: values[stride].shape[1:] for name, values in first.items()}
            writer = SampleWriter(path, n, shapes, attributes, coords, extra, _channel_types(generator, shapes))
            writers[r] = (stack.enter_context(writer), stride)
        for arrays in itertools.chain([first], stream):  # one batch in memory at a time
            for writer, stride in writers.values():
                writer.append(**{name: values[stride] for name, values in arrays.items()})
            bar.update(len(next(iter(arrays.values()))))
    return list(targets.values())
