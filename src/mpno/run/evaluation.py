"""Test errors of a model: on batches of test sets (with several processes or one), and of a saved model on
data files (``mpno evaluate``; ``mpno predict`` reads its model and files the same way)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from ..data import DataError
from ..nn.normalized import NormalizedOperator
from ..nn.registry import model_kind
from ..precision import inference_policy
from . import checkpoint, distributed, domains, forecast
from .assembly import batches_of, losses_for, resolve_device, test_names, verify_data
from .config import RunConfig
from .provenance import provenance
from .resolve import for_saved_model
from .reporting import log_line


@torch.no_grad()
def evaluate(model: nn.Module, test_batches: dict, eval_losses: dict) -> dict[str, dict[str, float]]:
    """``{test set: {loss name: mean over samples}}`` of ``model`` in its current precision.

    With several processes, each evaluates its share and the sums are all-reduced.
    """
    model.eval()
    device = next(model.parameters()).device
    results = {}
    for name, batches in test_batches.items():
        sums, count = [0.0] * len(eval_losses), 0
        for x, y, _ in batches.iterate():
            prediction = model(x)
            for i, loss in enumerate(eval_losses.values()):
                sums[i] += loss(prediction, y).item() * len(x)
            count += len(x)
        *sums, count = distributed.sum_everywhere([*sums, float(count)], device)
        results[name] = {loss_name: value / count for loss_name, value in zip(eval_losses, sums)}
    return results


@torch.no_grad()
def symmetry_errors(model: nn.Module, batches, symmetries: dict, types) -> dict[str, float]:
    """How far ``model`` is from commuting with each symmetry ``g`` of ``symmetries`` (``{name: g}``, with the
    channels' ``types``): the mean over a test set's samples of ``‖M(g x) − g M(x)‖ / ‖g M(x)‖``."""
    def wide(t: torch.Tensor) -> torch.Tensor:  # half outputs compared in float32
        return t.to(torch.promote_types(t.dtype, torch.float32))

    model.eval()
    sums, count = dict.fromkeys(symmetries, 0.0), 0
    for x, _, _ in batches.iterate():
        prediction = wide(model(x))
        for name, symmetry in symmetries.items():
            expected = symmetry.apply(prediction, types.outputs)
            moved = wide(model(symmetry.apply(x, types.inputs)))
            ratio = _sample_norms(moved - expected, x) / _sample_norms(expected, x)
            sums[name] += ratio.sum().item()
        count += len(x)
    return {name: value / count for name, value in sums.items()}


def _sample_norms(values: torch.Tensor, x) -> torch.Tensor:
    """The Euclidean norm of each sample of a batch's outputs: of each field, or of each cloud's values."""
    if hasattr(x, "sizes"):  # point clouds: (points, channels), the clouds one after another
        return torch.stack([part.norm() for part in values.split(list(x.sizes))])
    return values.flatten(1).norm(dim=1)


def checkpoint_model(path: str, device: torch.device, precision: str | None, batch_size: int | None = None,
                     log: Callable[[str], None] = log_line) -> tuple[NormalizedOperator, RunConfig]:
    """A saved model on ``device`` in ``precision`` (default: as saved; a precision that names no stabilizer
    keeps the trained one, :func:`mpno.precision.inference_policy`, whose warning goes to ``log``), and its
    run's options (with ``batch_size`` if given, and the model's kind)."""
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
    saved = RunConfig.from_dict(options if isinstance(options, dict) else {}, source=str(path))
    return model, for_saved_model(saved, model_kind(model.operator), batch_size)


def checked_dataset(file: str, config: RunConfig, model: NormalizedOperator):
    """``file`` read with the run's options, checked against the model (its channels and dimensions, and what its
    domain checks: the grid on the sphere)."""
    domain = domains.of(config.model)
    domain.check_file(file, model)
    dataset = domain.dataset(file, config)
    domain.check_for_model(file, dataset, model)
    return dataset


def evaluate_checkpoint(path: str, data: list[str], device: str = "auto", batch_size: int | None = None,
                        precision: str | None = None, x_key: str | None = None, y_key: str | None = None,
                        strict: bool = False, log: Callable[[str], None] = log_line,
                        symmetry_check: list[str] | None = None, channel_types: str | None = None) -> dict:
    """Test errors of a saved model on data files: ``{"test": {file: {loss: value}}, "grids": ...,
    "precision": ..., "outside_training": {file: what}, "provenance": ...}``, in the precision it was saved
    in (or ``precision``). The files are read with the run's options (keys, time steps), or
    ``x_key``/``y_key``; what of a file lies outside the training data is said through ``log``
    (:func:`outside_training`), or refused with ``strict``.

    ``symmetry_check``: also ``"symmetry": {file: {symmetry: error}}`` (:func:`symmetry_errors`) for the
    symmetries named (``[]``: those the run was trained with, ``--augment``), with the run's channel types
    or ``channel_types``.
    """
    device_ = resolve_device(device)
    model, saved = checkpoint_model(path, device_, precision, batch_size)
    config = for_saved_model(saved, saved.model, x_key=x_key, y_key=y_key)
    if channel_types is not None:
        config = dataclasses.replace(config, channel_types=channel_types)
    kinds = (symmetry_check or config.augment) if symmetry_check is not None else None
    if kinds == []:
        raise ValueError(f"--symmetry-check: {path} was trained without --augment; name the symmetries to check, "
                         "e.g. --symmetry-check shift,flip,rotate")
    domain = domains.of(config.model)
    batches, grids, outside, checks = {}, {}, {}, {}
    for name, file in test_names(data).items():
        verify_data(file, config.in_memory_limit_gb, log)
        test = checked_dataset(file, config, model)
        outside.update(outside_training(file, name, test, config, model, strict, log))
        batches[name] = batches_of(test, config, device_, model, name)
        grids[name] = domain.grid(test)
        if kinds is not None:
            found, types = domain.symmetries(config, test, kinds)
            checks[name] = domain.symmetry_representatives(config, found, test), types
    _, eval_losses = losses_for(config, model)
    report = {"test": evaluate(model, batches, eval_losses), "grids": grids, "precision": str(model.precision),
              "outside_training": outside, "provenance": provenance(device_, str(model.precision), path, data)}
    if kinds is not None:
        report["symmetry"] = {
            name: symmetry_errors(model, batches[name], chosen, types) for name, (chosen, types) in checks.items()}
    return report


def outside_training(file: str, name: str, dataset, config: RunConfig, model: NormalizedOperator, strict: bool,
                     log: Callable[[str], None]) -> dict[str, str]:
    """``{name: what}`` of what of ``dataset`` (read from ``file``) lies outside what ``model`` was trained on,
    as its domain judges it, said in one line through ``log``; with ``strict`` a ``DataError`` instead."""
    note = domains.of(config.model).outside_training(model, dataset)
    if note is None:
        return {}
    if strict:
        raise DataError(f"{file}: {note}; refused (--strict): give data like the training data, or drop --strict")
    log(f"{file}: {note}")
    return {name: note}


def rollout_model(path: str, steps: int, device: str = "auto", precision: str | None = None,
                  batch_size: int | None = None, x_key: str | None = None):
    """A saved one-step model to roll out ``steps`` steps (``--rollout``): ``(model, options, domain,
    device)``, the options as :func:`checkpoint_model` gives them with ``x_key``; refused where ``steps`` is
    not a positive int or the model's domain does not roll out."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--rollout {steps}: give a positive number of steps")
    device_ = resolve_device(device)
    model, saved = checkpoint_model(path, device_, precision, batch_size)
    config = for_saved_model(saved, saved.model, x_key=x_key)
    domain = domains.of(config.model)
    domain.require("rollout")
    return model, config, domain, device_


