"""The shallow-water solver on the sphere: Williamson's steady test 2, conservation, the energy budget,
fourth-order convergence in dt, and the data it generates."""

import math

import h5py
import pytest
import torch

from mpno.data import generate, grf
from mpno.data import shallow_water as sw
from mpno.ops import sht

DAY = 86400.0


def williamson2(solver: sw.ShallowWater, alpha: float, nlat: int, nlon: int, grid: str):
    """Test 2 (steady zonal flow, axis tilted by ``alpha``): the spectral state, and h on a grid, exactly."""
    u0 = 2 * math.pi * sw.RADIUS / (12 * DAY)

    def on(theta, phi):
        s = theta.cos() * math.cos(alpha) - phi.cos() * theta.sin() * math.sin(alpha)
        return 2 * u0 / sw.RADIUS * s, -(sw.RADIUS * sw.OMEGA * u0 + u0**2 / 2) * s**2

    theta, _ = sht.quadrature(solver.nlat, "legendre-gauss")
    phi = 2 * math.pi * torch.arange(solver.nlon, dtype=torch.float64) / solver.nlon
    zeta, phi_anomaly = on(theta[:, None], phi[None, :])
    state = torch.stack([solver.to_spectral(zeta), solver.to_spectral(0 * zeta), solver.to_spectral(phi_anomaly)])
    theta, _ = sht.quadrature(nlat, grid)
    phi = 2 * math.pi * torch.arange(nlon, dtype=torch.float64) / nlon
    height = (solver.mean_geopotential + on(theta[:, None], phi[None, :])[1]) / sw.GRAVITY
    return state[None], height


@pytest.mark.parametrize("alpha", [0.0, math.pi / 4])
def test_williamson_2_stays_steady_for_a_day_and_is_written_on_the_right_points(alpha):
    solver = sw.ShallowWater(12, depth=2.94e4 / sw.GRAVITY, hyperdiffusion=None, tilt=alpha)
    start, height = williamson2(solver, alpha, 17, 24, "equiangular")
    end = solver.integrate(start, DAY, 1800.0)
    for channel in range(3):  # ζ, δ, Φ − Φ̄: every error at the level of float64 rounding
        scale = start[:, [0, 2]].abs().amax(dim=(-2, -1))[0, 0 if channel < 2 else 1]
        assert (end[:, channel] - start[:, channel]).abs().max() < 1e-12 * scale
    fields = solver.fields(end, 17, 24, "equiangular")
    assert (fields[0, 0] - height).abs().max() < 1e-9 * height.abs().max()


def random_flow(truncation, batch=2, hyperdiffusion=10800.0):
    solver = sw.ShallowWater(truncation, hyperdiffusion=hyperdiffusion)
    zeta = torch.stack([sw.random_vorticity(solver, 20.0, 2.0, 8.0, grf.sample_generator(0, i)) for i in range(batch)])
    return solver, zeta


def test_vector_calculus_identities_hold_to_rounding():
    solver, zeta = random_flow(10)
    psi, chi = zeta * solver.inverse_laplacian, zeta.flip(0) * solver.inverse_laplacian
    u, v = solver.velocity(psi, chi)  # k×∇ψ + ∇χ
    divergence, curl = solver.divergence_curl(u, v)
    assert (divergence - solver.laplacian * chi).abs().max() < 1e-12 * zeta.abs().max()
    assert (curl - solver.laplacian * psi).abs().max() < 1e-12 * zeta.abs().max()


def test_the_initial_state_is_balanced():
    solver, zeta = random_flow(16)
    tendency = solver.tendency(solver.balanced(zeta))
    assert tendency[:, 1].abs().max() < 1e-10 * tendency[:, 0].abs().max()  # ∂δ/∂t = 0


