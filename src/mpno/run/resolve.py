"""A run resolved once: every option a user leaves to mpno settled into one frozen configuration.

:func:`resolve` turns the parsed options and the opened data into a :class:`ResolvedRun`: the data files (the
default example's), the device ``auto`` stands for, the threads, the run directory, what the data files decide
(the sphere's grid), the defaults sized to the data (batch size, modes) and the precision (``auto`` chosen by
the audits), parsed once into a :class:`~mpno.precision.PrecisionSchedule`. Its ``config`` is what
``config.json`` records, and nothing downstream writes to a configuration: this module and the parsers
(:mod:`mpno.run.config`, :mod:`mpno.run.cli`) are the only places that make a changed one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.fingerprint import fingerprint
from ..precision import Precision, PrecisionSchedule
from . import defaults, domains
from .assembly import data_paths, open_datasets, verify_data
from .config import RunConfig


@dataclass(frozen=True)
class ResolvedRun:
    """A training run with every choice made.

    Attributes:
        config: every option with the value the run uses (what ``config.json`` records).
        schedule: the precision of each phase, parsed once from ``config.precision`` and ``config.dtype``.
        device: where the run computes (under ``torchrun`` on CUDA, this process's GPU).
        train, tests: the training set and the named test sets, checked against each other.
        notes: lines saying what mpno chose (defaults sized to the data, ``precision=auto``'s reason).
        auto_reason: why ``precision=auto`` chose what it did (``None`` without ``auto``).
        data_files: the :func:`mpno.data.fingerprint.fingerprint` of the training file and of each test file.
    """

    config: RunConfig
    schedule: PrecisionSchedule
    device: torch.device
    train: object
    tests: dict
    notes: tuple[str, ...] = ()
    auto_reason: str | None = None
    data_files: tuple[dict, ...] = ()


def open_run(options: RunConfig, log: Callable[[str], None], *, first: Callable = lambda fn: fn(),
             **resolution) -> ResolvedRun:
    """Open the data of ``options`` (the default example's, generated the first time, by ``first(fn)``: process 0
    under ``torchrun``) and :func:`resolve` the run on them (``resolution``: its keyword arguments); the lines
    saying what mpno chose go to ``log``."""
    paths = first(lambda: data_paths(options, log))
    for path in dict.fromkeys([paths[0], *paths[1]]):
        verify_data(path, options.in_memory_limit_gb, log)
    run = resolve(options, *open_datasets(options, *paths), paths=paths, **resolution)
    for line in run.notes:
        log(line)
    return run


def resolve(options: RunConfig, train, tests: dict, *, paths: tuple[str, Sequence[str]],
            device: torch.device = torch.device("cpu"), threads: int | None = None, run_dir: Path | None = None,
            processes: int = 1,
            choose_precision: Callable[[RunConfig, object], tuple[Precision, str]] | None = None) -> ResolvedRun:
    """The run of ``options`` on the opened data ``train`` and ``tests`` (read from ``paths``: the training file
    and the test files), on ``device`` with ``threads``, writing to ``run_dir`` (``None``: ``options.out``),
    with ``processes`` under ``torchrun``.

    ``choose_precision(config, train)`` answers ``precision=auto`` (the policy and why) for the configuration
    resolved so far; it is required when ``options.precision`` is ``auto``.
    """
    domain = domains.of(options.model)
    train_path, test_paths = paths
    settled = {"data_train": train_path, "data_test": list(test_paths), "device": str(device), "threads": threads,
               "out": options.out if run_dir is None else str(run_dir), **domain.settle(options, [train_path, *test_paths])}
    chosen, line = defaults.sized_to_data(options, len(train), domain.grid(train), processes)
    config = dataclasses.replace(options, **settled, **chosen)
    domain.check_data(train, tests, config)
    notes, why = (line,) if line else (), None
    if config.precision == "auto":
        if choose_precision is None:
            raise ValueError("precision='auto' needs the audits of the data and model to choose; give a mode")
        policy, why = choose_precision(config, train)
        config = dataclasses.replace(config, precision=str(policy), dtype=policy.dtype)  # config.json's record
        notes += (f"precision=auto chose {why}",)
        schedule = PrecisionSchedule.parse(policy)
    else:
        schedule = PrecisionSchedule.parse(config.precision, config.dtype)
    files = tuple(fingerprint(path) for path in dict.fromkeys([train_path, *test_paths]))
    return ResolvedRun(config, schedule, device, train, tests, notes, why, files)


def resumed(saved: RunConfig, given: RunConfig, epochs: int | None) -> RunConfig:
    """The options a run resumes with: those it was saved with, on ``given``'s device, backend and threads, and
    extended to ``epochs`` if given."""
    return dataclasses.replace(saved, device=given.device, dist_backend=given.dist_backend, threads=given.threads,
                               epochs=epochs or saved.epochs)


def what_runs(config: RunConfig, default_paths: tuple[str, list[str]], device: torch.device) -> RunConfig:
    """``config`` with what it leaves to mpno that is known before the data are read, as ``--print-config``
    shows it: the default example's files and the device ``auto`` stands for."""
    if config.data_train is None:
        config = dataclasses.replace(config, data_train=default_paths[0], data_test=default_paths[1])
    return dataclasses.replace(config, device=str(device))


def for_saved_model(saved: RunConfig, model_kind: str, batch_size: int | None = None, x_key: str | None = None,
                    y_key: str | None = None) -> RunConfig:
    """The options a saved model reads data files with (``mpno evaluate``, ``mpno predict``): its run's, for an
    operator of ``model_kind``, with the batch size and keys given instead."""
    return dataclasses.replace(saved, model=model_kind, batch_size=batch_size or saved.batch_size,
                               x_key=x_key or saved.x_key, y_key=y_key or saved.y_key)
