"""Spherical harmonic transforms, SphericalConv and SFNO against float64 references built with SciPy."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

import mpno
from mpno import InverseRealSHT, Precision, RealSHT, SFNO, SphericalConv
from mpno.nn.registry import build_operator
from mpno.nn.normalized import NormalizedOperator
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.spherical import SphericalL2Loss
from mpno.ops import sht
from mpno.precision import UNIT_ROUNDOFF
from reference import CUDA, last_layer_amplification, relative_error, saved_dtypes, tolerance

GRIDS = sht.GRIDS
FORWARD_STAGES = 6  # input; longitude DFT: twiddles, sums, 1/nlon; Legendre: table, sums
INVERSE_STAGES = 4  # Legendre: table, sums; longitude DFT: twiddles, sums


def conv_stages(mode: str) -> int:
    """SphericalConv: forward (half, or fp32 then one rounding), weights, contraction, inverse, bias."""
    return (FORWARD_STAGES if mode == "half" else 1) + 2 + INVERSE_STAGES + 1


def points(nlat, nlon, grid):
    theta, _ = sht.quadrature(nlat, grid)
    phi = 2 * np.pi * np.arange(nlon) / nlon
    return np.meshgrid(theta.numpy(), phi, indexing="ij")


def random_coefficients(lmax, mmax, nlon, batch=1, seed=0, decay=1.0):
    """Complex (batch, lmax, mmax): zero for m > l, real at m = 0, no Nyquist order; |c| ~ (1 + l)^-decay."""
    gen = np.random.default_rng(seed)
    c = gen.normal(size=(batch, lmax, mmax)) + 1j * gen.normal(size=(batch, lmax, mmax))
    l, m = np.arange(lmax)[:, None], np.arange(mmax)[None, :]
    c = c * (m <= l) * (2 * m != nlon) / (1.0 + l) ** decay
    c[..., 0] = c[..., 0].real
    return c


def field_from(c, nlat, nlon, grid):
    """``Σ_l Σ_{m>=0} w_m Re(c_lm Y_lm)`` with SciPy's harmonics (w_0 = 1, else 2), float64 (batch, nlat, nlon)."""
    theta, phi = points(nlat, nlon, grid)
    out = np.zeros((c.shape[0], nlat, nlon))
    for l in range(c.shape[1]):
        for m in range(min(l + 1, c.shape[2])):
            y = sph_harm_y(l, m, theta, phi)
            out += (1 if m == 0 else 2) * np.real(c[:, l, m, None, None] * y)
    return torch.from_numpy(out)


