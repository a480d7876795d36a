"""The rotating shallow-water equations on the sphere, by the spectral transform method.

Vorticity–divergence form on a sphere of radius ``a`` rotating at ``Ω``
(colatitude ``θ``, longitude ``φ``, ``u`` eastward and ``v`` northward velocity):

    ∂ζ/∂t = −∇·(η u)
    ∂δ/∂t = k·∇×(η u) − ∇²(Φ + |u|²/2)          η = ζ + f,  f = 2Ω cos θ
    ∂Φ/∂t = −∇·(Φ u)

with ``ζ`` the relative vorticity, ``δ`` the divergence and ``Φ = g h`` the
geopotential; ``u = k×∇ψ + ∇χ`` with ``∇²ψ = ζ``, ``∇²χ = δ``. The state is
spectral (triangular truncation: degrees ``l < truncation``), the products are
formed on a Gauss–Legendre grid of ``⌈(3T + 1)/2⌉ × 2⌈(3T + 1)/2⌉`` points
(``T = truncation − 1``), on which every quadratic term is transformed without
aliasing, and vector fields are analysed with the exact quadrature of
``∇·w = −∫ w·∇Y*`` (the derivatives ``dP̄/dθ`` and ``m P̄ / sin θ`` of the
orthonormal Legendre functions of :mod:`mpno.ops.sht`). Time stepping: classical
RK4 with the hyperdiffusion ``−ν∇⁴`` on ``ζ``, ``δ`` and ``Φ`` integrated exactly
(integrating-factor RK4, fourth order in ``dt``). All in float64; total mass is
conserved to rounding (the ``l = 0`` tendency of ``Φ`` is zero by construction).

Data (``generate_batch``): a random nondivergent flow in nonlinear balance
(``∂δ/∂t = 0``) at ``t = 0``, integrated for ``start`` seconds (the input; by
then gravity waves and divergence have developed) and ``time`` seconds more (the
output), as the channels ``height`` (``Φ/g``, metres), ``vorticity`` and
``divergence`` (s⁻¹), evaluated from the spectral state on the requested grid
(:func:`grid_description`), so the same seed gives the same fields on every grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ops import sht, transforms
from . import grf
from .generator import Generator

RADIUS = 6.37122e6  # m
OMEGA = 7.292e-5  # s⁻¹
GRAVITY = 9.80616  # m s⁻²
CHANNELS = ("height", "vorticity", "divergence")
DEFAULTS = {"start": 21600.0, "time": 21600.0, "dt": None, "truncation": 32, "grid": "equiangular", "nlon": None,
            "depth": 3000.0, "velocity": 20.0, "alpha": 2.0, "tau": 8.0, "hyperdiffusion": 10800.0}


class ShallowWater:
    """The spectral shallow-water solver for a triangular truncation (degrees ``l < truncation``).

    Args:
        truncation: the spectral truncation ``L`` (degrees and orders ``< L``).
        depth: mean fluid depth ``H`` (m); ``Φ̄ = g H``.
        hyperdiffusion: e-folding time (s) of ``−ν∇⁴`` at the highest degree
            ``L − 1``; ``None`` for none.
        tilt: the rotation axis tilted by this angle (radians) towards longitude
            π, ``f = 2Ω (cos θ cos α − sin θ cos φ sin α)`` (Williamson et al.'s
            test 2 with flow over the poles); 0 for Earth's axis.

    States are complex tensors (batch, 3, L, L): the coefficients of ``ζ``, ``δ``
    and ``Φ − Φ̄`` (:mod:`mpno.ops.sht` conventions, on the unit sphere).
    """

    def __init__(self, truncation: int, depth: float = 3000.0, hyperdiffusion: float | None = 10800.0,
                 tilt: float = 0.0, radius: float = RADIUS, omega: float = OMEGA, gravity: float = GRAVITY):
        if isinstance(truncation, bool) or not isinstance(truncation, int) or truncation < 2:
            raise ValueError(f"truncation={truncation!r} is not supported; give an int >= 2")
        if not depth > 0:
            raise ValueError(f"depth={depth!r} is not supported; give a positive mean depth in metres")
        if hyperdiffusion is not None and not hyperdiffusion > 0:
            raise ValueError(f"hyperdiffusion={hyperdiffusion!r} is not supported; give a positive e-folding "
                             "time in seconds, or None")
        self.L, self.radius, self.gravity = truncation, radius, gravity
        self.mean_geopotential = gravity * depth
        degree = truncation - 1
        self.nlat = (3 * degree + 2) // 2
        self.nlon = 2 * self.nlat
        theta, weights = sht.quadrature(self.nlat, "legendre-gauss")
        p, dp = sht.legendre(truncation, truncation, theta, derivative=True)
        mp = torch.arange(truncation, dtype=torch.float64)[:, None, None] * p / theta.sin()
        quadrature = 2 * math.pi * weights
        self.synthesis = (dp, mp)  # (m, l, k): dP̄/dθ and m P̄ / sin θ at the nodes
        self.analysis = ((quadrature * dp).transpose(1, 2), (quadrature * mp).transpose(1, 2))  # (m, k, l)
        self.quadrature = (2 * math.pi / self.nlon * weights)[:, None]  # area weights on the unit sphere
        l = torch.arange(truncation, dtype=torch.float64)[:, None]
        self.laplacian = -l * (l + 1) / radius**2
        self.inverse_laplacian = torch.zeros_like(l)
        self.inverse_laplacian[1:] = 1 / self.laplacian[1:]
        if hyperdiffusion is None:
            self.damping = torch.zeros_like(self.laplacian)
        else:
            self.damping = -(self.laplacian / self.laplacian[-1]).square() / hyperdiffusion
        phi = 2 * math.pi * torch.arange(self.nlon, dtype=torch.float64) / self.nlon
        theta, phi = theta[:, None], phi[None, :]
        self.coriolis = 2 * omega * (theta.cos() * math.cos(tilt) - theta.sin() * phi.cos() * math.sin(tilt))

    # Transforms on the solver's grid (complex spectral coefficients, float64 fields).

    def to_spectral(self, fields: torch.Tensor) -> torch.Tensor:
        """Coefficients (..., L, L) of fields (..., nlat, nlon) on the solver's grid."""
        return torch.view_as_complex(sht.forward(fields, self.L, self.L, "legendre-gauss").contiguous())

    def to_grid(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Fields (..., nlat, nlon) on the solver's grid from coefficients (..., L, L)."""
        return sht.inverse(torch.view_as_real(coeffs), self.nlat, self.nlon, "legendre-gauss")

    def _fourier(self, fields: torch.Tensor) -> torch.Tensor:
        shape = fields.shape[:-2]
        pairs = transforms.forward(fields.reshape(-1, self.nlat, self.nlon), (2 * (self.L - 1),))
        return torch.view_as_complex(pairs.contiguous()).reshape(*shape, self.nlat, self.L)

    def _from_fourier(self, fourier: torch.Tensor) -> torch.Tensor:
        shape = fourier.shape[:-2]
        pairs = torch.view_as_real(fourier.reshape(-1, self.nlat, self.L))
        return transforms.inverse(pairs, (self.nlon,)).reshape(*shape, self.nlat, self.nlon)

    def velocity(self, psi: torch.Tensor, chi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid ``u``, ``v`` of ``k×∇ψ + ∇χ`` from spectral ``ψ``, ``χ``."""
        dp, mp = self.synthesis
        u = per_order(psi, dp) + 1j * per_order(chi, mp)
        v = 1j * per_order(psi, mp) - per_order(chi, dp)
        return self._from_fourier(u / self.radius), self._from_fourier(v / self.radius)

    def divergence_curl(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectral ``∇·w`` and ``k·∇×w`` of the grid vector field ``w = (u, v)``.

        ``(∇·w)_lm = −∫ w·∇Y*_lm dΩ``, by the grid's exact quadrature.
        """
        dp, mp = self.analysis
        U, V = self._fourier(u), self._fourier(v)
        divergence = per_order(V, dp) + 1j * per_order(U, mp)
        curl = 1j * per_order(V, mp) - per_order(U, dp)
        return divergence / self.radius, curl / self.radius

    # The equations.

    def tendency(self, state: torch.Tensor) -> torch.Tensor:
        """``∂(ζ, δ, Φ − Φ̄)/∂t`` without hyperdiffusion."""
        zeta, delta, phi = state.unbind(-3)
        u, v = self.velocity(zeta * self.inverse_laplacian, delta * self.inverse_laplacian)
        grid_zeta, grid_phi = self.to_grid(torch.stack([zeta, phi], -3)).unbind(-3)
        eta = grid_zeta + self.coriolis
        divergence, curl = self.divergence_curl(torch.stack([eta * u, grid_phi * u], -3),
                                                torch.stack([eta * v, grid_phi * v], -3))
        bernoulli = self.to_spectral(grid_phi + 0.5 * (u.square() + v.square()))
        return torch.stack([-divergence[..., 0, :, :],
                            curl[..., 0, :, :] - self.laplacian * bernoulli,
                            -divergence[..., 1, :, :] - self.mean_geopotential * delta], -3)

    def step(self, state: torch.Tensor, dt: float) -> torch.Tensor:
        """One integrating-factor RK4 step (hyperdiffusion exact, the rest classical RK4)."""
        full, half = torch.exp(self.damping * dt), torch.exp(self.damping * (dt / 2))
        k1 = self.tendency(state)
        k2 = self.tendency(half * (state + dt / 2 * k1))
        k3 = self.tendency(half * state + dt / 2 * k2)
        k4 = self.tendency(full * state + dt * half * k3)
        return full * state + dt / 6 * (full * k1 + 2 * half * (k2 + k3) + k4)

    def integrate(self, state: torch.Tensor, time: float, dt: float) -> torch.Tensor:
        """The state after ``time`` seconds, in ``ceil(time / dt)`` equal steps."""
        steps = max(1, math.ceil(time / dt - 1e-9))
        for _ in range(steps):
            state = self.step(state, time / steps)
        if not torch.isfinite(torch.view_as_real(state)).all():
            raise FloatingPointError(f"the shallow-water solver diverged with dt={time / steps:g} s; lower dt")
        return state

    def balanced(self, zeta: torch.Tensor) -> torch.Tensor:
        """The state with vorticity ``zeta`` (spectral), no divergence and ``Φ`` in nonlinear balance.

        ``Φ`` solves ``∇²Φ = k·∇×(η u) − ∇²|u|²/2``: the divergence tendency is zero at ``t = 0``.
        """
        u, v = self.velocity(zeta * self.inverse_laplacian, torch.zeros_like(zeta))
        eta = self.to_grid(zeta) + self.coriolis
        _, curl = self.divergence_curl(eta * u, eta * v)
        kinetic = self.to_spectral(0.5 * (u.square() + v.square()))
        phi = curl * self.inverse_laplacian - kinetic
        phi[..., 0, :] = 0  # Φ̄ is the mean
        return torch.stack([zeta, torch.zeros_like(zeta), phi], -3)

    # Diagnostics and output.

    def mass(self, state: torch.Tensor) -> torch.Tensor:
        """``∫ Φ dΩ`` on the unit sphere, per sample."""
        return 4 * math.pi * self.mean_geopotential + math.sqrt(4 * math.pi) * state[..., 2, 0, 0].real

    def energy(self, state: torch.Tensor) -> torch.Tensor:
        """``∫ ½ (Φ |u|² + Φ²) dΩ`` on the unit sphere (g times the total energy per area), per sample."""
        zeta, delta, phi = state.unbind(-3)
        u, v = self.velocity(zeta * self.inverse_laplacian, delta * self.inverse_laplacian)
        geopotential = self.to_grid(phi) + self.mean_geopotential
        density = 0.5 * geopotential * (u.square() + v.square() + geopotential)
        return (density * self.quadrature).sum((-2, -1))

    def fields(self, state: torch.Tensor, nlat: int, nlon: int, grid: str) -> torch.Tensor:
        """(batch, 3, nlat, nlon): height (m), vorticity and divergence (s⁻¹) on a grid of ``grid``'s kind.

        Evaluated from the coefficients at the grid's points (any size: a point
        evaluation, not a transform).
        """
        theta, _ = sht.quadrature(nlat, grid)
        ordered = state[..., [2, 0, 1], :, :]  # Φ − Φ̄, ζ, δ: the order of CHANNELS
        fourier = per_order(ordered, sht.legendre(self.L, self.L, theta))
        order = torch.arange(self.L, dtype=torch.float64)[:, None]
        angle = order * (2 * math.pi * torch.arange(nlon, dtype=torch.float64) / nlon)
        weight = torch.where(order == 0, 1.0, 2.0)  # Re(c e^{imφ}) for m and −m
        waves = torch.stack([weight * angle.cos(), -weight * angle.sin()], 1).reshape(2 * self.L, nlon)
        out = torch.view_as_real(fourier).flatten(-2) @ waves
        scale = torch.tensor([1 / self.gravity, 1.0, 1.0], dtype=torch.float64)[:, None, None]
        offset = torch.tensor([self.mean_geopotential / self.gravity, 0.0, 0.0], dtype=torch.float64)[:, None, None]
        return out * scale + offset


def per_order(coeffs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``out[..., b, m] = Σ_a coeffs[..., a, m] table[m, a, b]``: complex coefficients, a real table,
    one real matrix product per order ``m``."""
    *lead, a, orders = coeffs.shape
    pairs = torch.view_as_real(coeffs).permute(-2, *range(len(lead)), -1, -3).reshape(orders, -1, a)
    out = torch.bmm(pairs, table).reshape(orders, *lead, 2, table.shape[-1])
    return torch.view_as_complex(out.permute(*range(1, len(lead) + 1), -1, 0, -2).contiguous())


def random_vorticity(solver: ShallowWater, velocity: float, alpha: float, tau: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Spectral vorticity: a Gaussian random field with covariance ``(−Δ + τ²)^(−α)`` (unit sphere)
    without its mean, scaled to a root-mean-square speed ``velocity`` (m/s)."""
    L = solver.L
    l = torch.arange(L, dtype=torch.float64)[:, None]
    m = torch.arange(L, dtype=torch.float64)[None, :]
    noise = torch.view_as_complex(torch.randn(L, L, 2, generator=generator, dtype=torch.float64))
    noise = torch.where(m == 0, noise.real * math.sqrt(2), noise)  # a real m = 0 column, same variance
    zeta = noise * (l * (l + 1) + tau**2) ** (-alpha / 2) * ((m <= l) & (l > 0))
    u, v = solver.velocity(zeta * solver.inverse_laplacian, torch.zeros_like(zeta))
    rms = ((u.square() + v.square()) * solver.quadrature).sum().div(4 * math.pi).sqrt()
    return zeta * (velocity / rms)


def grid_description(resolution: int, grid: str = "equiangular", nlon: int | None = None, **_) -> tuple[list, dict]:
    """The coordinates (colatitude, longitude in radians) and attributes (grid, quadrature weights
    on ``cos θ``, channel names) that describe data generated at ``resolution`` latitudes."""
    nlon = nlon or 2 * resolution
    theta, weights = sht.quadrature(resolution, grid)
    longitude = 2 * np.pi * np.arange(nlon) / nlon
    attributes = {"grid": grid, "quadrature_weights": weights.numpy(), "channels": list(CHANNELS)}
    return [theta.numpy(), longitude], attributes


def _started(seed: int, indices, start: float, dt: float | None, truncation: int, depth: float, velocity: float,
             alpha: float, tau: float, hyperdiffusion: float | None) -> tuple[ShallowWater, torch.Tensor, float]:
    """The solver, the spectral states at ``start`` (s) of the flows of samples ``indices`` balanced at t = 0,
    and the time step (``dt``, else ``19200 / truncation`` s)."""
    if not velocity > 0 or not start >= 0:
        raise ValueError(f"velocity={velocity!r} must be positive and start={start!r} not negative")
    solver = ShallowWater(truncation, depth, hyperdiffusion)
    zeta = torch.stack([random_vorticity(solver, velocity, alpha, tau, grf.sample_generator(seed, i))
                        for i in indices])
    dt = dt or 19200.0 / truncation
    state = solver.balanced(zeta)
    return solver, solver.integrate(state, start, dt) if start > 0 else state, dt


def _check_grid(resolution: int, nlon: int, grid: str) -> None:
    sht.check_grid(grid)
    if resolution < 2 or nlon < 2:
        raise ValueError(f"resolution={resolution} and nlon={nlon} must be at least 2")


def generate_batch(resolution: int, seed: int, indices, start: float, time: float, dt: float | None,
                   truncation: int, grid: str, nlon: int | None, **flow):
    """Samples ``indices``: x = the state at ``start`` (s) of a flow balanced at t = 0, y = the state
    ``time`` seconds later, both (B, 3, resolution, nlon) with channels :data:`CHANNELS` on ``grid``
    (``flow``: ``depth``, ``velocity``, ``alpha``, ``tau``, ``hyperdiffusion``).

    ``nlon`` defaults to ``2 * resolution``; ``dt`` to ``19200 / truncation`` s (600 s at
    truncation 32, a Courant number ≈ 0.5 for the gravity waves of depth 3000 m).
    """
    nlon = nlon or 2 * resolution
    _check_grid(resolution, nlon, grid)
    if not time > 0:
        raise ValueError(f"time={time!r} must be positive")
    solver, first, dt = _started(seed, indices, start, dt, truncation, **flow)
    last = solver.integrate(first, time, dt)
    return solver.fields(first, resolution, nlon, grid), solver.fields(last, resolution, nlon, grid)


def trajectories(resolution: int, seed: int, indices, steps: int, interval: float, start: float, time: float,
                 dt: float | None, truncation: int, grid: str, nlon: int | None, **flow) -> torch.Tensor:
    """Trajectories of samples ``indices``: the state at ``steps`` times ``start, start + interval, ...`` of
    the flows :func:`generate_batch` starts, (B, steps, 3, resolution, nlon) on ``grid`` (``time`` unused:
    the interval is the step)."""
    nlon = nlon or 2 * resolution
    _check_grid(resolution, nlon, grid)
    solver, state, dt = _started(seed, indices, start, dt, truncation, **flow)
    frames = [solver.fields(state, resolution, nlon, grid)]
    for _ in range(steps - 1):
        state = solver.integrate(state, interval, dt)
        frames.append(solver.fields(state, resolution, nlon, grid))
    return torch.stack(frames, 1)


#: What ``mpno generate shallow-water`` knows of this module: fields on the sphere, ``resolution`` latitudes.
GENERATOR = Generator(
    "shallow-water", DEFAULTS, spatial_dims=2, batch_size=8, solve=generate_batch, trajectories=trajectories,
    grid_description=grid_description,
    flags={"nlon": (int, "longitudes (default: 2 × latitudes)"),
           "time": (float, "seconds from the input to the output"),
           "dt": (float, "the time step (default: from the truncation)")},
    values=lambda resolution, params: 6 * resolution * (params["nlon"] or 2 * resolution))
