"""Normalisation: per-channel standardisation, and an operator between normalised fields."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..precision import Precision
from .registry import build_operator, model_kind


class UnitGaussianNormalizer(nn.Module):
    """Per-channel standardisation ``(x - mean) / scale``, invertible.

    Statistics are per channel over samples *and* grid points, so one normaliser
    serves every resolution (zero-shot super-resolution). ``scale`` is the standard
    deviation, floored at ``eps`` times the mean's size, so that a channel in small
    units (a vorticity of 1e-5 s⁻¹) is standardised like any other, while a constant
    channel is only centred (an all-zero one is left as it is). Fit it on the
    training split only; it is saved with the model (its buffers are in ``state_dict``).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("scale", torch.ones(channels))

    @classmethod
    def fit(cls, fields: Iterable[torch.Tensor], eps: float = 1e-6) -> "UnitGaussianNormalizer":
        """Fit on ``(channels, *grid)`` tensors, streaming (float64 sums)."""
        total = squares = None
        count = 0
        for field in fields:
            flat = field.reshape(field.shape[0], -1).double()
            total = flat.sum(1) if total is None else total + flat.sum(1)
            squares = flat.square().sum(1) if squares is None else squares + flat.square().sum(1)
            count += flat.shape[1]
        if total is None:
            raise ValueError("cannot fit a normaliser on no samples")
        normalizer = cls(len(total), eps)
        mean = total / count
        std = (squares / count - mean.square()).clamp(min=0).sqrt()
        scale = torch.maximum(std, eps * mean.abs())
        normalizer.mean.copy_(mean)
        normalizer.std.copy_(std)
        normalizer.scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))
        return normalizer

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "std" in state_dict and prefix + "scale" not in state_dict:  # saved before ``scale``
            state_dict[prefix + "scale"] = state_dict[prefix + "std"] + self.eps  # what they standardised with
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(like.dtype).view(1, -1, *([1] * (like.ndim - 2)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, *grid) -> standardised."""
        return (x - self._view(self.mean, x)) / self._view(self.scale, x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.scale, x) + self._view(self.mean, x)


class NormalizedOperator(nn.Module):
    """A neural operator between normalised fields: ``decode(operator(encode(x)))``.

    Call it on raw inputs (batch, in_channels, *grid) at any resolution; it returns
    raw outputs. The normalisers are fitted on the training split and saved with
    the weights; :meth:`spec` and :meth:`from_spec` rebuild the architecture.
    With ``residual`` the operator predicts the increment from the input's last
    ``out_channels`` channels before its ``static_channels`` (a forecasting
    window's newest snapshot, before the static inputs):
    ``x[:, newest] + decode(operator(encode(x)))``, its output normaliser fitted on
    increments. ``static_channels`` is recorded so that a rollout holds those
    channels fixed.
    """

    def __init__(self, operator: nn.Module, inputs: UnitGaussianNormalizer | None = None,
                 outputs: UnitGaussianNormalizer | None = None, residual: bool = False, static_channels: int = 0):
        super().__init__()
        if residual and operator.in_channels - static_channels < operator.out_channels:
            raise ValueError(f"residual=True adds the input's newest {operator.out_channels} channels to the output, "
                             f"and the operator takes {operator.in_channels - static_channels} besides "
                             f"{static_channels} static ones")
        self.operator, self.residual, self.static_channels = operator, residual, static_channels
        self.inputs = inputs if inputs is not None else UnitGaussianNormalizer(operator.in_channels)
        self.outputs = outputs if outputs is not None else UnitGaussianNormalizer(operator.out_channels)

    @property
    def precision(self) -> Precision:
        return self.operator.precision

    def set_precision(self, precision) -> Precision:
        return self.operator.set_precision(precision)

    def state_normalizer(self) -> UnitGaussianNormalizer:
        """The per-channel statistics of the states the model predicts: the output normaliser, or with
        ``residual`` (whose output normaliser holds increments) the input normaliser's newest snapshot."""
        if not self.residual:
            return self.outputs
        channels = self.operator.out_channels
        newest = self.operator.in_channels - self.static_channels
        state = UnitGaussianNormalizer(channels, self.inputs.eps).to(self.inputs.mean.device)
        for name in ("mean", "std", "scale"):
            getattr(state, name).copy_(getattr(self.inputs, name)[newest - channels:newest])
        return state

    def spec(self) -> dict:
        """The operator's kind and constructor arguments (plain values, safe to save)."""
        spec = {"kind": model_kind(self.operator), "arguments": dict(self.operator.arguments)}
        if self.residual:
            spec["residual"] = True
        if self.static_channels:
            spec["static_channels"] = self.static_channels
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "NormalizedOperator":
        """A freshly initialised model of the architecture :meth:`spec` describes."""
        arguments = dict(spec["arguments"])
        operator = build_operator(spec["kind"], arguments.pop("in_channels"), arguments.pop("out_channels"),
                                  arguments.pop("n_modes"), **arguments)
        return cls(operator, residual=bool(spec.get("residual", False)),
                   static_channels=int(spec.get("static_channels", 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.outputs.decode(self.operator(self.inputs.encode(x)))
        if not self.residual:
            return out
        newest = x.shape[1] - self.static_channels
        return x[:, newest - out.shape[1]:newest] + out
