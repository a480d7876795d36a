"""Assembling a run's parts from its configuration: the device, the data (the default example's too), the
operator with its normalisers, the optimizer, batches and losses.

What depends on the kind of data is asked of the operator's domain (:mod:`mpno.run.domains`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from .. import memory
from ..data import coarse_path, generate, split_indices
from ..data.files import UNREADABLE, DataError, file_kind, recorded_digests, verify_arrays
from ..nn.normalized import NormalizedOperator
from ..nn.registry import operator_class
from . import domains
from .config import RunConfig
from .step import make_optimizer

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


def test_names(paths: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` of test files: their file names, or whole paths where two names coincide."""
    names = [Path(p).name for p in paths]
    return dict(zip(names if len(set(names)) == len(names) else map(str, paths), paths))


def data_paths(config: RunConfig, log: Callable[[str], None]) -> tuple[str, list[str]]:
    """The training file and the test files of ``config``: those given, else the default example's (generated
    the first time)."""
    if config.data_train is None:
        return default_data(log)
    return config.data_train, list(config.data_test)


def verify_data(path: str, limit_gb: float, log: Callable[[str], None]) -> None:
    """Check an HDF5 data file mpno generated against the digests of its arrays (:func:`mpno.data.files.
    verify_arrays`), reading it whole, when it is at most ``limit_gb`` (what is loaded into memory anyway);
    a larger one is read lazily and not checked, which a line says."""
    try:
        if file_kind(Path(path)) != "HDF5" or not recorded_digests(path):
            return
    except (DataError, *UNREADABLE):  # reading the file says what is wrong with it
        return
    size = Path(path).stat().st_size
    if size > limit_gb * 2**30:
        log(f"{path}: the digests of its arrays are not checked: it is larger than --in-memory-limit-gb "
            f"({size / 2**30:.1f} GB) and is read lazily")
        return
    verify_arrays(path)


def open_datasets(config: RunConfig, train_path: str, test_paths: Sequence[str]) -> tuple[object, dict]:
    """The training set and the named test sets (``test_fraction`` of the training file held out when no test
    file is given; the first ``n_train`` training samples when given). Trajectories are held out and counted
    whole."""
    domain = domains.of(config.model)
    train = domain.dataset(train_path, config)
    if test_paths:
        tests = {name: domain.dataset(path, config) for name, path in test_names(test_paths).items()}
    else:
        train_idx, test_idx = split_indices(train.units, config.test_fraction, config.seed)
        tests = {f"{train.name} (held out)": train.subset(test_idx)}
        train = train.subset(train_idx)
    if config.n_train is not None:
        train = train.subset(range(min(config.n_train, train.units)))
    return domain.training_set(train, config), tests


def operator_for(config: RunConfig, in_channels: int, out_channels: int, n_modes) -> torch.nn.Module:
    """The operator ``config`` describes, for data of these channels and modes."""
    return operator_class(config.model)(in_channels, out_channels, n_modes,
                                        **domains.of(config.model).operator_options(config))


def model_for(config: RunConfig, train_set) -> NormalizedOperator:
    """The operator ``config`` describes for ``train_set``, with what is fitted on it (normalisers, a point
    operator's position map)."""
    domain = domains.of(config.model)
    return domain.fitted(operator_for(config, *domain.channels_and_modes(config, train_set)), train_set,
                         residual=bool(config.residual))


def check_fits(config: RunConfig, train_set, device: torch.device) -> None:
    """Refuse, before anything is allocated, a model whose training cannot fit in ``device``'s memory.

    The estimate is a lower bound: float32 weights, gradients and the optimizer's two moments, and one
    half-precision activation per layer and grid point (a point operator: of its latent grid) for each sample
    of a batch.
    """
    domain = domains.of(config.model)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            operator = operator_for(config, *domain.channels_and_modes(config, train_set))
    except (ValueError, TypeError, RuntimeError, NotImplementedError):  # the real construction reports it
        return
    parameters = sum(p.numel() for p in operator.parameters())
    batch = min(config.batch_size or 1, len(train_set))
    activations = batch * config.hidden_channels * domain.points_per_sample(config, train_set) * config.n_layers * 2
    memory.require(4 * 4 * parameters + activations, device,
                   f"training this {config.model} ({parameters:,} parameters, batches of {batch})",
                   "lower --hidden-channels, --n-modes, --n-layers or --batch-size")


def optimizer_for(config: RunConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, object]:
    """The optimizer and learning-rate scheduler ``config`` asks for."""
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    if config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
    else:
        scheduler = None
    return optimizer, scheduler


def batches_of(dataset, config: RunConfig, device: torch.device, model: NormalizedOperator, name: str):
    """Mini-batches of ``dataset`` for ``model``, as its domain makes them (this process's share of each)."""
    return domains.of(config.model).batches(dataset, config, device, model, name)


def losses_for(config: RunConfig, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
    """The training loss and the evaluation losses ``config`` asks for, or the domain's own (the sphere: the
    relative L2 error by the grid's quadrature of the fields standardised by ``model``'s output normaliser;
    point clouds: over each cloud's points)."""
    return domains.of(config.model).losses(config, model)
