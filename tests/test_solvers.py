"""The PDE solvers against exact solutions: observed convergence orders, not just that they ran."""

import math

import numpy as np
import pytest
import torch

from mpno.data import burgers, darcy, grf, navier_stokes


def observed_orders(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


def test_darcy_converges_at_second_order_on_a_manufactured_solution():
    """u = sin(πx) sin(πy), a = 1 + ½ sin(2πx) cos(πy), f = -∇·(a∇u)."""
    errors = []
    for n in (16, 32, 64, 128):
        x = np.arange(n + 1) / n
        X, Y = np.meshgrid(x, x, indexing="ij")
        u = np.sin(np.pi * X) * np.sin(np.pi * Y)
        a = 1 + 0.5 * np.sin(2 * np.pi * X) * np.cos(np.pi * Y)
        a_x = np.pi * np.cos(2 * np.pi * X) * np.cos(np.pi * Y)
        a_y = -0.5 * np.pi * np.sin(2 * np.pi * X) * np.sin(np.pi * Y)
        u_x = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
        u_y = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
        f = -(a_x * u_x + a_y * u_y - 2 * np.pi**2 * a * u)
        errors.append(np.abs(darcy.solve(a, f) - u).max())
    assert errors[-1] < 1e-4
    for order in observed_orders(errors):
        assert 1.9 < order < 2.1


def taylor_green(n):
    x = torch.arange(n, dtype=torch.float64) / n
    return (torch.sin(2 * math.pi * x)[:, None] * torch.sin(2 * math.pi * x)[None, :]).unsqueeze(0)


def test_navier_stokes_matches_the_decaying_taylor_green_vortex_at_second_order_in_time():
    """Unforced, w = sin 2πx sin 2πy decays as exp(-8π²νt); advection vanishes exactly."""
    nu, time = 1e-2, 1.0
    w0 = taylor_green(32)
    exact = w0 * math.exp(-8 * math.pi**2 * nu * time)
    errors = [(navier_stokes.solve(w0, nu, time, dt)[:, -1] - exact).abs().max().item() for dt in (0.02, 0.01, 0.005)]
    assert errors[-1] < 1e-6
    for order in observed_orders(errors):
        assert 1.9 < order < 2.1


def test_navier_stokes_records_snapshots_at_equal_times():
    w0 = taylor_green(16)
    w = navier_stokes.solve(w0, 1e-2, 1.0, 0.01, snapshots=4)
    for k, t in enumerate((0.25, 0.5, 0.75, 1.0)):
        assert torch.allclose(w[:, k], w0 * math.exp(-8 * math.pi**2 * 1e-2 * t), atol=1e-5)
    with pytest.raises(ValueError, match="snapshots=3 must divide"):
        navier_stokes.solve(w0, 1e-2, 1.0, 0.01, snapshots=3)


def test_burgers_matches_cole_hopf_at_fourth_order_in_time():
    """φ = 2 + e^{-4π²νt} cos 2πx solves the heat equation, so u = -2ν φ_x / φ solves Burgers."""
    nu, time, n = 0.05, 0.5, 128
    x = torch.arange(n, dtype=torch.float64) / n

    def exact(t):
        decay = math.exp(-4 * math.pi**2 * nu * t)
        return 4 * math.pi * nu * decay * torch.sin(2 * math.pi * x) / (2 + decay * torch.cos(2 * math.pi * x))

    u0 = exact(0.0).unsqueeze(0)
    errors = [(burgers.solve(u0, nu, time, dt)[0] - exact(time)).abs().max().item() for dt in (0.02, 0.01, 0.005)]
    assert errors[-1] < 1e-9
    for order in observed_orders(errors):
        assert 3.7 < order < 4.3


def test_random_fields_depend_only_on_seed_and_index():
    a = grf.periodic(32, 2, 2.5, 7.0, 1.0, grf.sample_generator(3, 5))
    b = grf.periodic(32, 2, 2.5, 7.0, 1.0, grf.sample_generator(3, 5))
    c = grf.periodic(32, 2, 2.5, 7.0, 1.0, grf.sample_generator(3, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.mean().item()) < 1e-12  # the mean mode is zero
