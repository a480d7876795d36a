"""Forecasting with a one-step operator: its unrolled training loss, its autoregressive rollout, the error per
lead time against the truth, and the gap per lead time between a low-precision rollout and a full-precision
rollout of the same weights, beside the closed-form bound of the gap (``docs/forecasting.md``)."""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.utils.checkpoint

from ..precision import Precision, phase_starts
from .step import Objective


def next_window(window: torch.Tensor, prediction: torch.Tensor, static: int = 0) -> torch.Tensor:
    """The input window one step later: the oldest snapshot dropped, ``prediction`` (B, C, *grid) appended
    after the newest, the ``static`` channels of static inputs at the end kept as they are."""
    dynamic = window.shape[1] - static
    return torch.cat([window[:, prediction.shape[1]:dynamic], prediction, window[:, dynamic:]], 1)


def unroll_stages(text: str | int) -> tuple[tuple[float, int], ...]:
    """``((fraction of epochs, steps unrolled), ...)`` from ``--unroll``: ``"2"`` (every epoch), or stages
    ``"1:0.5,2:0.25,4:0.25"`` (pretrain on single steps, then unroll 2, then 4); ``ValueError`` naming the bad
    part."""
    stages = []
    for part in str(text).split(","):
        steps, _, fraction = part.strip().partition(":")
        try:
            stage = (float(fraction) if fraction else 1.0, int(steps))
        except ValueError:
            raise ValueError(f"unroll={text!r}: write K or stages K:fraction,... such as '1:0.5,2:0.5'") from None
        if stage[1] < 1 or not 0 < stage[0] <= 1:
            raise ValueError(f"unroll={text!r}: {part.strip()!r} needs at least 1 step and a fraction in (0, 1]")
        stages.append(stage)
    if abs(sum(fraction for fraction, _ in stages) - 1.0) > 1e-6:
        raise ValueError(f"unroll={text!r}: the fractions of the stages must sum to 1")
    return tuple(stages)


def most_unrolled(text: str | int) -> int:
    """The most steps any stage of ``--unroll`` unrolls: the targets a training window holds."""
    return max(steps for _, steps in unroll_stages(text))


def unrolled_at(text: str | int, epoch: int, epochs: int) -> int:
    """The steps unrolled at ``epoch`` (0-based) of ``epochs``."""
    stages = unroll_stages(text)
    current = stages[0][1]
    for start, (_, steps) in zip(phase_starts([f for f, _ in stages], epochs), stages):
        if epoch >= start:
            current = steps
    return current


def unrolled(loss: Callable, steps: int, recompute: bool = False, static: int = 0) -> Objective:
    """The objective of a one-step operator unrolled over the first ``steps`` targets of ``y``
    (B, targets, C, *grid): the sum over steps of ``loss(prediction, target)``, each prediction fed back as the
    newest input snapshot, with the gradient through it (``static``: channels of static inputs at the end of
    the input window, kept fixed). ``recompute``: each step's activations are
    recomputed in the backward pass instead of kept (``torch.utils.checkpoint``): the memory of one step
    instead of ``steps``, for about one more forward pass."""
    def objective(model, x, y):
        total = 0.0
        for k in range(steps):
            prediction = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False) if recompute else model(x)
            total = total + loss(prediction, y[:, k])
            x = next_window(x, prediction, static)
        return total
    return objective


@torch.no_grad()
def rollout(model: torch.nn.Module, window: torch.Tensor, steps: int, static: int = 0) -> torch.Tensor:
    """``steps`` predictions (B, steps, C, *grid) of ``model`` applied to its own output from ``window``
    (B, history · C + static, *grid), its ``static`` channels of static inputs held fixed."""
    predictions = []
    for _ in range(steps):
        predictions.append(model(window).to(window.dtype))
        window = next_window(window, predictions[-1], static)
    return torch.stack(predictions, 1)


