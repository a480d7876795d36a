"""A training run, the work behind ``mpno train``: its run directory, resuming and extending it, torchrun's
processes, and the report it leaves (``summary.json``, curves, samples)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from ..checks import reason
from ..data import DataError
from ..data.fingerprint import changes
from ..nn.normalized import NormalizedOperator
from ..precision import Precision
from ..writing import write_text
from . import checkpoint, distributed, domains, forecast, profiling, resolve, rundir
from .assembly import batches_of, check_fits, losses_for, model_for, optimizer_for, resolve_device
from .batches import LazyBatches
from .config import RunConfig
from .resolve import ResolvedRun
from .plots import plot_curves, plot_frames
from .reporting import MetricsLog, json_safe, log_line
from .threads import use_threads
from .trainer import Trainer, TrainingInterrupted


def trainer_for(run: ResolvedRun, model: NormalizedOperator, run_dir: Path | None, log: Callable[[str], None],
                progress: bool = True) -> Trainer:
    """A :class:`Trainer` assembled from a resolved run: optimizer, scheduler, batches, schedule and losses."""
    config, device = run.config, run.device
    optimizer, scheduler = optimizer_for(config, model)
    train_loss, eval_losses = losses_for(config, model)
    augment = domains.of(config.model).augmentation(config, run.train)
    if augment is not None and augment.note:
        log(augment.note)
    return Trainer(model, optimizer, batches_of(run.train, config, device, model, "train"), config.epochs,
                   train_loss, schedule=run.schedule, scheduler=scheduler,
                   test_batches={name: batches_of(ds, config, device, model, name) for name, ds in run.tests.items()},
                   eval_losses=eval_losses,
                   grad_clip=config.grad_clip, nonfinite_patience=config.nonfinite_patience, seed=config.seed,
                   run_dir=run_dir, extra_state={"config": config.to_dict(), "data_files": list(run.data_files)},
                   tensorboard=config.tensorboard,
                   log=log, progress=progress, compile=config.compile,
                   objective_at=_unrolled_objectives(config, train_loss, model.static_channels),
                   augment=augment)


def _unrolled_objectives(config: RunConfig, loss: Callable, static: int) -> Callable | None:
    """The training objective of each epoch of a forecasting run unrolled over more than one step (``--unroll``
    and its stages; ``static`` channels of static inputs held fixed), or ``None`` (one step: the loss of the
    prediction)."""
    if forecast.most_unrolled(config.unroll) == 1:
        return None
    return lambda epoch, epochs: forecast.unrolled(loss, forecast.unrolled_at(config.unroll, epoch, epochs),
                                                   recompute=config.recompute_steps, static=static)


def _choose_precision(config: RunConfig, train_set, device: torch.device) -> tuple[Precision, str]:
    """``precision="auto"``: the cheapest policy the domain's audits call safe for the data and the model
    ``config`` builds (seeded: the model the run then trains), and why."""
    torch.manual_seed(config.seed)
    model = model_for(config, train_set).to(device)
    return domains.of(config.model).choose_precision(config, train_set, model, device)


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
          log: Callable[[str], None] = log_line, epochs: int | None = None, progress: bool = True,
          allow_changed_data: bool = False) -> dict:
    """Run (or resume) a training run; returns the summary (also written to ``summary.json``).

    ``resume``: a run directory to continue from its last checkpoint (``config``
    then gives only the device); ``epochs`` extends it to that many epochs, as if
    the run had been configured with the new total from the start, from the
    current epoch on (the precision schedule's phases and the learning-rate
    schedule are recomputed for the new total). A resumed run refuses data files
    that changed since they were fingerprinted (``config.json``'s ``data_files``)
    unless ``allow_changed_data``, which resumes anyway and records it.
    ``progress``: a line per epoch through ``log`` and progress bars on a terminal.

    Under ``torchrun`` every process calls this: process 0 creates the run
    directory, generates missing default data, logs and writes files.
    """
    state, run_dir, finished, changed = None, None, False, []
    if resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume {run_dir}: no such run directory")
        rundir.refuse_links(run_dir)  # before reading anything through one
        state = checkpoint.load(run_dir / "checkpoint.pt")
        saved = RunConfig.from_dict(checkpoint.run_options(state, run_dir / "checkpoint.pt"),
                                    source=str(run_dir / "checkpoint.pt"))
        done = state["epoch"]
        if epochs is not None and epochs <= done:
            raise ValueError(f"--epochs {epochs}: {run_dir} has already trained {done} epochs; give more to extend it")
        if epochs is None and done >= saved.epochs:
            raise ValueError(f"{run_dir} has finished its {saved.epochs} epochs; pass --epochs N (> {done}) to "
                             "train it further, or test it with mpno evaluate")
        options = resolve.resumed(saved, config, epochs)
        changed = _changed_data(state, run_dir, allow_changed_data)
    else:
        options = config.validate()
    device = resolve_device(options.device)
    owns_group = distributed.current().world == 1  # set up here (torchrun), not by a caller
    context = distributed.setup(options.dist_backend, device.type)
    if context.world > 1 and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not context.main:
        log = lambda message: None  # noqa: E731
    threads = use_threads(options.threads, log, device.type)
    lock = None

    def open_run_directory() -> str:  # process 0 owns the directory and its lock
        nonlocal lock
        if resume:
            lock = rundir.reopen(run_dir)
            return str(run_dir)
        path, lock = rundir.create(options.out, overwrite)
        return str(path)

    try:
        run_dir = Path(_on_main(context, open_run_directory))
        run = resolve.open_run(options, log, first=lambda fn: _on_main(context, fn), device=device, threads=threads,
                               run_dir=run_dir, processes=context.world,
                               choose_precision=lambda partial, train: _on_main(
                                   context, lambda: _choose_precision(partial, train, device)))
        config, train_set, tests = run.config, run.train, run.tests
        check_fits(config, train_set, device)
        torch.manual_seed(config.seed)
        model = model_for(config, train_set).to(device)
        if state is not None:
            _check_same_model(state, model, run_dir, config)
        records = {"data_files": list(run.data_files)}
        if changed:
            log(f"resuming {run_dir} on changed data (--allow-changed-data): " + "; ".join(changed))
            before = _recorded(run_dir, "resumed_with_changed_data") or []
            records["resumed_with_changed_data"] = [*before, {"epoch": state["epoch"], "changes": changed}]
        if context.main and (state is None or changed):
            config.save(run_dir / "config.json", **records)
        trainer = trainer_for(run, model, run_dir, log, progress)
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
                    config.save(run_dir / "config.json", **records)
            log(f"resuming {run_dir} at epoch {trainer.epoch + 1} of {config.epochs}")
        start = time.perf_counter()
        results = trainer.fit()
        finished = True
        seconds = time.perf_counter() - start
        summary = {
            "test": results, "grids": {name: domains.of(config.model).grid(test) for name, test in tests.items()},
            "epochs": config.epochs, "seconds": seconds,
            "precision_history": trainer.history, "best": trainer.best,
            **profiling.peak_memory(device),
            "run_dir": str(run_dir), "device": str(device), "precision_auto": run.auto_reason,
            "world_size": context.world, "global_batch_size": config.batch_size * context.world,
            "data_files": list(run.data_files), "resumed_with_changed_data": changed,
        }
        if context.main:
            _write_report(summary, model, trainer, run_dir, config, tests)
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


def _changed_data(state: dict, run_dir: Path, allowed: bool) -> list[str]:
    """What changed in the data files a checkpoint recorded (none recorded: an earlier mpno; nothing to check);
    a ``DataError`` naming the files and the changes unless ``allowed``."""
    changed = [f"{record['path']}: {', '.join(said)}" for record in state.get("data_files") or ()
               if (said := changes(record))]
    if changed and not allowed:
        raise DataError(f"--resume {run_dir}: the data changed since the run was interrupted ({'; '.join(changed)}); "
                        "restore the files it was trained on, start a new run, or pass --allow-changed-data to "
                        "resume anyway (config.json records it)")
    return changed


def _recorded(run_dir: Path, key: str):
    """A fact ``config.json`` of ``run_dir`` records beside the options, or ``None``."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get(key)
    except (OSError, ValueError):
        return None


def _check_same_model(state: dict, model: NormalizedOperator, run_dir: Path, config: RunConfig) -> None:
    """On resume: refuse data for which the run's options now build a different model (channels, dims)."""
    def plain(value):
        return json.dumps(value, sort_keys=True, default=str)  # tuples and lists alike

    saved, built = _as_built(state["operator"]), model.spec()
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


def _as_built(spec: dict) -> dict:
    """A saved spec as a model built from it records itself now (an earlier mpno recorded fewer defaults)."""
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            return NormalizedOperator.from_spec(spec).spec()
    except (KeyError, TypeError, ValueError, RuntimeError, NotImplementedError):  # then compare it as saved
        return spec


def _write_report(summary: dict, model: NormalizedOperator, trainer: Trainer, run_dir: Path, config: RunConfig,
                  tests: dict) -> None:
    """``summary.json``, the loss curves and a few test samples of every test set (``tests``: name → dataset),
    drawn as the model's domain draws them."""
    write_text(run_dir / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    rows = MetricsLog(run_dir, tensorboard=False).rows()
    if rows:
        plot_curves(rows, run_dir / "curves.png", loss_name=config.loss, grids=summary["grids"])
    domain = domains.of(config.model)
    for name, batches in trainer.test_batches.items() if domain.has("plots") else ():
        domain.plot(model, batches, run_dir / f"samples_{Path(name).stem}.png", name, tests[name])
        trajectories = domain.trajectories_in(tests[name])
        if trajectories is not None:  # a few frames of the first test trajectory rolled out, beside the truth
            steps = trajectories.trajectories.steps - config.history
            start, truth = forecast.starts_and_truths(trajectories.subset([0]), config.history, steps,
                                                      next(model.parameters()).device)
            rolled = forecast.rollout(model, start, steps, model.static_channels)[0]
            plot_frames(rolled, truth[0], run_dir / f"rollout_{Path(name).stem}.png",
                        title=f"{name}: trajectory 0 rolled out in {model.precision}")
