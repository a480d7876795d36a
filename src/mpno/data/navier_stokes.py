"""Navier–Stokes in vorticity form on the periodic unit square.

``∂_t w + u·∇w = ν Δw + f``, ``u = (∂_y ψ, -∂_x ψ)``, ``-Δψ = w``.
Pseudo-spectral in space with 2/3-rule dealiasing of the advection term;
Crank–Nicolson for the viscous term and second-order Adams–Bashforth for
advection and forcing (CN–AB2), batched over samples in float64.
"""

from __future__ import annotations

import math

import torch

from . import grf
from .generator import Generator

DEFAULTS = {"viscosity": 1e-3, "time": 10.0, "snapshots": 1, "dt": None,
            "alpha": 2.5, "tau": 7.0, "sigma": 7.0**1.5, "forced": True}
VISCOSITIES = (1e-3, 1e-4, 1e-5)  # the standard data sets (Li et al.)


def forcing(resolution: int) -> torch.Tensor:
    """The standard forcing ``0.1 (sin 2π(x + y) + cos 2π(x + y))`` on the grid."""
    x = torch.arange(resolution, dtype=torch.float64) / resolution
    s = x[:, None] + x[None, :]
    return 0.1 * (torch.sin(2 * math.pi * s) + torch.cos(2 * math.pi * s))


def solve(w0: torch.Tensor, viscosity: float, time: float, dt: float, snapshots: int = 1,
          force: torch.Tensor | None = None) -> torch.Tensor:
    """Vorticity at ``snapshots`` equally spaced times in (0, time]: (batch, snapshots, n, n).

    ``w0``: (batch, n, n) initial vorticity on the points ``j / n``.
    """
    n = w0.shape[-1]
    steps = max(1, round(time / dt))
    dt = time / steps
    record_every = steps / snapshots
    if abs(record_every - round(record_every)) > 1e-9:
        raise ValueError(f"snapshots={snapshots} must divide the {steps} time steps of dt={dt:g}")
    record_every = round(record_every)
    ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)
    kx = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)[:, None]
    lap = 4 * math.pi**2 * (kx**2 + ky**2)  # eigenvalues of -Δ
    inv_lap = torch.where(lap > 0, 1.0 / lap.clamp(min=1e-30), torch.zeros_like(lap))
    dealias = ((kx.abs() <= n / 3) & (ky <= n / 3)).to(torch.float64)
    nyquist = n / 2  # the derivative of the Nyquist mode is set to zero (it has no sign on the grid), so that
    dx = 2j * math.pi * torch.where(kx.abs() == nyquist, 0.0, kx)  # the solver commutes exactly with the
    dy = 2j * math.pi * torch.where(ky == nyquist, 0.0, ky)  # square's flips and quarter turns
    f_hat = torch.fft.rfft2(force) if force is not None else torch.zeros_like(lap, dtype=torch.complex128)
    w_hat = torch.fft.rfft2(w0)
    out = torch.empty(w0.shape[0], snapshots, n, n, dtype=torch.float64)
    implicit = 1 + 0.5 * dt * viscosity * lap
    explicit = 1 - 0.5 * dt * viscosity * lap
    previous = None
    for step in range(1, steps + 1):
        psi_hat = w_hat * inv_lap
        u = torch.fft.irfft2(dy * psi_hat, s=(n, n))
        v = torch.fft.irfft2(-dx * psi_hat, s=(n, n))
        advection = u * torch.fft.irfft2(dx * w_hat, s=(n, n)) + v * torch.fft.irfft2(dy * w_hat, s=(n, n))
        rhs = f_hat - dealias * torch.fft.rfft2(advection)
        extrapolated = rhs if previous is None else 1.5 * rhs - 0.5 * previous
        w_hat = (explicit * w_hat + dt * extrapolated) / implicit
        previous = rhs
        if step % record_every == 0:
            out[:, step // record_every - 1] = torch.fft.irfft2(w_hat, s=(n, n))
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"Navier–Stokes diverged with dt={dt:g}; lower dt")
    return out


def generate_batch(resolution: int, seed: int, indices, viscosity: float, time: float, snapshots: int,
                   dt: float | None, alpha: float, tau: float, sigma: float, forced: bool):
    """Samples ``indices``: x = w(0) (B, 1, n, n), y = w at ``snapshots`` times (B, snapshots, n, n).

    ``dt`` defaults to ``0.128 / resolution`` (2e-3 at 64²: advective CFL ≈ 0.13·max|u|).
    """
    if not viscosity > 0:
        raise ValueError(f"viscosity={viscosity!r} is not supported; give a positive value (the standard "
                         f"data sets use {', '.join(map(str, VISCOSITIES))})")
    w0 = torch.stack([grf.periodic(resolution, 2, alpha, tau, sigma, grf.sample_generator(seed, i))
                      for i in indices])
    w = solve(w0, viscosity, time, dt or 0.128 / resolution, snapshots, forcing(resolution) if forced else None)
    return w0.unsqueeze(1), w


def trajectories(resolution: int, seed: int, indices, steps: int, interval: float, **params) -> torch.Tensor:
    """Trajectories of samples ``indices``: the vorticity at ``steps`` times ``0, interval, ...``,
    (B, steps, 1, n, n); sample ``i`` starts where :func:`generate_batch`'s does."""
    per_interval = math.ceil(interval / (params["dt"] or 0.128 / resolution) - 1e-9)  # time steps per snapshot
    params = {**params, "time": interval * (steps - 1), "snapshots": steps - 1, "dt": interval / per_interval}
    w0, w = generate_batch(resolution, seed, indices, **params)
    return torch.cat([w0, w], 1).unsqueeze(2)


#: What ``mpno generate navier-stokes`` knows of this module.
GENERATOR = Generator(
    "navier-stokes", DEFAULTS, spatial_dims=2, batch_size=32, solve=generate_batch, trajectories=trajectories,
    flags={"viscosity": (float, "the viscosity ν"), "time": (float, "the final time T"),
           "snapshots": (int, "outputs at this many times in (0, T]"),
           "dt": (float, "the time step (default: from the resolution)")},
    values=lambda resolution, params: (1 + params["snapshots"]) * resolution**2,
    channel_types=("pseudoscalar", "pseudoscalar"))  # 2D vorticity: its sign flips under a reflection
