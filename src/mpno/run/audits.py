"""The audits behind ``mpno bounds``: is half precision safe for these data, and for this model?

Which audits apply is the domain's to say (:mod:`mpno.run.domains`): Fourier
coefficients on a grid (:mod:`mpno.bounds.audit`), spherical harmonic coefficients on
the sphere (:mod:`mpno.bounds.sphere`); point clouds have none.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..data import OperatorDataset
from ..nn.registry import model_kind
from ..precision import Precision, inference_policy
from . import checkpoint, domains, forecast
from .assembly import resolve_device
from .evaluation import checked_dataset, rollout_model
from .provenance import provenance
from .reporting import log_line


def bounds_report(data: str, model_path: str | None = None, modes: Sequence[int] | None = None,
                  samples: int = 64, field: str = "x", precision: str | None = None, device: str = "auto",
                  **open_kwargs) -> dict:
    """The data audit (and, with a checkpoint ``model_path``, the model audit) of ``data``'s first ``samples``
    inputs (``field="x"``) or outputs, at ``modes`` (default: the model's, else the domain's choice)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"--samples {samples}: give a positive int")
    if modes is not None and not all(isinstance(m, int) and m > 0 for m in modes):
        raise ValueError(f"--modes {' '.join(map(str, modes))}: give positive ints")
    model = checkpoint.load_model(model_path) if model_path else None
    domain = domains.of(model_kind(model.operator)) if model is not None else domains.of_data(data)
    domain.require("audit")
    domain.check_audited(data, model)
    dataset = OperatorDataset(data, **{k: v for k, v in open_kwargs.items() if v is not None})
    fields = domain.fields(dataset, samples, field)
    modes = domain.audit_modes(fields, modes or (model.operator.n_modes if model is not None else None))
    device_ = resolve_device(device)
    report = domain.audit_data(data, fields, modes, device_)
    report.update({"data": str(data), "field": field})
    if model is not None:
        policy = _audit_policy(model.precision, precision)
        inputs = domain.fields(dataset, samples)
        report["model"] = {"checkpoint": str(model_path), **domain.audit_model(model.to(device_), inputs, policy)}
    report["provenance"] = provenance(device_, str(report["model"]["precision"]) if model is not None else None,
                                      model_path, [data])
    return report


def _audit_policy(trained: Precision, requested: str | None, log: Callable[[str], None] = log_line) -> Precision:
    """The policy a model is audited in: as asked (with the trained stabilizer unless it names one,
    :func:`mpno.precision.inference_policy`), else its last training policy, or ``mixed`` after ``full``."""
    if requested:
        policy, warning = inference_policy(requested, trained)
        if warning:
            log(warning)
        return policy
    return trained if trained.mode != "full" else trained.replace(mode="mixed", stabilizer=trained.stabilizer)


#: The low precisions ``mpno bounds --rollout`` compares with full by default.
ROLLOUT_POLICIES = ("mixed/float16", "mixed/bfloat16", "half/float16", "half/bfloat16")


def rollout_report(data: str, model_path: str, steps: int, precisions: Sequence[str] | None = None,
                   device: str = "auto", batch_size: int | None = None, x_key: str | None = None) -> dict:
    """``mpno bounds --rollout``: the same weights rolled out ``steps`` steps from the first window of every
    trajectory of ``data`` in full and in each of ``precisions`` (default :data:`ROLLOUT_POLICIES`, each with
    the trained stabilizer unless it names one), per lead time: the precision gap beside the model error, the
    lead time where the gap reaches a tenth of the model error, and the closed-form bound of the gap
    (:func:`mpno.run.forecast.precision_over_rollout`)."""
    model, config, domain, device_ = rollout_model(model_path, steps, device, None, batch_size, x_key)
    windows = domain.trajectories_of(checked_dataset(data, config, model), data)
    starts, truths = forecast.starts_and_truths(windows, config.history, steps, device_)
    policies = [_audit_policy(model.precision, text) for text in precisions or ROLLOUT_POLICIES]
    report = forecast.precision_over_rollout(model, starts, truths, policies, config.batch_size,
                                             model.static_channels)
    return {"data": str(data), "checkpoint": str(model_path), "steps": steps, "trajectories": len(starts),
            "interval": windows.trajectories.interval, **report,
            "provenance": provenance(device_, ", ".join(str(p) for p in policies), model_path, [data])}