def test_mass_is_conserved_to_rounding_and_energy_changes_only_by_hyperdiffusion():
    """Inviscid: energy drifts only by the truncation of the nonlinear terms. With hyperdiffusion the
    extra loss equals the integral of its dissipation rate dE/dt = E'(s)·(−ν∇⁴ s) over the run."""
    solver, zeta = random_flow(16)
    inviscid = sw.ShallowWater(16, hyperdiffusion=None)
    dt, steps = 1800.0, 48
    state = solver.balanced(zeta)
    mass0, energy0 = solver.mass(state), solver.energy(state)

    def dissipation(s):
        change = solver.damping * s
        return (solver.energy(s + change) - solver.energy(s - change)) / 2

    rates = [dissipation(state)]
    for _ in range(steps):
        state = solver.step(state, dt)
        rates.append(dissipation(state))
    rates = torch.stack(rates)
    dissipated = dt * (rates[1:-1].sum(0) + (rates[0] + rates[-1]) / 2)
    free = inviscid.integrate(inviscid.balanced(zeta), steps * dt, dt)
    assert ((solver.mass(state) - mass0).abs() / mass0).max() < 1e-14
    assert ((inviscid.mass(free) - mass0).abs() / mass0).max() < 1e-14
    drift = (inviscid.energy(free) - energy0) / energy0
    loss = (solver.energy(state) - energy0) / energy0
    assert drift.abs().max() < 1e-5
    assert (loss < -100 * drift.abs()).all()  # hyperdiffusion dominates
    assert ((loss - drift) / (dissipated / energy0) - 1).abs().max() < 0.01


def test_time_stepping_converges_at_fourth_order():
    solver, zeta = random_flow(16)
    start = solver.balanced(zeta)
    reference = solver.integrate(start, 6 * 3600.0, 225.0)
    errors = [((solver.integrate(start, 6 * 3600.0, dt) - reference).abs().norm() / reference.abs().norm()).item()
              for dt in (3600.0, 1800.0, 900.0)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert errors[-1] < 1e-6
    assert all(3.7 < order < 4.3 for order in orders), orders


def small(**changes):
    return {**sw.DEFAULTS, "truncation": 10, "start": 3600.0, "time": 3600.0, **changes}


def test_a_sample_is_the_same_flow_on_every_grid_and_in_every_batch():
    x17, y17 = sw.generate_batch(17, 5, [0, 1], **small(nlon=24))
    x33, y33 = sw.generate_batch(33, 5, [1], **small(nlon=24))
    assert x17.shape == (2, 3, 17, 24)
    for coarse, fine in ((x17[1], x33[0, :, ::2]), (y17[1], y33[0, :, ::2])):  # per channel, to rounding
        assert ((fine - coarse).abs().amax((-2, -1)) < 1e-12 * coarse.abs().amax((-2, -1))).all()
    height, vorticity, divergence = x17[0]
    assert (height > 0).all() and divergence.abs().max() > 0  # the spin-up made gravity waves
    assert ((y17 - x17).norm() / x17.norm()).item() > 1e-3  # the output is another state


def test_generate_writes_the_grid_and_refuses_coarsening(tmp_path):
    (path,) = generate("shallow-water", tmp_path / "swe.h5", n=3, resolution=8, grid="legendre-gauss",
                       truncation=6, start=0.0, time=1800.0)
    with h5py.File(path) as f:
        theta, weights = sht.quadrature(8, "legendre-gauss")
        assert f["x"].shape == (3, 3, 8, 16)
        assert torch.allclose(torch.from_numpy(f["grid_0"][:]), theta)
        assert torch.allclose(torch.from_numpy(f.attrs["quadrature_weights"]), weights)
        assert list(f.attrs["channels"]) == list(sw.CHANNELS) and f.attrs["grid"] == "legendre-gauss"
    with pytest.raises(ValueError, match="coarsen"):
        generate("shallow-water", tmp_path / "other.h5", n=2, resolution=16, coarsen=[8])


@pytest.mark.parametrize(
    "changes, message",
    [({"truncation": 1}, "truncation=1"), ({"depth": -1.0}, "depth=-1.0"), ({"grid": "healpix"}, "grid='healpix'"),
     ({"hyperdiffusion": 0.0}, "hyperdiffusion=0.0"), ({"time": 0.0}, "time=0.0")],
)
def test_bad_parameters_get_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        sw.generate_batch(8, 0, [0], **small(**changes))
