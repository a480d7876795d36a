"""Losses for values on point clouds, computed in float32 (or float64) whatever the model's precision."""

from __future__ import annotations

import torch


class PointL2Loss:
    """Relative L² error per cloud, ``‖pred − y‖ / ‖y‖``, averaged over the clouds of a batch.

    ``prediction`` is (P, C) (the clouds one after another, as :class:`mpno.GINO`
    returns them); ``target`` is a :class:`mpno.data.pointclouds.PointValues`. The
    norms are quadrature sums ``Σ_p w_p |v_p|²`` with the target's ``weights`` when
    it has them (the surface integral), point means otherwise.
    """

    name = "l2"

    def __call__(self, prediction: torch.Tensor, target) -> torch.Tensor:
        values = target.values
        if prediction.shape != values.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from target {tuple(values.shape)}")
        dtype = torch.float64 if torch.float64 in (prediction.dtype, values.dtype) else torch.float32
        prediction, values = prediction.to(dtype), values.to(dtype)
        sizes = torch.as_tensor(target.sizes, device=values.device)
        cloud = torch.repeat_interleave(torch.arange(len(sizes), device=values.device), sizes)
        weights = target.weights.to(dtype) if target.weights is not None else 1.0 / sizes[cloud].to(dtype)
        error = torch.zeros(len(sizes), dtype=dtype, device=values.device).index_add(
            0, cloud, weights * (prediction - values).square().sum(1))
        norm = torch.zeros_like(error).index_add(0, cloud, weights * values.square().sum(1))
        return (error.sqrt() / norm.sqrt().clamp(min=torch.finfo(dtype).tiny)).mean()
