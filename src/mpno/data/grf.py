"""Gaussian random fields with covariance ``σ² (-Δ + τ² I)^(-α)`` on the unit cube.

The standard recipe of operator-learning data sets (Li et al., FNO): a field is
a sum of Laplacian eigenfunctions with independent normal weights scaled by the
square root of the covariance's eigenvalues. Periodic fields use Fourier modes;
Neumann fields (Darcy) use cosines.
"""

from __future__ import annotations

import math

import torch


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A generator for sample ``index`` of a data set seeded with ``seed``.

    Seeding each sample separately makes a data set independent of the batch
    size it was generated with.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def periodic(resolution: int, ndim: int, alpha: float, tau: float, sigma: float,
             generator: torch.Generator) -> torch.Tensor:
    """One periodic field on ``resolution^ndim`` points ``j / resolution`` (float64), zero mean."""
    freqs = torch.fft.fftfreq(resolution, 1.0 / resolution, dtype=torch.float64)
    k2 = sum(k**2 for k in torch.meshgrid(*[freqs] * ndim, indexing="ij"))
    sqrt_eig = math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig.view(-1)[0] = 0.0
    noise = torch.randn(*k2.shape, 2, generator=generator, dtype=torch.float64)
    coeffs = sqrt_eig * torch.view_as_complex(noise)
    return torch.fft.ifftn(coeffs, norm="forward").real


def neumann(points: torch.Tensor, alpha: float, tau: float, generator: torch.Generator) -> torch.Tensor:
    """One 2D field with zero-flux boundaries at ``points × points`` (float64, in [0, 1])."""
    modes = torch.arange(points.numel(), dtype=torch.float64)
    basis = torch.cos(math.pi * points[:, None] * modes[None, :])  # (points, modes)
    k2 = modes[:, None] ** 2 + modes[None, :] ** 2
    sqrt_eig = (math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    weights = sqrt_eig * torch.randn(k2.shape, generator=generator, dtype=torch.float64)
    return basis @ weights @ basis.T