def rollout_checkpoint(path: str, data: list[str], steps: int, device: str = "auto", batch_size: int | None = None,
                       precision: str | None = None, x_key: str | None = None,
                       spectra_at: list[int] | None = None) -> dict:
    """Errors of a saved one-step model rolled out ``steps`` steps from the first window of every trajectory of
    ``data``, per lead time (``mpno evaluate --rollout``), and the power spectra of prediction and truth at the
    lead times ``spectra_at`` (default: the first, the middle and the last)."""
    model, config, domain, device_ = rollout_model(path, steps, device, precision, batch_size, x_key)
    leads = sorted(set(spectra_at or (1, (steps + 1) // 2, steps)))
    if any(not 1 <= lead <= steps for lead in leads):
        raise ValueError(f"--spectra-at {' '.join(map(str, leads))}: lead times lie in 1 … {steps}")
    _, eval_losses = losses_for(config, model)
    results = {}
    for name, file in test_names(data).items():
        windows = domain.trajectories_of(checked_dataset(file, config, model), file)
        starts, truths = forecast.starts_and_truths(windows, config.history, steps, device_)
        predicted = forecast.predicted(model, starts, steps, config.batch_size, model.static_channels)
        results[name] = {**forecast.errors(predicted, truths, eval_losses["l2"]), "trajectories": len(starts),
                         "interval": windows.trajectories.interval,
                         "spectra": {lead: {"prediction": domain.power_spectrum(predicted[:, lead - 1], model),
                                            "truth": domain.power_spectrum(truths[:, lead - 1], model)}
                                     for lead in leads}}
    return {"rollout": results, "steps": steps, "precision": str(model.precision), "history": config.history,
            "provenance": provenance(device_, str(model.precision), path, data)}
