"""Forecasting with a one-step operator: its unrolled training loss, its autoregressive rollout, the error per
lead time against the truth, and the gap per lead time between a low-precision rollout and a full-precision
rollout of the same weights, beside the closed-form bound of the gap (``docs/forecasting.md``)."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ..precision import Precision
from .step import Objective


def next_window(window: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """The input window one step later: the oldest snapshot dropped, ``prediction`` (B, C, *grid) appended."""
    return torch.cat([window[:, prediction.shape[1]:], prediction], 1)


def unrolled(loss: Callable) -> Objective:
    """The objective of a one-step operator unrolled over the targets ``y`` (B, unroll, C, *grid): the sum over
    steps of ``loss(prediction, target)``, each prediction fed back as the newest input snapshot, with the
    gradient through it."""
    def objective(model, x, y):
        total = 0.0
        for k in range(y.shape[1]):
            prediction = model(x)
            total = total + loss(prediction, y[:, k])
            x = next_window(x, prediction)
        return total
    return objective


@torch.no_grad()
def rollout(model: torch.nn.Module, window: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` predictions (B, steps, C, *grid) of ``model`` applied to its own output from ``window``
    (B, history · C, *grid)."""
    predictions = []
    for _ in range(steps):
        predictions.append(model(window).to(window.dtype))
        window = next_window(window, predictions[-1])
    return torch.stack(predictions, 1)


