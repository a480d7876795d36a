"""Viscous Burgers' equation on the periodic unit interval.

``u_t + u u_x = ν u_xx``. Fourier pseudo-spectral in space (2/3-rule
dealiasing), exponential time differencing with fourth-order Runge–Kutta
(ETDRK4, Cox & Matthews 2002, with Kassam & Trefethen's contour-integral
coefficients): the stiff viscous term is integrated exactly, so the time step
is limited by the advection only. Batched over samples, float64.
"""

from __future__ import annotations

import math

import torch

from . import grf
from .generator import Generator

DEFAULTS = {"viscosity": 0.1, "time": 1.0, "dt": None, "alpha": 2.0, "tau": 5.0, "sigma": 25.0}


def _etdrk4_coefficients(linear: torch.Tensor, dt: float, contour_points: int = 32):
    """ETDRK4 coefficients for diagonal ``linear`` (complex128), by contour integrals."""
    roots = torch.exp(1j * math.pi * (torch.arange(1, contour_points + 1, dtype=torch.float64) - 0.5) / contour_points)
    lr = dt * linear[..., None] + roots
    e, e2 = torch.exp(dt * linear), torch.exp(dt * linear / 2)
    q = dt * ((torch.exp(lr / 2) - 1) / lr).mean(-1).real
    f1 = dt * ((-4 - lr + torch.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3).mean(-1).real
    f2 = dt * ((2 + lr + torch.exp(lr) * (-2 + lr)) / lr**3).mean(-1).real
    f3 = dt * ((-4 - 3 * lr - lr**2 + torch.exp(lr) * (4 - lr)) / lr**3).mean(-1).real
    return e, e2, q, f1, f2, f3


def solve(u0: torch.Tensor, viscosity: float, time: float, dt: float) -> torch.Tensor:
    """``u(time)`` from ``u0`` (batch, n) on the points ``j / n``."""
    n = u0.shape[-1]
    steps = max(1, round(time / dt))
    dt = time / steps
    k = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)
    linear = (-viscosity * (2 * math.pi * k) ** 2).to(torch.complex128)
    e, e2, q, f1, f2, f3 = _etdrk4_coefficients(linear, dt)
    derivative = -0.5j * 2 * math.pi * k * (k <= n / 3)  # N(u) = -(u²)_x / 2, dealiased

    def nonlinear(v_hat):
        return derivative * torch.fft.rfft(torch.fft.irfft(v_hat, n=n) ** 2)

    v = torch.fft.rfft(u0)
    for _ in range(steps):
        nv = nonlinear(v)
        a = e2 * v + q * nv
        na = nonlinear(a)
        b = e2 * v + q * na
        nb = nonlinear(b)
        c = e2 * a + q * (2 * nb - nv)
        nc = nonlinear(c)
        v = e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
    u = torch.fft.irfft(v, n=n)
    if not torch.isfinite(u).all():
        raise FloatingPointError(f"Burgers diverged with dt={dt:g}; lower dt")
    return u


def generate_batch(resolution: int, seed: int, indices, viscosity: float, time: float, dt: float | None,
                   alpha: float, tau: float, sigma: float):
    """Samples ``indices``: x = u(0), y = u(time), each (B, 1, n).

    ``dt`` defaults to ``0.5 / (resolution · max|u0|)`` (at most 1e-3): the
    advective CFL number stays below 1/2 for the initial data.
    """
    u0 = torch.stack([grf.periodic(resolution, 1, alpha, tau, sigma, grf.sample_generator(seed, i))
                      for i in indices])
    step = dt or min(1e-3, 0.5 / (resolution * max(1.0, u0.abs().max().item())))
    return u0.unsqueeze(1), solve(u0, viscosity, time, step).unsqueeze(1)


def trajectories(resolution: int, seed: int, indices, steps: int, interval: float, viscosity: float, time: float,
                 dt: float | None, alpha: float, tau: float, sigma: float) -> torch.Tensor:
    """Trajectories of samples ``indices``: ``u`` at ``steps`` times ``0, interval, ...``, (B, steps, 1, n)."""
    u0 = torch.stack([grf.periodic(resolution, 1, alpha, tau, sigma, grf.sample_generator(seed, i))
                      for i in indices])
    step = dt or min(1e-3, 0.5 / (resolution * max(1.0, u0.abs().max().item())))
    states = [u0]
    for _ in range(steps - 1):
        states.append(solve(states[-1], viscosity, interval, step))
    return torch.stack(states, 1).unsqueeze(2)


#: What ``mpno generate burgers`` knows of this module.
GENERATOR = Generator(
    "burgers", DEFAULTS, spatial_dims=1, batch_size=64, solve=generate_batch, trajectories=trajectories,
    flags={"viscosity": (float, "the viscosity ν"), "time": (float, "the final time T"),
           "dt": (float, "the time step (default: from the resolution)")},
    channel_types=("vector", "vector"))  # the velocity: x → −x takes u to −u