SIZES = [(12, 24), (13, 20), (16, 33), (9, 10)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("nlat, nlon", SIZES)
def test_forward_and_inverse_match_harmonics_evaluated_by_scipy(grid, nlat, nlon):
    lmax = sht.exact_lmax(nlat, grid)
    mmax = min(lmax, nlon // 2 + 1)
    c = random_coefficients(lmax, mmax, nlon, batch=2)
    f = field_from(c, nlat, nlon, grid)
    coeffs = torch.view_as_complex(sht.forward(f, lmax, mmax, grid).contiguous())
    assert np.abs(coeffs.numpy() - c).max() < 1e-12
    back = sht.inverse(torch.view_as_real(torch.from_numpy(c)), nlat, nlon, grid)
    assert (back - f).abs().max() < 1e-12 * f.abs().max()


def test_legendre_functions_and_derivatives_match_scipy():
    ends = torch.tensor([0.0, math.pi], dtype=torch.float64)
    theta = torch.cat([ends, torch.rand(20, dtype=torch.float64) * math.pi])
    p, dp = sht.legendre(24, 20, theta, derivative=True)
    for m in range(20):
        for l in range(m, 24):
            y, grad = sph_harm_y(l, m, theta.numpy(), np.zeros(theta.numel()), diff_n=1)
            assert np.abs(p[m, l].numpy() - y.real).max() < 1e-12
            assert np.abs(dp[m, l].numpy() - grad[..., 0].real).max() < 1e-11


@pytest.mark.parametrize("grid", GRIDS)
def test_quadrature_is_exact_to_its_degree(grid):
    nlat = 11
    theta, weights = sht.quadrature(nlat, grid)
    assert torch.all(theta[1:] > theta[:-1])  # north first
    exact = nlat - 1 if grid == "equiangular" else 2 * nlat - 1
    for d in range(exact + 1):
        integral = 0.0 if d % 2 else 2.0 / (d + 1)
        assert abs((weights * theta.cos() ** d).sum().item() - integral) < 1e-14
    if grid == "equiangular":
        assert torch.allclose(theta, math.pi * torch.arange(nlat, dtype=torch.float64) / (nlat - 1), atol=0)


def test_torch_harmonics_agrees_when_installed():
    th = pytest.importorskip("torch_harmonics")
    for grid, (nlat, nlon) in (("equiangular", (17, 32)), ("legendre-gauss", (16, 32))):
        x = torch.randn(2, nlat, nlon, dtype=torch.float64)
        ours = RealSHT(nlat, nlon, grid=grid)
        theirs = th.RealSHT(nlat, nlon, lmax=ours.lmax, mmax=ours.mmax, grid=grid).double()
        assert (ours(x) - theirs(x)).abs().max() < 1e-12


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("nlat, nlon", [(8, 16), (7, 9)])
def test_gradients_are_the_adjoint_transforms(grid, nlat, nlon):
    lmax = sht.exact_lmax(nlat, grid)
    x = torch.randn(2, nlat, nlon, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, lmax, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sht.forward(t, lmax, 4, grid), (x,))
    assert torch.autograd.gradcheck(lambda t: sht.inverse(t, nlat, nlon, grid), (c,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("nlat, nlon", [(32, 64), (64, 128), (128, 256)])
def test_half_transforms_are_within_the_rounding_tolerance(dtype, grid, nlat, nlon):
    lmax = sht.exact_lmax(nlat, grid)
    mmax = min(lmax, nlon // 2)
    c = torch.from_numpy(random_coefficients(lmax, mmax, nlon, batch=4, seed=1))
    pairs = torch.view_as_real(c)
    f = sht.inverse(pairs, nlat, nlon, grid)  # float64, band-limited
    coeffs = sht.forward(f, lmax, mmax, grid, dtype=dtype)
    assert coeffs.dtype == dtype
    assert relative_error(coeffs, pairs) < tolerance(dtype, FORWARD_STAGES)
    assert relative_error(sht.inverse(pairs, nlat, nlon, grid, dtype=dtype), f) < tolerance(dtype, INVERSE_STAGES)
    round_trip = sht.inverse(coeffs, nlat, nlon, grid)
    assert relative_error(round_trip, f) < tolerance(dtype, FORWARD_STAGES + INVERSE_STAGES)


def test_modules_follow_torch_harmonics_shapes_and_the_policy():
    assert (RealSHT(33, 64).lmax, RealSHT(33, 64).mmax) == (17, 17)
    assert (RealSHT(32, 64, grid="legendre-gauss").lmax, RealSHT(32, 64, grid="legendre-gauss").mmax) == (32, 32)
    forward, inverse = RealSHT(16, 32, lmax=8, mmax=6), InverseRealSHT(16, 32, lmax=8, mmax=6)
    x = torch.randn(2, 3, 16, 32)
    c = forward(x)
    assert c.shape == (2, 3, 8, 6) and c.dtype == torch.complex64
    assert inverse(c).shape == (2, 3, 16, 32) and inverse(c).dtype == torch.float32
    assert forward(x.double()).dtype == torch.complex128
    for mode in ("mixed", "half"):
        forward.precision = inverse.precision = Precision(mode, "bfloat16")
        c = forward(x)
        assert c.dtype == torch.complex64
        assert torch.equal(torch.view_as_real(c), torch.view_as_real(c).bfloat16().float())  # half values
        assert inverse(c).dtype == torch.bfloat16
    assert list(forward.parameters()) == [] and list(forward.buffers()) == []


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RealSHT(16, 32, grid="healpix"), "grid='healpix'"),
        (lambda: RealSHT(16, 32, lmax=17), r"lmax=17 is too fine .* nlat >= 17"),
        (lambda: RealSHT(16, 32, grid="legendre-gauss", lmax=17), "lmax=17"),
        (lambda: RealSHT(16, 32, mmax=18), "mmax=18"),
        (lambda: RealSHT(16, 32, norm="schmidt"), "norm='schmidt'"),
        (lambda: RealSHT(16, 32)(torch.zeros(2, 16, 30)), r"\(\.\.\., nlat, nlon\)"),
        (lambda: InverseRealSHT(16, 32)(torch.zeros(8, 8)), "complex"),
        (lambda: SphericalConv(2, 2, (8, 8))(torch.zeros(1, 2, 7, 32)), r"fewer than n_modes\[0\]=8"),
        (lambda: SphericalConv(2, 2, (8, 8))(torch.zeros(1, 2, 8, 12)), "mmax=8 is too fine"),
        (lambda: SphericalConv(2, 2, (8, 8, 8)), "n_modes"),
        (lambda: SFNO(1, 1, (8, 8), grid="gaussian"), "grid='gaussian'"),
    ],
)
def test_bad_input_gets_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def independent_conv(conv: SphericalConv, x: torch.Tensor) -> torch.Tensor:
    """``SHT⁻¹(R_l · SHT(x)) + bias`` in float64 by explicit quadrature against SciPy's harmonics."""
    nlat, nlon = x.shape[2:]
    lmax, mmax = conv.n_modes
    theta, phi = points(nlat, nlon, conv.grid)
    area = (sht.quadrature(nlat, conv.grid)[1].numpy() * 2 * np.pi / nlon)[:, None]
    f = x.detach().numpy()
    weight = conv.complex_weight.detach().numpy().astype(np.complex128)
    out = np.zeros((x.shape[0], conv.out_channels, nlat, nlon))
    for l in range(lmax):
        for m in range(min(l + 1, mmax)):
            y = sph_harm_y(l, m, theta, phi)
            c = (f * np.conj(y) * area).sum((-2, -1))  # (batch, in)
            product = np.einsum("bi,io->bo", c, weight[:, :, l])
            if m == 0:  # the inverse keeps Re at m = 0 (a real field)
                product = product.real
            out += (1 if m == 0 else 2) * np.real(product[:, :, None, None] * y)
    return torch.from_numpy(out) + conv.bias.detach().double().view(-1, 1, 1)


@pytest.mark.parametrize("grid, size", [("equiangular", (13, 20)), ("legendre-gauss", (8, 15))])
@pytest.mark.parametrize("factorization", [None, "cp", "tucker"])
def test_spherical_conv_in_float64_matches_an_independent_reference(grid, size, factorization):
    conv = SphericalConv(3, 2, (6, 5), grid=grid, factorization=factorization, rank=0.6).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    assert relative_error(conv(x), independent_conv(conv, x)) < 1e-12
    assert conv.complex_weight.shape == (3, 2, 6)


def test_degrees_beyond_the_exact_quadrature_are_the_aliased_quadrature():
    """``lmax`` up to ``nlat`` on an equiangular grid: the same quadrature formulas, no longer a projection."""
    conv = SphericalConv(3, 2, (13, 8), grid="equiangular").double()
    x = torch.randn(2, 3, 13, 20, dtype=torch.float64)
    assert relative_error(conv(x), independent_conv(conv, x)) < 1e-12
    f = field_from(random_coefficients(7, 7, 20), 13, 20, "equiangular")  # degrees < 7 = the exact lmax
    exact = sht.inverse(sht.forward(f, 7, 7, "equiangular"), 13, 20, "equiangular")
    aliased = sht.inverse(sht.forward(f, 13, 8, "equiangular"), 13, 20, "equiangular")
    assert relative_error(exact, f) < 1e-13
    assert 1e-3 < relative_error(aliased, f) < 5e-2


def test_spherical_conv_gradcheck_in_float64():
    conv = SphericalConv(2, 2, (4, 3), grid="legendre-gauss").double()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(conv, {"weight": w}, (x,)),
                                    (conv.weight.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("mode", ["mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid", GRIDS)
def test_spherical_conv_in_low_precision_is_within_the_rounding_tolerance(mode, dtype, grid):
    conv = SphericalConv(8, 8, (16, 16), grid=grid)
    with torch.no_grad():
        conv.bias.normal_()
    ref = copy.deepcopy(conv).double()
    conv.precision = Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype)
    half = conv.precision.half_dtype
    x = torch.randn(3, 8, 32, 64, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    y, y64 = conv(x), ref(x64)
    assert y.dtype == half
    assert relative_error(y, y64) < tolerance(half, conv_stages(mode))
    probe = torch.randn_like(y64)
    gx, gw = torch.autograd.grad((y.float() * probe).sum(), (x, conv.weight))
    rx, rw = torch.autograd.grad((y64 * probe).sum(), (x64, ref.weight))
    assert relative_error(gx, rx) < tolerance(half, conv_stages(mode) + 1)
    assert relative_error(gw, rw) < tolerance(half, conv_stages(mode) + 1)


@pytest.mark.parametrize("mode", ["mixed", "half"])
def test_only_half_tensors_are_saved_for_backward(mode):
    conv = SphericalConv(4, 4, (8, 8), precision=mode)
    x = torch.randn(2, 4, 16, 32, dtype=torch.float16, requires_grad=True)
    assert saved_dtypes(lambda: conv(x)) == {torch.float16}



@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("grid, size", [("equiangular", (65, 128)), ("legendre-gauss", (48, 90))])
def test_cuda_matches_float64_and_the_cpu_emulation(mode, dtype, grid, size):
    conv = SphericalConv(16, 16, (24, 24), grid=grid)
    ref = copy.deepcopy(conv).double()
    conv.precision = Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype)
    x = torch.randn(4, 16, *size)
    tol = tolerance(conv.precision.half_dtype, conv_stages(mode))
    on_cpu = conv(x)
    on_gpu = conv.to(CUDA)(x.to(CUDA)).cpu()
    assert relative_error(on_gpu, ref(x.double())) < tol
    assert relative_error(on_gpu, on_cpu) < 2 * tol

def sfno_and_reference(**kwargs):
    model = SFNO(2, 3, (8, 8), hidden_channels=8, n_layers=2, **kwargs)
    return model, copy.deepcopy(model).double()


@pytest.mark.parametrize("mode", ["full", "amp", "mixed", "half"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sfno_in_every_mode_is_within_the_rounding_tolerance(mode, dtype):
    model, ref = sfno_and_reference()
    model.set_precision(Precision(mode, dtype, stabilizer=None) if mode == "half" else Precision(mode, dtype))
    x = torch.randn(2, 2, 16, 32, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    y, y64 = model(x), ref(x64)
    assert y.dtype == torch.float32
    if mode == "full":
        assert relative_error(y, y64) < 1e-5
        return
    half = model.precision.half_dtype
    stages = len(model.blocks) * (conv_stages(mode) + 6) + 4  # per block: + skip, MLP, gate, sums
    kappa = last_layer_amplification(ref, x64)
    assert relative_error(y, y64) < kappa * tolerance(half, stages)
    gx, = torch.autograd.grad(y.square().sum(), (x,))
    rx, = torch.autograd.grad(y64.square().sum(), (x64,))
    assert relative_error(gx, rx) < kappa * tolerance(half, stages + 1)


def test_sfno_is_rebuilt_from_its_arguments_and_runs_on_a_finer_grid():
    model = SFNO(3, 2, (8, 6), hidden_channels=8, n_layers=2, grid="legendre-gauss", factorization="tucker",
                 rank=0.5)
    spec = NormalizedOperator(model).spec()
    assert spec["kind"] == "sfno"
    rebuilt = NormalizedOperator.from_spec(spec).operator
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 12, 24)
    assert torch.equal(rebuilt(x), model(x))
    assert build_operator("sfno", 3, 2, (8, 6)).n_modes == (8, 6)
    assert model(torch.randn(1, 3, 24, 48)).shape == (1, 2, 24, 48)


def test_sfno_under_autocast_keeps_its_policy():
    model, ref = sfno_and_reference()
    x = torch.randn(2, 2, 16, 32)
    with torch.no_grad():
        with torch.autocast("cpu", torch.bfloat16):
            out = model(x)
        assert model.precision == Precision("full")
        model.set_precision(Precision("amp", "bfloat16"))
        assert torch.equal(out, model(x))


def test_sphere_loss_integrates_over_the_sphere():
    loss, absolute = SphericalL2Loss("legendre-gauss"), SphericalL2Loss("legendre-gauss", relative=False)
    theta, phi = points(10, 20, "legendre-gauss")
    y = torch.from_numpy(np.real(sph_harm_y(3, 2, theta, phi)))[None, None]  # ∫ y² = 1/2
    assert abs(absolute(torch.zeros_like(y), y).item() - math.sqrt(0.5 / (4 * math.pi))) < 1e-12
    assert abs(loss(1.5 * y, y).item() - 0.5) < 1e-12
    assert loss.name == "l2"
    fields = torch.cat([3000 + 400 * y, 1e-5 * y], dim=1)  # a height and a vorticity
    normalizer = UnitGaussianNormalizer.fit(fields)
    standardised = SphericalL2Loss("legendre-gauss", normalizer=normalizer)
    vorticity_lost = torch.cat([fields[:, :1], torch.zeros_like(y)], dim=1)
    # standardised, each channel counts alike: the vorticity is half of the norm (both have mean ~0, std ~1)
    norms = [absolute(normalizer.encode(fields)[:, c:c + 1], torch.zeros_like(y)).item() for c in (0, 1)]
    vorticity_share = norms[1] / math.hypot(*norms)
    assert abs(standardised(vorticity_lost, fields).item() - vorticity_share) < 1e-12
    assert 0.5 < vorticity_share < 0.9
    assert loss(vorticity_lost, fields).item() < 1e-8  # in physical units the height hides it


def test_a_tiny_sfno_learns_a_spherical_operator_in_half_precision():
    """Learn x -> smoothed x (coefficients scaled by 1/(1 + l)) from a few samples; the loss falls."""
    torch.manual_seed(0)
    c = torch.from_numpy(random_coefficients(8, 8, 32, batch=16, seed=3))
    l = torch.arange(8, dtype=torch.float64)[:, None]
    x = sht.inverse(torch.view_as_real(c), 16, 32, "equiangular").float().unsqueeze(1)
    y = sht.inverse(torch.view_as_real(c / (1 + l)), 16, 32, "equiangular").float().unsqueeze(1)
    model = SFNO(1, 1, (8, 8), hidden_channels=8, n_layers=2, precision="half")
    loss_fn = SphericalL2Loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_exported_from_the_package():
    assert {"RealSHT", "InverseRealSHT", "SFNO", "SphericalConv"} <= set(mpno.__all__)


def smooth_field():
    theta, phi = points(65, 128, "equiangular")
    return torch.from_numpy(np.exp(np.sin(theta) * np.cos(phi)) + np.cos(theta) ** 3)[None, None]


def test_half_sht_precision_error_is_within_the_rounding_bound():
    from mpno.bounds import sphere

    f = smooth_field()
    exact = sphere.coefficients(f, 16, 16, "equiangular")
    for dtype in (torch.float16, torch.bfloat16):
        assert sphere.precision_error(f, 16, 16, "equiangular", dtype) < tolerance(
            dtype, FORWARD_STAGES) * exact.abs().norm().item()
        # mixed: a float32 transform, then one rounding of each coefficient
        mixed = sphere.precision_error(f, 16, 16, "equiangular", dtype, mode="mixed")
        assert mixed <= 1.001 * UNIT_ROUNDOFF[dtype] * exact.abs().max().item()


def test_discretisation_error_by_coarsening_predicts_the_true_error():
    """|cos θ + 0.3|^2.5 cos φ has a kink along a latitude: coefficients converge algebraically."""
    from mpno.bounds import sphere

    def field(nlat):
        theta, phi = points(nlat, 2 * (nlat - 1), "equiangular")
        return torch.from_numpy(np.abs(np.cos(theta) + 0.3) ** 2.5 * np.cos(phi))[None, None]

    levels = sphere.coarsenings(field(129), 8, 8)
    assert [t.shape[-2:] for t in levels] == [(129, 256), (65, 128), (33, 64), (17, 32)]
    found = sphere.discretization(levels, 8, 8, "equiangular")
    true = (sphere.coefficients(levels[0], 8, 8, "equiangular")
            - sphere.coefficients(field(1025), 8, 8, "equiangular")).abs().max().item()
    assert -4 < found.rate < -2
    assert true / 1.5 < found.error < 1.5 * true
    with pytest.raises(ValueError, match="nests only"):
        sphere.coarsenings(levels[0][..., 1:, :], 8, 8)
