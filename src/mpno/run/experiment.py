"""From a configuration to a trained, evaluated operator: the work behind ``mpno train`` and ``mpno evaluate``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..bounds import audit_data, audit_model, choose_precision
from ..checks import modes_per_dim, reason
from .. import memory
from ..data import DataError, OperatorDataset, coarse_path, generate, split_indices
from ..data.files import GRID, SPHERE, declared_channels, declared_equation, declared_grid, identify
from ..data.pointclouds import PointCloudBatches, PointCloudDataset
from ..nn import losses
from ..nn.point_losses import PointL2Loss
from ..nn.spherical import SFNO, SphericalL2Loss
from ..ops import sht
from ..nn.models import FNO
from ..nn.registry import build_operator
from ..nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from ..precision import Precision, PrecisionSchedule, inference_policy
from ..writing import write_text
from . import checkpoint, defaults, distributed, profiling, rundir
from .batches import LazyBatches, batches_for
from .config import EVAL_LOSSES, RunConfig
from .evaluation import evaluate
from .reporting import MetricsLog, json_safe, plot_curves, plot_point_samples, plot_samples, plot_sphere_samples
from .threads import use_threads
from .trainer import Trainer, TrainingInterrupted

#: The default example: Darcy flow generated at 64², trained at 32², tested at 32² and 64².
DEFAULT_DATA = {"n_train": 1000, "n_test": 100, "resolution": 64, "train_resolution": 32}


def cache_dir() -> Path:
    """Where generated default data are kept: ``$MPNO_CACHE`` or ``~/.cache/mpno``."""
    return Path(os.environ.get("MPNO_CACHE", Path.home() / ".cache" / "mpno"))


def default_paths() -> tuple[str, list[str]]:
    """The default example's files in :func:`cache_dir` (:func:`default_data` generates them): the training
    file at 32², the test files at 32² and 64²."""
    root, coarse = cache_dir(), DEFAULT_DATA["train_resolution"]
    train, test = root / "darcy_train.h5", root / "darcy_test.h5"
    return str(coarse_path(train, coarse)), [str(coarse_path(test, coarse)), str(test)]


def default_data(log: Callable[[str], None]) -> tuple[str, list[str]]:
    """The default example's Darcy files (generated once, then reused): train at 32², test at 32² and 64²."""
    root = cache_dir()
    fine, coarse = DEFAULT_DATA["resolution"], DEFAULT_DATA["train_resolution"]
    for split, n, seed in (("train", DEFAULT_DATA["n_train"], 0), ("test", DEFAULT_DATA["n_test"], 1)):
        out = root / f"darcy_{split}.h5"
        if not (out.exists() and coarse_path(out, coarse).exists()):
            log(f"generating the default Darcy {split} set ({n} samples at {fine}², once) into {root}")
            generate("darcy", out, n=n, resolution=fine, seed=seed, coarsen=[coarse], overwrite=True)
    return default_paths()


def what_runs(config: RunConfig) -> RunConfig:
    """``config`` with what it leaves to mpno made explicit, as ``config.json`` and ``--print-config`` record
    it: the default example's files and the device ``auto`` stands for."""
    if config.data_train is None:
        config.data_train, config.data_test = default_paths()
    config.device = str(resolve_device(config.device))
    return config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r} is not supported: mpno trains and runs on auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r}: MPS (Apple GPUs) is not available here; use --device cpu")
    return device


def _dataset(path: str, config: RunConfig) -> OperatorDataset | PointCloudDataset:
    if config.model == "gino":
        return PointCloudDataset(path, inputs=config.inputs or None, outputs=config.outputs or None)
    return OperatorDataset(path, x_key=config.x_key, y_key=config.y_key,
                           spatial_dims=config.spatial_dims, time_in=config.time_in, time_out=config.time_out)