def starts_and_truths(trajectories, history: int, steps: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first window (N, history · C + S, *grid) and the next ``steps`` true snapshots (N, steps, C, *grid)
    of each trajectory of a :class:`mpno.data.trajectories.TrajectoryWindows` selection."""
    source = trajectories.trajectories
    if history + steps > source.steps:
        raise ValueError(f"--rollout {steps}: {trajectories.path} has {source.steps} snapshots per trajectory, "
                         f"and a rollout of {steps} steps after {history} input snapshot(s) needs "
                         f"{history + steps}; roll out at most {source.steps - history} steps")
    frames = [source.frames(n, 0, history + steps) for n in trajectories.indices]
    starts = torch.stack([trajectories.window(n, f[:history]) for n, f in zip(trajectories.indices, frames)])
    starts = starts.to(device)
    return starts, torch.stack([f[history:] for f in frames]).to(device)


def _norms(fields: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each sample of each lead time: (N, steps)."""
    return fields.double().flatten(2).norm(dim=-1)


def relative_errors_each(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``‖predicted − truth‖ / ‖truth‖`` of every trajectory at every lead time: (N, steps)."""
    return _norms(predicted - truth) / _norms(truth).clamp_min(1e-300)


def relative_errors(predicted: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """The mean over trajectories of ``‖predicted − truth‖ / ‖truth‖`` at each lead time."""
    return relative_errors_each(predicted, truth).mean(0).tolist()


def predicted(model: torch.nn.Module, starts: torch.Tensor, steps: int, batch_size: int, static: int = 0
              ) -> torch.Tensor:
    """:func:`rollout` of every start, ``batch_size`` at a time: (N, steps, C, *grid)."""
    return torch.cat([rollout(model, starts[i:i + batch_size], steps, static)
                      for i in range(0, len(starts), batch_size)])


def errors(predicted: torch.Tensor, truths: torch.Tensor, loss: Callable) -> dict:
    """The error of rollouts against the truth per lead time: ``l2`` (the domain's relative L2, as training
    measures it) and ``relative_l2`` (Euclidean), means over trajectories."""
    steps = truths.shape[1]
    return {"lead_time": list(range(1, steps + 1)),
            "l2": [float(loss(predicted[:, k], truths[:, k])) for k in range(steps)],
            "relative_l2": relative_errors(predicted, truths)}


def lipschitz_estimate(model: torch.nn.Module, windows: torch.Tensor, channels: int, size: float = 1e-3,
                       trials: int = 8, seed: int = 0, batch_size: int = 16, static: int = 0) -> float:
    """The largest ratio ``‖G(w + δ) − G(w)‖ / max_j ‖δ_j‖`` over ``windows`` (B, history · C + static, *grid)
    (the ``static`` channels at the end, which a rollout does not change, not perturbed) and
    ``trials`` random perturbations ``δ`` whose every channel of every snapshot has ``size`` times the norm of
    the channel it moves (channels in different units are each perturbed at their own scale, as rounding
    does), with ``G`` the one-step map in the model's current precision (call it on a float64 copy in full
    precision), ``batch_size`` windows at a time: an empirical growth factor of one step, what a gap in any of
    the snapshots a window holds becomes after one more step."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    largest = 0.0
    with torch.no_grad():
        for batch in windows.split(batch_size):
            dynamic = batch.shape[1] - static
            snapshots = batch[:, :dynamic].unflatten(1, (-1, channels))  # (B, history, C, *grid)
            base = model(batch)
            for _ in range(trials):
                noise = torch.randn(snapshots.shape, generator=generator, dtype=batch.dtype).to(batch.device)
                per_channel = size * snapshots.flatten(3).norm(dim=-1) / noise.flatten(3).norm(dim=-1).clamp_min(1e-300)
                noise *= per_channel.reshape(*noise.shape[:3], *[1] * (noise.ndim - 3))
                moved = model(torch.cat([batch[:, :dynamic] + noise.flatten(1, 2), batch[:, dynamic:]], 1))
                ratio = _norms((moved - base).unsqueeze(1))[:, 0] / _norms(noise).max(1).values
                largest = max(largest, float(ratio.max()))
    return largest


def gap_bound(epsilon: float, growth: float, steps: int) -> list[float]:
    """``e_n ≤ ε (L^n − 1) / (L − 1)`` (``n ε`` for ``L = 1``), ``n = 1 … steps``: the gap after ``n`` steps
    between two rollouts whose one-step maps differ by at most ``ε`` on the states that occur, one of them
    ``L``-Lipschitz there."""
    if abs(growth - 1.0) < 1e-12:
        return [epsilon * n for n in range(1, steps + 1)]
    return [epsilon * (growth ** n - 1) / (growth - 1) for n in range(1, steps + 1)]


def precision_over_rollout(model: torch.nn.Module, starts: torch.Tensor, truths: torch.Tensor,
                           policies: list[Precision], batch_size: int, static: int = 0) -> dict:
    """Per lead time, for each low-precision ``policy``: the precision gap ``‖u_low − u_full‖ / ‖u_full‖``
    of rollouts of the same weights from the same ``starts``, beside the model error
    ``‖u_full − u_true‖ / ‖u_true‖``; the first lead time at which the gap reaches a tenth of the model error
    (``None``: never within the rollout); and the bound ``e_n ≤ ε (L^n − 1) / (L − 1)`` on the largest
    absolute gap over the trajectories (Euclidean norms of a snapshot), with ``ε`` the largest one-step gap
    ``‖G_low(w) − G(w)‖`` over the windows ``w`` the low-precision rollout meets and ``L`` the empirical
    growth factor of one full-precision step there (:func:`lipschitz_estimate` in float64, with perturbations
    as large as the one-step gap; ``static``: channels of static inputs at the end of a window). From
    ``e_{n+1} ≤ ε + L · max_j e_{n-j}`` (the gaps of the snapshots a window holds) and a bound that grows with
    ``n``, ``e_n ≤ ε (L^n − 1) / (L − 1)``; ``L`` is estimated, so the bound is checked against the measurement
    (``bound_holds``)."""
    steps, trained = truths.shape[1], model.precision
    full_policy = Precision("full", stabilizer=trained.stabilizer)

    def rolled(policy: Precision) -> torch.Tensor:
        model.set_precision(policy)
        return predicted(model, starts, steps, batch_size, static)

    def one_step(policy: Precision, windows: torch.Tensor) -> torch.Tensor:
        model.set_precision(policy)
        with torch.no_grad():
            return torch.cat([model(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)]).float()

    full = rolled(full_policy)
    model_error = relative_errors(full, truths)
    exact = _float64_copy(model, full_policy)
    report = {"lead_time": list(range(1, steps + 1)), "model_error": model_error, "policies": {}}
    for policy in policies:
        low = rolled(policy)
        windows = [starts]
        for k in range(steps - 1):
            windows.append(next_window(windows[-1], low[:, k], static))
        met = torch.cat(windows)  # every window the low-precision rollout meets
        reference = one_step(full_policy, met)
        differences = _norms((one_step(policy, met) - reference).unsqueeze(1))
        epsilon = float(differences.max())
        size = max(float((differences / _norms(reference.unsqueeze(1)).clamp_min(1e-300)).max()), 1e-4)
        growth = lipschitz_estimate(exact, met.double(), truths.shape[2], size=size, batch_size=batch_size,
                                    static=static)
        gap = relative_errors(low, full)
        largest = _norms(low - full).max(0).values.tolist()
        bound = gap_bound(epsilon, growth, steps)
        report["policies"][str(policy)] = {
            "precision_gap": gap, "largest_gap": largest, "one_step_gap": epsilon, "growth_factor": growth,
            "bound": bound, "bound_holds": all(a <= b for a, b in zip(largest, bound)),
            "gap_reaches_tenth_of_model_error_at": next(
                (k + 1 for k in range(steps) if gap[k] >= model_error[k] / 10), None)}
    model.set_precision(trained)
    return report


def _float64_copy(model: torch.nn.Module, policy: Precision) -> torch.nn.Module:
    exact = copy.deepcopy(model).double()
    exact.set_precision(policy)
    return exact

