"""Predictions of a trained model on a data file, written to HDF5 (``mpno predict``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.files import CHECKPOINT, identify
from ..writing import check_output, new_hdf5
from . import domains, forecast, profiling
from .assembly import batches_of, losses_for, resolve_device
from .checkpoint import CheckpointError
from .evaluation import checked_dataset, checkpoint_model, outside_training, rollout_model
from .provenance import provenance
from .reporting import log_line
from .resolve import for_saved_model


def predict(checkpoint: str, data: str, out: str, precision: str | None = None, batch_size: int | None = None,
            device: str = "auto", x_key: str | None = None, y_key: str | None = None, progress: bool = True,
            overwrite: bool = False, strict: bool = False) -> dict:
    """Run the model of ``checkpoint`` on every input of ``data`` and write ``out`` (HDF5).

    ``out`` holds ``prediction`` (N, C, *grid); when ``data`` has outputs, also
    ``y``, ``error`` (prediction − y) and ``relative_l2`` per sample: the ``l2`` that
    ``mpno evaluate`` reports for the model (its domain's: for an SFNO, over the sphere
    of the standardised fields; :mod:`mpno.run.domains`). Point clouds are written in
    the layout of point-cloud files: ``points`` (N, P, d), ``sizes``, and
    ``prediction`` (N, P, C) etc. padded to the largest cloud. The
    file is written under a temporary name and renamed when complete; an existing
    ``out`` is replaced only with ``overwrite``, and never when it is ``data`` or
    ``checkpoint`` (under any name). Returns what was measured: samples,
    throughput, peak memory and, with outputs, the mean relative L2 error.
    """
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"--out {out}: predictions are written as HDF5; give a .h5 path")
    check_output(out, overwrite, inputs=(checkpoint, data))
    device_ = resolve_device(device)
    try:
        model, config = checkpoint_model(checkpoint, device_, precision, batch_size)
    except CheckpointError:
        if identify(data) == CHECKPOINT:
            raise ValueError(f"the arguments are swapped: {data} is the checkpoint and {checkpoint} is not; give the "
                             f"checkpoint first: mpno predict {data} {checkpoint} --out {out}") from None
        raise
    config = for_saved_model(config, config.model, x_key=x_key, y_key=y_key)
    domain = domains.of(config.model)
    targets = domain.has_targets(data, config)
    if not targets:  # read the inputs as their own pair
        config = domain.inputs_only(config)
    dataset = checked_dataset(data, config, model)
    outside = outside_training(data, Path(data).name, dataset, config, model, strict, log_line)
    _, losses = losses_for(dataclasses.replace(config, eval_losses=["l2"]), model)
    loss = losses["l2"]  # the l2 of mpno evaluate
    if device_.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device_)
    start = time.perf_counter()
    errors = []
    batches = batches_of(dataset, config, device_, model, Path(data).name)
    with new_hdf5(out) as output, torch.no_grad():
        f, datasets = output.file, {}
        begin = 0
        for x, y, count in tqdm(batches.iterate(), total=len(batches), desc="predicting", unit="batch",
                                disable=None if progress else True):
            prediction = model(x).float()
            if targets:
                errors += [loss(*pair).item() for pair in domain.samples(prediction, y)]
            for name, value in domain.prediction_arrays(x, y if targets else None, prediction, dataset).items():
                if name not in datasets:
                    datasets[name] = f.create_dataset(name, (len(dataset), *value.shape[1:]), dtype="float32")
                datasets[name][begin:begin + count] = value.float().cpu().numpy()
            begin += count
            output.check()  # a full disk stops here, not after the last batch
        if targets:
            f.create_dataset("relative_l2", data=np.array(errors, dtype="float32"))
        domain.describe_predictions(f, dataset)
        produced = provenance(device_, str(model.precision), checkpoint, [data])
        f.attrs.update({"checkpoint": str(checkpoint), "data": str(data), "precision": str(model.precision),
                        "provenance": json.dumps(produced)})
    seconds = time.perf_counter() - start
    return {"out": str(out), "samples": len(dataset), "grid": domain.grid(dataset), "provenance": produced,
            "outside_training": outside,
            "precision": str(model.precision), "seconds": seconds, "samples_per_second": len(dataset) / seconds,
            **profiling.peak_memory(device_), "relative_l2": float(np.mean(errors)) if targets else None}


def predict_rollout(checkpoint: str, data: str, out: str, steps: int, precision: str | None = None,
                    batch_size: int | None = None, device: str = "auto", x_key: str | None = None,
                    overwrite: bool = False) -> dict:
    """Roll the model of ``checkpoint`` out ``steps`` steps from the first window of every trajectory of
    ``data`` and write ``out`` (HDF5): ``prediction`` (N, steps, C, *grid) and the lead times ``lead_time``;
    where the trajectories hold the snapshots predicted, also ``y``, ``error`` and ``relative_l2`` (N, steps)
    (``mpno predict --rollout``). Written whole or not at all, as :func:`predict` writes."""
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"--out {out}: predictions are written as HDF5; give a .h5 path")
    check_output(out, overwrite, inputs=(checkpoint, data))
    model, config, domain, device_ = rollout_model(checkpoint, steps, device, precision, batch_size, x_key)
    windows = domain.trajectories_of(checked_dataset(data, config, model), data)
    available = windows.trajectories.steps - config.history
    start = time.perf_counter()
    starts, truths = forecast.starts_and_truths(windows, config.history, min(steps, available), device_)
    if steps > available:  # predict beyond the truth: no errors
        truths = None
    predicted = forecast.predicted(model, starts, steps, config.batch_size, model.static_channels)
    seconds = time.perf_counter() - start
    with new_hdf5(out) as output:
        f = output.file
        f.create_dataset("prediction", data=predicted.float().cpu().numpy())
        f.create_dataset("lead_time", data=np.arange(1, steps + 1))
        if truths is not None:
            error = predicted - truths
            f.create_dataset("y", data=truths.float().cpu().numpy())
            f.create_dataset("error", data=error.float().cpu().numpy())
            f.create_dataset("relative_l2", data=forecast.relative_errors_each(predicted, truths).float().cpu().numpy())
        produced = provenance(device_, str(model.precision), checkpoint, [data])
        f.attrs.update({"checkpoint": str(checkpoint), "data": str(data), "precision": str(model.precision),
                        "history": config.history, "provenance": json.dumps(produced)})
        if windows.trajectories.interval is not None:
            f.attrs["interval"] = windows.trajectories.interval
    return {"out": str(out), "trajectories": len(starts), "steps": steps, "precision": str(model.precision),
            "seconds": seconds, "grid": domain.grid(windows), "provenance": produced,
            "relative_l2": None if truths is None else forecast.relative_errors(predicted, truths)}
