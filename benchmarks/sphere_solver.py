"""Verification numbers of the shallow-water solver (the checks of tests/test_shallow_water.py, printed).

    .venv/bin/python benchmarks/sphere_solver.py [--truncation 32]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mpno.data import grf
from mpno.data import shallow_water as sw
from mpno.ops import sht

DAY = 86400.0


def williamson2(solver: sw.ShallowWater, alpha: float) -> torch.Tensor:
    u0 = 2 * math.pi * sw.RADIUS / (12 * DAY)
    theta, _ = sht.quadrature(solver.nlat, "legendre-gauss")
    phi = 2 * math.pi * torch.arange(solver.nlon, dtype=torch.float64) / solver.nlon
    s = theta[:, None].cos() * math.cos(alpha) - phi[None, :].cos() * theta[:, None].sin() * math.sin(alpha)
    zeta, anomaly = 2 * u0 / sw.RADIUS * s, -(sw.RADIUS * sw.OMEGA * u0 + u0**2 / 2) * s**2
    return torch.stack([solver.to_spectral(zeta), solver.to_spectral(0 * zeta), solver.to_spectral(anomaly)])[None]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().norm() / b.abs().norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truncation", type=int, default=32)
    args = parser.parse_args()
    L = args.truncation
    dt = 19200.0 / L
    for alpha in (0.0, math.pi / 4):
        solver = sw.ShallowWater(L, depth=2.94e4 / sw.GRAVITY, hyperdiffusion=None, tilt=alpha)
        start = williamson2(solver, alpha)
        end = solver.integrate(start, 5 * DAY, dt)
        print(f"Williamson 2, alpha={alpha:.4f}, 5 days, dt={dt:g} s: relative change of vorticity "
              f"{relative(end[:, 0], start[:, 0]):.1e}, of geopotential {relative(end[:, 2], start[:, 2]):.1e}")
    solver = sw.ShallowWater(L)
    inviscid = sw.ShallowWater(L, hyperdiffusion=None)
    zeta = torch.stack([sw.random_vorticity(solver, 20.0, 2.0, 8.0, grf.sample_generator(0, i)) for i in range(4)])
    start = solver.balanced(zeta)
    started = time.perf_counter()
    end = solver.integrate(start, DAY, dt)
    elapsed = time.perf_counter() - started
    free = inviscid.integrate(start, DAY, dt)
    mass = ((solver.mass(end) - solver.mass(start)) / solver.mass(start)).abs().max().item()
    drift = ((inviscid.energy(free) - inviscid.energy(start)) / inviscid.energy(start)).abs().max().item()
    loss = ((solver.energy(end) - solver.energy(start)) / solver.energy(start)).tolist()
    print(f"random balanced flows (4), truncation {L}, 1 day: max relative mass change {mass:.1e}; "
          f"energy: inviscid drift {drift:.1e}, with hyperdiffusion {', '.join(f'{v:.2e}' for v in loss)}; "
          f"{elapsed:.2f} s for {math.ceil(DAY / dt)} steps of 4 flows")
    reference = solver.integrate(start, 6 * 3600.0, dt / 8)
    errors = [relative(solver.integrate(start, 6 * 3600.0, step), reference) for step in (4 * dt, 2 * dt, dt)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    print(f"6 h, dt = {4 * dt:g}, {2 * dt:g}, {dt:g} s against dt/8: errors "
          f"{', '.join(f'{e:.2e}' for e in errors)}; observed orders {', '.join(f'{o:.2f}' for o in orders)}")


if __name__ == "__main__":
    main()