def starts_and_truths(trajectories, history: int, steps: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first window (N, history · C, *grid) and the next ``steps`` true snapshots (N, steps, C, *grid) of
    each trajectory of a :class:`mpno.data.trajectories.TrajectoryWindows` selection."""
    source = trajectories.trajectories
    if history + steps > source.steps:
        raise ValueError(f"--rollout {steps}: {trajectories.path} has {source.steps} snapshots per trajectory, "
                         f"and a rollout of {steps} steps after {history} input snapshot(s) needs "
                         f"{history + steps}; roll out at most {source.steps - history} steps")
    frames = [source.frames(n, 0, history + steps) for n in trajectories.indices]
    starts = torch.stack([f[:history].flatten(0, 1) for f in frames]).to(device)
    return starts, torch.stack([f[history:] for f in frames]).to(device)


def _norms(fields: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each sample of each lead time: (N, steps)."""
    return fields.double().flatten(2).norm(dim=-1)


def relative_errors(predicted: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """The mean over trajectories of ``‖predicted − truth‖ / ‖truth‖`` at each lead time."""
    return (_norms(predicted - truth) / _norms(truth).clamp_min(1e-300)).mean(0).tolist()


def rollout_errors(model: torch.nn.Module, starts: torch.Tensor, truths: torch.Tensor, batch_size: int,
                   loss: Callable) -> dict:
    """The error of ``model``'s rollouts from ``starts`` against ``truths`` per lead time: ``l2`` (the domain's
    relative L2, as training measures it) and ``relative_l2`` (Euclidean), means over trajectories."""
    predicted = torch.cat([rollout(model, starts[i:i + batch_size], truths.shape[1])
                           for i in range(0, len(starts), batch_size)])
    steps = truths.shape[1]
    return {"lead_time": list(range(1, steps + 1)),
            "l2": [float(loss(predicted[:, k], truths[:, k])) for k in range(steps)],
            "relative_l2": relative_errors(predicted, truths)}


def lipschitz_estimate(model: torch.nn.Module, windows: torch.Tensor, size: float = 1e-3, trials: int = 4,
                       seed: int = 0) -> float:
    """The largest ratio ``‖G(v + δ) − G(v)‖ / ‖δ_new‖`` over ``windows`` and ``trials`` random perturbations
    ``δ`` of the newest snapshot of relative size ``size``, with ``G`` the one-step map in the model's current
    precision (call it on a float64 copy in full precision): an empirical growth factor of one step."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ratios = []
    with torch.no_grad():
        base = model(windows)
        channels = base.shape[1]
        for _ in range(trials):
            noise = torch.randn(windows.shape, generator=generator, dtype=windows.dtype).to(windows.device)
            noise[:, :-channels] = 0  # only the newest snapshot: what a rollout feeds back
            scale = size * _norms(windows[:, -channels:].unsqueeze(1)) / _norms(noise[:, -channels:].unsqueeze(1))
            delta = noise * scale.reshape(-1, *[1] * (windows.ndim - 1))
            moved = model(windows + delta)
            ratios.append((_norms((moved - base).unsqueeze(1)) / _norms(delta[:, -channels:].unsqueeze(1))).max())
    return float(torch.stack(ratios).max())


def gap_bound(epsilon: float, growth: float, steps: int) -> list[float]:
    """``e_n ≤ ε (L^n − 1) / (L − 1)`` (``n ε`` for ``L = 1``), ``n = 1 … steps``: the gap after ``n`` steps
    between two rollouts whose one-step maps differ by at most ``ε`` on the states that occur, one of them
    ``L``-Lipschitz there."""
    if abs(growth - 1.0) < 1e-12:
        return [epsilon * n for n in range(1, steps + 1)]
    return [epsilon * (growth ** n - 1) / (growth - 1) for n in range(1, steps + 1)]


def precision_over_rollout(model: torch.nn.Module, starts: torch.Tensor, truths: torch.Tensor,
                           policies: list[Precision], batch_size: int) -> dict:
    """Per lead time, for each low-precision ``policy``: the precision gap ``‖u_low − u_full‖ / ‖u_full‖``
    of rollouts of the same weights from the same ``starts``, beside the model error
    ``‖u_full − u_true‖ / ‖u_true‖``; the first lead time at which the gap reaches a tenth of the model error
    (``None``: never within the rollout); and the bound ``e_n ≤ ε (L^n − 1) / (L − 1)`` on the largest
    absolute gap over the trajectories, with ``ε`` the largest one-step gap on the full rollout's states and
    ``L`` the empirical growth factor of one full-precision step (:func:`lipschitz_estimate` in float64)."""
    steps, trained = truths.shape[1], model.precision

    def rolled(policy: Precision) -> torch.Tensor:
        model.set_precision(policy)
        return torch.cat([rollout(model, starts[i:i + batch_size], steps) for i in range(0, len(starts), batch_size)])

    full_policy = Precision("full", stabilizer=trained.stabilizer)
    full = rolled(full_policy)
    windows = [starts]
    for k in range(steps - 1):
        windows.append(next_window(windows[-1], full[:, k]))
    visited = torch.cat(windows)  # every window the full rollout passes through
    exact = _float64_copy(model, full_policy)
    growth = lipschitz_estimate(exact, visited.double())
    model_error = relative_errors(full, truths)
    report = {"lead_time": list(range(1, steps + 1)), "model_error": model_error, "growth_factor": growth,
              "policies": {}}
    for policy in policies:
        low = rolled(policy)
        with torch.no_grad():
            one_step = torch.cat([model(visited[i:i + batch_size]) for i in range(0, len(visited), batch_size)])
        model.set_precision(full_policy)
        with torch.no_grad():
            reference = torch.cat([model(visited[i:i + batch_size]) for i in range(0, len(visited), batch_size)])
        epsilon = float(_norms((one_step.float() - reference.float()).unsqueeze(1)).max())
        gap = relative_errors(low, full)
        absolute = _norms(low - full).max(0).values.tolist()
        tenth = next((k + 1 for k in range(steps) if gap[k] >= model_error[k] / 10), None)
        bound = gap_bound(epsilon, growth, steps)
        report["policies"][str(policy)] = {
            "precision_gap": gap, "largest_gap": absolute, "one_step_gap": epsilon, "bound": bound,
            "bound_holds": all(a <= b for a, b in zip(absolute, bound)),
            "gap_reaches_tenth_of_model_error_at": tenth}
    model.set_precision(trained)
    return report


def _float64_copy(model: torch.nn.Module, policy: Precision) -> torch.nn.Module:
    exact = copy.deepcopy(model).double()
    exact.set_precision(policy)
    return exact