def test_names(paths: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` of test files: their file names, or whole paths where two names coincide."""
    names = [Path(p).name for p in paths]
    return dict(zip(names if len(set(names)) == len(names) else map(str, paths), paths))


def modes_for(config: RunConfig, spatial_dims: int) -> tuple[int, ...]:
    return modes_per_dim(config.n_modes, spatial_dims, "--n-modes")


def open_data(config: RunConfig, log: Callable[[str], None]) -> tuple[OperatorDataset, dict[str, OperatorDataset]]:
    """The training set and the named test sets, checked against each other and the model's modes."""
    if config.data_train is None:  # the default example: config.json records its files
        config.data_train, config.data_test = default_data(log)
    train_path, test_paths = config.data_train, config.data_test
    if config.model == "sfno":
        config.grid = sphere_grid([train_path, *test_paths], config.grid, "--grid")
    train = _dataset(train_path, config)
    if test_paths:
        tests = {name: _dataset(path, config) for name, path in test_names(test_paths).items()}
    else:
        train_idx, test_idx = split_indices(len(train), config.test_fraction, config.seed)
        tests = {f"{train.name} (held out)": train.subset(test_idx)}
        train = train.subset(train_idx)
    if config.n_train is not None:
        train = train.subset(range(min(config.n_train, len(train))))
    chosen = defaults.fill(config, len(train), _grid(train), distributed.current().world)
    if chosen:
        log(chosen)
    if isinstance(train, PointCloudDataset):
        for name, test in tests.items():
            if test.channels != train.channels:
                raise DataError(f"{name}: {test.channels} (input, output) channels per point, but the training "
                                f"data have {train.channels}")
        return train, tests
    (x_train, y_train) = train.shapes
    spatial_dims = len(x_train) - 1
    modes = modes_for(config, spatial_dims)
    _check_grid(train.path, x_train[1:], modes, "lower --n-modes", config)  # first: a test set may be on it too
    for test in tests.values():
        x_shape, y_shape = test.shapes
        if len(x_shape) != len(x_train) or x_shape[0] != x_train[0] or y_shape[0] != y_train[0]:
            raise DataError(f"{test.path}: samples of shape {x_shape} → {y_shape} do not match the training "
                            f"data's {x_train} → {y_train} (channels and spatial dims must agree)")
        _check_grid(test.path, x_shape[1:], modes, "test on a finer grid or lower --n-modes", config)
    return train, tests


def sphere_grid(paths: Sequence[str], given: str | None, source: str) -> str:
    """The spherical grid of data files: the one they declare (their ``grid`` attribute), which must be known,
    the same in every file and agree with ``given`` (from ``source``: ``--grid``, the model); else ``given``,
    else equiangular. Files that mpno generated for a problem on the cube (their ``equation`` says which)
    are refused."""
    for path in paths:
        equation = declared_equation(path)
        if equation is not None and identify(path) == GRID:  # not SPHERE, not point clouds
            raise DataError(f"{path} holds {equation} data, which mpno generates on the unit square or cube, not "
                            "on the sphere (an SFNO would read its rows as latitudes and its columns as "
                            "longitudes); train --model fno or tfno on it, or give data on the sphere "
                            "(mpno generate shallow-water)")
    declared = {path: grid for path in paths if (grid := declared_grid(path)) is not None}
    for path, grid in declared.items():
        if grid not in sht.GRIDS:
            raise DataError(f"{path}: declares the grid {grid!r}, which mpno does not know (it knows "
                            f"{', '.join(sht.GRIDS)}); fix the file's 'grid' attribute or regenerate it")
    if len(set(declared.values())) > 1:
        raise DataError("the data files declare different grids (" + ", ".join(f"{path}: {grid}" for path, grid
                        in declared.items()) + "); train and test on one kind of grid")
    if not declared:
        return given or "equiangular"
    path, grid = next(iter(declared.items()))
    if given is not None and given != grid:
        raise DataError(f"{source} {given} conflicts with {path}, which declares the {grid} grid; the file's "
                        f"declaration is what its values mean: " + ("drop --grid" if source == "--grid" else
                                                                     "use data on the grid the model was trained on"))
    return grid


def _check_grid(path, grid, modes, fix: str, config: RunConfig) -> None:
    if config.model == "sfno" and len(grid) == 2:  # the sphere resolves fewer degrees than it has latitudes
        try:
            sht.check_sizes(*grid, *modes, config.grid)
        except ValueError as err:
            raise DataError(f"{path}: {err}; {fix}") from None
        return
    for i, (n, m) in enumerate(zip(grid, modes)):
        if n < m:
            hint = ""
            if n <= 3:  # a channel axis read as a grid axis
                hint = (f"; if the arrays are (N, C, *grid) with {len(grid) - 1} spatial dims, pass "
                        f"--spatial-dims {len(grid) - 1}")
            raise DataError(f"{path}: grid {tuple(grid)} has {n} points along dim {i}, fewer than the model's "
                            f"modes ({m}); {fix}{hint}")


def operator_for(config: RunConfig, in_channels: int, out_channels: int, n_modes) -> FNO:
    """The operator ``config`` describes, for data of these channels and modes."""
    if config.model == "gino":
        extra = {"latent_grid": config.latent_grid, "radius": config.radius, "kernel": config.kernel,
                 "chunk_size": config.chunk_size, "domain_padding": config.domain_padding}
    elif config.model == "sfno":
        extra = {"grid": config.grid}
    else:
        extra = {"domain_padding": config.domain_padding}
    return build_operator(config.model, in_channels, out_channels, n_modes, factorization=config.factorization,
                          hidden_channels=config.hidden_channels, n_layers=config.n_layers,
                          channel_mlp=config.channel_mlp, rank=config.rank, **extra)


def _channels_and_modes(config: RunConfig, train_set) -> tuple[int, int, tuple[int, ...]]:
    """Input channels, output channels and modes of the operator ``config`` describes for ``train_set``."""
    if isinstance(train_set, PointCloudDataset):
        return (*train_set.channels, modes_for(config, train_set[0][0].points.shape[-1]))
    x_shape, y_shape = train_set.shapes
    return x_shape[0], y_shape[0], modes_for(config, len(x_shape) - 1)


def model_for(config: RunConfig, train_set) -> NormalizedOperator:
    """The operator ``config`` describes for ``train_set``, with normalisers (and a GINO's position map)
    fitted on it."""
    if isinstance(train_set, PointCloudDataset):
        samples = [train_set[i] for i in range(len(train_set))]
        inputs, outputs = (x.features.T for x, _ in samples), (y.values.T for _, y in samples)
    else:
        inputs, outputs = (x for x, _ in train_set), (y for _, y in train_set)
    operator = operator_for(config, *_channels_and_modes(config, train_set))
    if isinstance(train_set, PointCloudDataset):  # the position map, before any neighbourhood is searched
        operator.fit_positions(x.points for x, _ in samples)
    return NormalizedOperator(operator, UnitGaussianNormalizer.fit(inputs), UnitGaussianNormalizer.fit(outputs))


def check_fits(config: RunConfig, train_set, device: torch.device) -> None:
    """Refuse, before anything is allocated, a model whose training cannot fit in ``device``'s memory.

    The estimate is a lower bound: float32 weights, gradients and the optimizer's two moments, and one
    half-precision activation per layer and grid point (GINO: of its latent grid) for each sample of a batch.
    """
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            operator = operator_for(config, *_channels_and_modes(config, train_set))
    except (ValueError, TypeError, RuntimeError, NotImplementedError):  # the real construction reports it
        return
    parameters = sum(p.numel() for p in operator.parameters())
    points = config.latent_grid ** 3 if isinstance(train_set, PointCloudDataset) else math.prod(train_set.shapes[0][1:])
    batch = min(config.batch_size or 1, len(train_set))
    activations = batch * config.hidden_channels * points * config.n_layers * 2
    memory.require(4 * 4 * parameters + activations, device,
                   f"training this {config.model} ({parameters:,} parameters, batches of {batch})",
                   "lower --hidden-channels, --n-modes, --n-layers or --batch-size")


def optimizer_for(config: RunConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, object]:
    """The optimizer and learning-rate scheduler ``config`` asks for."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
    else:
        scheduler = None
    return optimizer, scheduler


def batches_of(dataset, config: RunConfig, device: torch.device, model: NormalizedOperator, name: str):
    """Mini-batches of ``dataset`` for ``model``: fields in memory or read lazily, or point clouds
    whose neighbourhoods are searched once, here."""
    if isinstance(dataset, PointCloudDataset):
        return PointCloudBatches(dataset, config.batch_size, device, neighborhoods=model.operator.neighborhoods)
    return batches_for(dataset, config.batch_size, device, config.in_memory_limit_gb, name, distributed.current())


def losses_for(config: RunConfig, dataset, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
    """The training loss and the evaluation losses ``config`` asks for (point clouds: relative L2 over the
    points; the sphere: relative L2 by the grid's quadrature, of the fields standardised by ``model``'s
    output normaliser)."""
    if isinstance(dataset, PointCloudDataset):
        return PointL2Loss(), {"l2": PointL2Loss()}
    if config.model == "sfno":
        loss = SphericalL2Loss(config.grid, normalizer=model.outputs)
        return loss, {"l2": loss}
    return (losses.build(config.loss, config.periodic),
            {name: losses.build(name, config.periodic) for name in config.eval_losses or EVAL_LOSSES})


def trainer_for(config: RunConfig, model: NormalizedOperator, train_set: OperatorDataset,
                tests: dict[str, OperatorDataset], device: torch.device, run_dir: Path | None,
                log: Callable[[str], None], progress: bool = True) -> Trainer:
    """A :class:`Trainer` assembled from ``config``: optimizer, scheduler, batches, schedule and losses."""
    optimizer, scheduler = optimizer_for(config, model)
    train_loss, eval_losses = losses_for(config, train_set, model)
    return Trainer(model, optimizer, batches_of(train_set, config, device, model, "train"), config.epochs, train_loss,
                   schedule=PrecisionSchedule.parse(config.precision, config.dtype), scheduler=scheduler,
                   test_batches={name: batches_of(ds, config, device, model, name) for name, ds in tests.items()},
                   eval_losses=eval_losses,
                   grad_clip=config.grad_clip, nonfinite_patience=config.nonfinite_patience, seed=config.seed,
                   run_dir=run_dir, extra_state={"config": config.to_dict()}, tensorboard=config.tensorboard,
                   log=log, progress=progress, compile=config.compile)


def _choose_precision(config: RunConfig, train_set: OperatorDataset, model: NormalizedOperator,
                      device: torch.device) -> tuple[str, str, str]:
    """``precision="auto"``: audit (up to 64) training inputs and the model; the cheapest safe mode and dtype."""
    fields = torch.stack([train_set[i][0] for i in range(min(64, len(train_set)))])
    policy, reason = choose_precision(fields, modes_for(config, fields.ndim - 2), device, model=model)
    return policy.mode, policy.dtype, reason


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above any progress bar on a terminal


def _on_main(context: distributed.Context, fn: Callable):
    """``fn()`` on process 0, its result (or its error) on every process."""
    outcome = None
    if context.main:
        try:
            outcome = ("ok", fn())
        except Exception as err:  # every process must hear of it, or the others wait forever
            if distributed.current().world == 1:
                raise
            outcome = ("error", type(err), str(err))
    outcome = distributed.from_main(outcome)
    if outcome[0] == "error":
        kind = outcome[1] if outcome[1] in (ValueError, FileExistsError, FileNotFoundError, DataError) else RuntimeError
        raise kind(outcome[2])
    return outcome[1]


def train(config: RunConfig, resume: str | None = None, overwrite: bool = False,
          log: Callable[[str], None] = _log, epochs: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) a training run; returns the summary (also written to ``summary.json``).

    ``resume``: a run directory to continue from its last checkpoint (``config``
    then gives only the device); ``epochs`` extends it to that many epochs, as if
    the run had been configured with the new total from the start, from the
    current epoch on (the precision schedule's phases and the learning-rate
    schedule are recomputed for the new total). ``progress``: a line per epoch
    through ``log`` and progress bars on a terminal.

    Under ``torchrun`` every process calls this: process 0 creates the run
    directory, generates missing default data, logs and writes files.
    """
    state, run_dir, finished = None, None, False
    if resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume {run_dir}: no such run directory")
        rundir.refuse_links(run_dir)  # before reading anything through one
        state = checkpoint.load(run_dir / "checkpoint.pt")
        options = checkpoint.run_options(state, run_dir / "checkpoint.pt")
        config = dataclasses.replace(RunConfig.from_dict(options, source=str(run_dir / "checkpoint.pt")),
                                     device=config.device, dist_backend=config.dist_backend, threads=config.threads)
        done = state["epoch"]
        if epochs is not None and epochs <= done:
            raise ValueError(f"--epochs {epochs}: {run_dir} has already trained {done} epochs; give more to extend it")
        if epochs is None and done >= config.epochs:
            raise ValueError(f"{run_dir} has finished its {config.epochs} epochs; pass --epochs N (> {done}) to "
                             "train it further, or test it with mpno evaluate")
        config.epochs = epochs or config.epochs
    else:
        config.validate()
    device = resolve_device(config.device)
    config.device = str(device)  # what runs: config.json records the device, not "auto"
    if config.model == "gino" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--model gino trains in one process; run it without torchrun")
    owns_group = distributed.current().world == 1  # set up here (torchrun), not by a caller
    context = distributed.setup(config.dist_backend, device.type)
    if context.world > 1 and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not context.main:
        log = lambda message: None  # noqa: E731
    config.threads = use_threads(config.threads, log, device.type)
    lock = None

    def open_run_directory() -> str:  # process 0 owns the directory and its lock
        nonlocal lock
        if resume:
            lock = rundir.reopen(run_dir)
            return str(run_dir)
        path, lock = rundir.create(config.out, overwrite)
        return str(path)

    try:
        run_dir = Path(_on_main(context, open_run_directory))
        config.out = str(run_dir)
        def check_and_generate() -> None:  # process 0 first: it generates missing default data
            open_data(config, log)

        _on_main(context, check_and_generate)
        train_set, tests = open_data(config, log)
        check_fits(config, train_set, device)
        torch.manual_seed(config.seed)
        model = model_for(config, train_set).to(device)
        if state is not None:
            _check_same_model(state, model, run_dir, config)
        auto_reason = None
        if config.precision == "auto":
            config.precision, config.dtype, auto_reason = _on_main(
                context, lambda: _choose_precision(config, train_set, model, device))
            log(f"precision=auto chose {auto_reason}")
        if state is None and context.main:
            config.save(run_dir / "config.json")
        trainer = trainer_for(config, model, train_set, tests, device, run_dir, log, progress)
        for batches in trainer.test_batches.values():
            if isinstance(batches, LazyBatches):  # read lazily: find bad samples now, not after an epoch
                batches.check()
        if state is not None:
            try:
                trainer.load_state(state)
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise checkpoint.CheckpointError(f"{run_dir / 'checkpoint.pt'}: cannot be resumed ({reason(err)}); "
                                                 "the file is damaged or was edited: start a new run") from None
            if epochs is not None:
                trainer.extend(epochs)
                if context.main:
                    config.save(run_dir / "config.json")
            log(f"resuming {run_dir} at epoch {trainer.epoch + 1} of {config.epochs}")
        start = time.perf_counter()
        results = trainer.fit()
        finished = True
        seconds = time.perf_counter() - start
        summary = {
            "test": results, "grids": {name: _grid(test) for name, test in tests.items()},
            "epochs": config.epochs, "seconds": seconds,
            "precision_history": trainer.history, "best": trainer.best,
            **profiling.peak_memory(device),
            "run_dir": str(run_dir), "device": str(device), "precision_auto": auto_reason,
            "world_size": context.world, "global_batch_size": config.batch_size * context.world,
        }
        if context.main:
            _write_report(summary, model, trainer, run_dir, config.loss, tests)
        # Release DDP while the process group lives, and leave together: a process that
        # tears the group down while its peer is still busy can abort at exit.
        trainer.close()
        distributed.barrier()
        return summary
    except KeyboardInterrupt:  # Ctrl-C: what was saved stays, and the user is told how to go on
        if run_dir is None or not context.main:
            raise
        raise TrainingInterrupted(_interrupted(run_dir, finished)) from None
    finally:
        if lock is not None:
            lock.release()
        if owns_group:
            distributed.teardown()


def _interrupted(run_dir: Path, finished: bool) -> str:
    """What an interrupted run leaves, and how to go on."""
    if finished:
        return (f"training had finished; {run_dir}/checkpoint.pt holds the trained model, but the report "
                f"(summary.json, plots) may be missing: test it with mpno evaluate {run_dir}/checkpoint.pt --data ...")
    if (run_dir / "checkpoint.pt").is_file():
        return f"{run_dir} keeps its last completed epoch; continue with: mpno train --resume {run_dir}"
    return (f"no epoch had finished, so {run_dir} holds nothing to resume; run the same command again to start over "
            "(it reuses the directory)")


def _check_same_model(state: dict, model: NormalizedOperator, run_dir: Path, config: RunConfig) -> None:
    """On resume: refuse data for which the run's options now build a different model (channels, dims)."""
    def plain(value):
        return json.dumps(value, sort_keys=True, default=str)  # tuples and lists alike

    saved, built = state["operator"], model.spec()
    keys = sorted(set(saved.get("arguments", {})) | set(built["arguments"]))
    changed = [f"{key} {saved['arguments'].get(key)!r} → {built['arguments'].get(key)!r}" for key in keys
               if plain(saved["arguments"].get(key)) != plain(built["arguments"].get(key))]
    if saved.get("kind") != built["kind"]:
        changed.insert(0, f"kind {saved.get('kind')!r} → {built['kind']!r}")
    if changed:
        data = config.data_train or "the default data"
        raise DataError(f"--resume {run_dir}: the data no longer match the run: for {data} it would build a "
                        f"different model ({'; '.join(changed)}); restore the data it was trained on, or start a "
                        "new run")


def _grid(dataset) -> list[int]:
    """The grid of a data set's fields (empty for point clouds)."""
    return [] if isinstance(dataset, PointCloudDataset) else list(dataset.shapes[0][1:])


def _write_report(summary: dict, model: NormalizedOperator, trainer: Trainer, run_dir: Path, loss_name: str,
                  tests: dict) -> None:
    """``summary.json``, the loss curves and a few test samples of every test set (``tests``: name → dataset):
    fields on a grid as images, on the sphere as maps (every channel), point clouds as 3D scatter plots."""
    write_text(run_dir / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    rows = MetricsLog(run_dir, tensorboard=False).rows()
    if rows:
        plot_curves(rows, run_dir / "curves.png", loss_name=loss_name, grids=summary["grids"])
    for name, batches in trainer.test_batches.items():
        x, y, _ = next(batches.iterate())
        path = run_dir / f"samples_{Path(name).stem}.png"
        if isinstance(batches, PointCloudBatches):
            plot_point_samples(model, x, y, path, title=name)
        elif isinstance(model.operator, SFNO):
            plot_sphere_samples(model, x, y, path, model.operator.grid, title=f"{name}: test sample 0",
                                channels=declared_channels(tests[name].path))
        else:
            plot_samples(model, x[:3], y[:3], path, title=name)


def checkpoint_model(path: str, device: torch.device, precision: str | None, batch_size: int | None = None,
                     log: Callable[[str], None] = _log) -> tuple[NormalizedOperator, RunConfig]:
    """A saved model on ``device`` in ``precision`` (default: as saved; a precision that names no stabilizer
    keeps the trained one, :func:`mpno.precision.inference_policy`, whose warning goes to ``log``), and its
    run's options (with ``batch_size`` if given)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"--batch-size {batch_size}: give a positive int")
    state = checkpoint.load(path)
    model = checkpoint.model_from_state(state, path).to(device)
    if precision:
        policy, warning = inference_policy(precision, model.precision)
        if warning:
            log(warning)
        model.set_precision(policy)
    options = state.get("config")  # absent from checkpoints of one's own loop: the defaults then
    config = RunConfig.from_dict(options if isinstance(options, dict) else {}, source=str(path))
    config.batch_size = batch_size or config.batch_size
    if isinstance(model.operator, SFNO):
        config.grid = model.operator.grid
    return model, config


def checked_dataset(file: str, config: RunConfig, model: NormalizedOperator) -> OperatorDataset:
    """``file`` read with the run's options, checked against the model's channels and dimensions."""
    if isinstance(model.operator, SFNO):
        sphere_grid([file], model.operator.grid, "the model's grid")
    dataset = _dataset(file, config)
    if isinstance(dataset, PointCloudDataset):
        if dataset.channels != (model.operator.in_channels, model.operator.out_channels):
            raise DataError(f"{file}: {dataset.channels} (input, output) channels per point do not fit the model")
        return dataset
    x_shape, _ = dataset.shapes
    operator = model.operator
    if x_shape[0] != operator.in_channels or len(x_shape) - 1 != len(operator.n_modes):
        raise DataError(f"{dataset.path}: samples of shape {x_shape} do not fit the model "
                        f"({operator.in_channels} input channels, {len(operator.n_modes)} spatial dims); "
                        "check --x-key and the file")
    return dataset


def evaluate_checkpoint(path: str, data: list[str], device: str = "auto", batch_size: int | None = None,
                        precision: str | None = None, x_key: str | None = None, y_key: str | None = None) -> dict:
    """Test errors of a saved model on data files: ``{"test": {file: {loss: value}}, "grids": ...,
    "precision": ...}``, in the precision it was saved in (or ``precision``). The files are read
    with the run's options (keys, time steps), or ``x_key``/``y_key``."""
    device_ = resolve_device(device)
    model, config = checkpoint_model(path, device_, precision, batch_size)
    config.x_key, config.y_key = x_key or config.x_key, y_key or config.y_key
    batches, grids = {}, {}
    for name, file in test_names(data).items():
        test = checked_dataset(file, config, model)
        batches[name] = batches_of(test, config, device_, model, name)
        grids[name] = _grid(test)
    _, eval_losses = losses_for(config, test, model)
    return {"test": evaluate(model, batches, eval_losses), "grids": grids, "precision": str(model.precision)}


def bounds_report(data: str, model_path: str | None = None, modes: Sequence[int] | None = None,
                  samples: int = 64, field: str = "x", precision: str | None = None, device: str = "auto",
                  **open_kwargs) -> dict:
    """The data audit (and, with a model, the model audit) behind ``mpno bounds``."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"--samples {samples}: give a positive int")
    if modes is not None and not all(isinstance(m, int) and m > 0 for m in modes):
        raise ValueError(f"--modes {' '.join(map(str, modes))}: give positive ints")
    if identify(data) == SPHERE:
        raise DataError(f"{data} holds fields on the sphere; mpno bounds audits Fourier coefficients on the "
                        "cube, which would misjudge them: for the sphere's error budget use mpno.bounds.sphere "
                        "(docs/sphere.md)")
    dataset = OperatorDataset(data, **{k: v for k, v in open_kwargs.items() if v is not None})
    grid = dataset.shapes[0][1:]
    if min(grid) < 4:
        raise DataError(f"{data}: grid {tuple(grid)} is too coarse to audit; give at least 4 points per dimension")
    count = min(samples, len(dataset))
    pairs = [dataset[i] for i in range(count)]
    fields = torch.stack([x if field == "x" else y for x, y in pairs])
    model = None
    if model_path:
        model = checkpoint.load_model(model_path)
        if not isinstance(model.operator, FNO):
            raise ValueError(f"--model {model_path}: the audit compares Fourier coefficients of fields on the "
                             "cube, which an SFNO or GINO does not use; for SFNO see mpno.bounds.sphere "
                             "(docs/sphere.md)")
        modes = modes or model.operator.n_modes
    if modes:
        modes = modes_per_dim(modes, fields.ndim - 2)
    else:
        modes = tuple(min(16, n // 4) for n in fields.shape[2:])
    device_ = resolve_device(device)
    report = audit_data(fields, modes, device_)
    report.update({"data": str(data), "field": field})
    if model is not None:
        policy = _audit_policy(model.precision, precision)
        inputs = torch.stack([x for x, _ in pairs])
        report["model"] = {"checkpoint": str(model_path), **audit_model(model.to(device_), inputs, policy)}
    return report


def _audit_policy(trained: Precision, requested: str | None, log: Callable[[str], None] = _log) -> Precision:
    """The policy a model is audited in: as asked (with the trained stabilizer unless it names one,
    :func:`mpno.precision.inference_policy`), else its last training policy, or ``mixed`` after ``full``."""
    if requested:
        policy, warning = inference_policy(requested, trained)
        if warning:
            log(warning)
        return policy
    return trained if trained.mode != "full" else trained.replace(mode="mixed", stabilizer=trained.stabilizer)
