"""Predictions of a trained model on a data file, written to HDF5 (``mpno predict``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.files import CHECKPOINT, available_keys, identify
from ..nn.losses import LpLoss
from ..writing import check_output, new_hdf5
from . import profiling
from .checkpoint import CheckpointError
from .experiment import checked_dataset, checkpoint_model, resolve_device


def _has_targets(path: str, x_key: str | None, y_key: str | None) -> bool:
    """Whether ``path`` holds outputs beside its inputs (``y``/``y_key``, or a PDEBench ``tensor``)."""
    keys = available_keys(path)
    if y_key:
        return y_key in keys
    return "y" in keys or ("tensor" in keys and x_key is None)


def predict(checkpoint: str, data: str, out: str, precision: str | None = None, batch_size: int | None = None,
            device: str = "auto", x_key: str | None = None, y_key: str | None = None, progress: bool = True,
            overwrite: bool = False) -> dict:
    """Run the model of ``checkpoint`` on every input of ``data`` and write ``out`` (HDF5).

    ``out`` holds ``prediction`` (N, C, *grid); when ``data`` has outputs, also
    ``y``, ``error`` (prediction − y) and ``relative_l2`` per sample. The file is
    written under a temporary name and renamed when complete; an existing ``out``
    is replaced only with ``overwrite``, and never when it is ``data`` or
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
    config = dataclasses.replace(config, x_key=x_key or config.x_key, y_key=y_key or config.y_key)
    targets = _has_targets(data, config.x_key, config.y_key)
    if not targets:  # read the inputs as their own pair
        config = dataclasses.replace(config, y_key=config.x_key or "x")
    if config.model == "gino":
        raise ValueError(f"{checkpoint}: mpno predict writes fields on grids; test a GINO with mpno evaluate, or "
                         "call mpno.load_model on point clouds (docs/geometry.md)")
    dataset = checked_dataset(data, config, model)
    batch = config.batch_size
    count = len(dataset)
    loss = LpLoss(2)
    if device_.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device_)
    start = time.perf_counter()
    errors = []
    with new_hdf5(out) as output, torch.no_grad():
        f, datasets = output.file, {}
        for begin in tqdm(range(0, count, batch), desc="predicting", unit="batch", disable=None if progress else True):
            pairs = [dataset[i] for i in range(begin, min(count, begin + batch))]
            x = torch.stack([p[0] for p in pairs]).to(device_)
            prediction = model(x).float()
            arrays = {"prediction": prediction}
            if targets:
                y = torch.stack([p[1] for p in pairs]).to(device_)
                arrays.update(y=y, error=prediction - y)
                errors += [loss(prediction[i:i + 1], y[i:i + 1]).item() for i in range(len(x))]
            for name, value in arrays.items():
                if name not in datasets:
                    datasets[name] = f.create_dataset(name, (count, *value.shape[1:]), dtype="float32")
                datasets[name][begin:begin + len(x)] = value.cpu().numpy()
            output.check()  # a full disk stops here, not after the last batch
        if targets:
            f.create_dataset("relative_l2", data=np.array(errors, dtype="float32"))
        f.attrs.update({"checkpoint": str(checkpoint), "data": str(data), "precision": str(model.precision)})
    seconds = time.perf_counter() - start
    return {"out": str(out), "samples": count, "grid": list(dataset.shapes[0][1:]), "precision": str(model.precision),
            "seconds": seconds, "samples_per_second": count / seconds, **profiling.peak_memory(device_),
            "relative_l2": float(np.mean(errors)) if targets else None}
