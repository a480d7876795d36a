"""The error budget: bounds hold on analytic functions, estimators find the right rates, audits judge."""

import json
import math

import pytest
import torch

import mpno
from mpno import data
from mpno.run import cli
from mpno.bounds import measure, theory
from mpno.bounds.audit import audit_data, audit_model, choose_precision
from mpno.precision import UNIT_ROUNDOFF, Precision
from reference import bandlimited

RESOLUTIONS = (16, 32, 64, 128, 256, 512)
MODES = 8  # kept frequencies per dimension: |k| ≤ 4


def grid_points(n, d):
    axis = torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(*[axis] * d, indexing="ij")


def saw_coefficients(k):
    """v(x) = x on [0, 1): 1/2 at k = 0, i / (2πk) otherwise."""
    return torch.where(k == 0, torch.complex(torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)),
                       1j / (2 * math.pi * torch.where(k == 0, 1, k)))


def step_coefficients(k, a=0.3):
    """v(x) = 1 for x < a on [0, 1): a at k = 0, (1 − e^{−2πika}) / (2πik) otherwise."""
    safe = torch.where(k == 0, 1, k).double()
    return torch.where(k == 0, torch.tensor(a, dtype=torch.complex128),
                       (1 - torch.exp(-2j * math.pi * safe * a)) / (2j * math.pi * safe))


def kept_frequencies(d):
    """The kept (k_1, ..., k_d) in mpno's order for n_modes = MODES per dimension."""
    axes = [torch.arange(-(MODES // 2), MODES - MODES // 2)] * (d - 1) + [torch.arange(MODES // 2 + 1)]
    return torch.meshgrid(*axes, indexing="ij")


# name -> (field(*coords), exact coefficients on the kept grid (or None: from a fine grid), B, M, smooth)
def functions(d):
    ks = kept_frequencies(d)
    if d == 1:
        return {
            "smooth": (lambda x: torch.exp(torch.sin(2 * math.pi * x)), None, math.e, 2 * math.pi * math.e),
            "sawtooth": (lambda x: x, saw_coefficients(ks[0]), 1.0, 1.0),
            "jump": (lambda x: (x < 0.3).double(), step_coefficients(ks[0]), 1.0, math.inf),
        }
    return {
        "smooth": (lambda x, y: torch.exp(torch.sin(2 * math.pi * x) + torch.cos(2 * math.pi * y)), None,
                   math.e**2, 2 * math.pi * math.sqrt(2) * math.e**2),
        "sawtooth": (lambda x, y: x * y, saw_coefficients(ks[0]) * saw_coefficients(ks[1]), 1.0, math.sqrt(2)),
        "jump": (lambda x, y: ((x < 0.3) & (y < 0.6)).double(), step_coefficients(ks[0]) * step_coefficients(ks[1], 0.6),
                 1.0, math.inf),
    }


def sampled(fn, n, d):
    return fn(*grid_points(n, d))[None, None]


def measured_errors(fn, exact, d):
    """|ĉ_n(k) − ĉ(k)| for every kept k, at each resolution."""
    if exact is None:
        exact = measure.kept_coefficients(sampled(fn, 4096 if d == 1 else 512, d), (MODES,) * d)[0, 0]
    return {n: (measure.kept_coefficients(sampled(fn, n, d), (MODES,) * d)[0, 0] - exact).abs()
            for n in RESOLUTIONS}


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("name", ["smooth", "sawtooth", "jump"])
def test_every_measured_discretisation_error_is_within_its_bound(name, d):
    fn, exact, B, M = functions(d)[name]
    errors = measured_errors(fn, exact, d)
    ks = torch.stack(kept_frequencies(d), -1).reshape(-1, d)
    for n, error in errors.items():
        bounds = torch.tensor([theory.discretization_bound((n,) * d, k.tolist(), B, M) for k in ks])
        assert (error.reshape(-1) <= bounds).all(), (name, d, n)
        if name == "jump" and d == 1:  # not Lipschitz: the variation bound (V = 1) holds instead
            variation = torch.tensor([theory.variation_bound_1d(n, int(k), B, 1.0) for k in ks[:, 0]])
            assert (error.reshape(-1) <= variation).all()


@pytest.mark.parametrize("d", [1, 2])
def test_fitted_rates_are_minus_one_for_lipschitz_and_faster_for_smooth(d):
    rates = {}
    for name in ("sawtooth", "smooth"):
        fn, exact, _, _ = functions(d)[name]
        errors = {n: e.max().item() for n, e in measured_errors(fn, exact, d).items()}
        usable = [(n, e) for n, e in errors.items() if e > 1e-13]
        rates[name] = measure.fit_rate(*zip(*usable)) if len(usable) >= 2 else -math.inf
    assert abs(rates["sawtooth"] + 1) < 0.2
    assert rates["smooth"] < -3


@pytest.mark.parametrize("d", [1, 2])
def test_the_coarsening_estimator_finds_the_rate_and_the_error(d):
    fn, exact, _, _ = functions(d)["sawtooth"]
    n = 512 if d == 1 else 256
    estimate = measure.discretization(sampled(fn, n, d), (MODES,) * d)
    true_error = measured_errors(fn, exact, d)[n].max().item()
    assert abs(estimate.rate + 1) < 0.2
    assert 0.5 < estimate.error / true_error < 2


@pytest.mark.parametrize("d", [1, 2])
def test_precision_errors_are_within_their_bounds_and_grow_no_faster_than_log_n(d):
    fn, _, B, _ = functions(d)["smooth"]
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        errors = {}
        for n in RESOLUTIONS[: 6 if d == 1 else 5]:
            fields = sampled(fn, n, d)
            errors[n] = measure.precision_error(fields, (MODES,) * d, dtype)
            method = "dft" if dtype != torch.float32 else "fft"
            assert errors[n] <= theory.transform_precision_bound((n,) * d, B, dtype, method), (dtype, n)
        if dtype == torch.float16:
            per_log = [e / math.log2(n**d) for n, e in errors.items()]
            assert max(per_log) <= 2 * per_log[0]
        if dtype != torch.float32:  # mode mixed: a float32 transform, then coefficients rounded to dtype
            fields = sampled(fn, 64, d)
            mixed = measure.precision_error(fields, (MODES,) * d, dtype, mode="mixed")
            bound = theory.rounding_bound(B, dtype) + theory.transform_precision_bound((64,) * d, B, torch.float32, "fft")
            assert mixed <= bound


def test_layer_bound_holds_for_perturbed_coefficients():
    conv = mpno.SpectralConv(4, 3, (8, 8)).double()
    eps = 1e-3
    coeffs = torch.randn(2, 4, 8, 5, 2, dtype=torch.float64)
    noise = torch.randn_like(coeffs)
    noise = noise / noise.norm(dim=-1, keepdim=True) * eps  # each complex coefficient off by exactly eps
    shift = mpno.ops.transforms.inverse(conv.contract(coeffs + noise, torch.float64) - conv.contract(coeffs, torch.float64),
                                    (16, 16))
    bound = theory.spectral_layer_bound(eps, conv.weight, 16)
    assert shift.abs().max() <= bound
    assert shift.abs().max() >= 1e-3 * bound  # not vacuous


def rough_fields(count, n, scale=1.0):
    """Piecewise-constant random fields (Darcy-like): large discretisation error."""
    coarse = torch.randint(0, 2, (count, 1, 8, 8), generator=torch.Generator().manual_seed(0)).double()
    return scale * (3 + 9 * coarse.repeat_interleave(n // 8, -1).repeat_interleave(n // 8, -2)
                    .roll((n // 16 + 1, n // 16 + 1), (-2, -1)))


def test_choose_precision_follows_the_data_and_the_model():
    rough = rough_fields(8, 64)
    policy, reason = choose_precision(rough, (16, 16))
    assert policy == Precision("mixed", "float16") and "discretisation error" in reason
    model = mpno.NormalizedOperator(mpno.FNO(1, 1, (16, 16), hidden_channels=8, n_layers=2),
                                    mpno.UnitGaussianNormalizer.fit(rough.float()))
    policy, reason = choose_precision(rough, (16, 16), model=model)
    assert policy == Precision("mixed", "float16") and "the model's output error" in reason
    overflowing = rough_fields(8, 64, scale=1e4)  # coefficients up to 1.2e5 overflow float16
    assert choose_precision(overflowing, (16, 16))[0] == Precision("mixed", "bfloat16")
    # Band-limited data: coarsening loses nothing, so only their float32 storage rounding
    # is carried, and any half rounding of generic coefficients would dominate.
    smooth = bandlimited(2, 1, (64, 64), kmax=4)
    assert choose_precision(smooth, (16, 16))[0] == Precision("full")
    report = audit_data(smooth, (16, 16))
    assert report["discretization"]["storage_floor"]
    assert report["dtypes"]["float32"]["safe"] and not report["dtypes"]["float16"]["safe"]


def test_data_audit_report_has_the_promised_shape():
    report = audit_data(rough_fields(4, 64), (16, 16))
    assert set(report["dtypes"]) == {"float16", "bfloat16", "float32"}
    for row in report["dtypes"].values():
        assert {"discretization_error", "precision_error", "discretization_bound", "precision_bound",
                "ratio", "safe"} <= set(row)
        assert row["precision_error"] <= row["precision_bound"]
        assert row["ratio"] == pytest.approx(row["precision_error"] / row["discretization_error"])
    assert report["dtypes"]["float16"]["safe"]


def test_model_audit_flags_a_broken_half_path_and_passes_a_sound_one():
    torch.manual_seed(0)
    model = mpno.FNO(1, 1, (8, 8), hidden_channels=8, n_layers=2, skip="identity")
    broken = audit_model(model, rough_fields(2, 64, scale=3000), Precision("half", stabilizer=None))
    assert not broken["safe"] and broken["precision_error"] == math.inf
    lifting, first_block = broken["layers"][:2]
    assert lifting["relative_error"] < 1e-2 and first_block["relative_error"] == math.inf  # the transform overflowed
    stabilized = audit_model(model, rough_fields(2, 64, scale=3000), Precision("half"))
    assert stabilized["precision_error"] < 1e-2
    sound = audit_model(model, rough_fields(2, 32), Precision("mixed"))
    assert sound["safe"] and sound["precision_error"] < 1e-2
    assert [layer["layer"] for layer in sound["layers"]] == ["lifting", "block 1", "block 2", "projection"]
    assert model.precision == Precision("full")  # the audit works on a copy


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    darcy = data.generate("darcy", root / "darcy.h5", n=8, resolution=64, progress=False)[0]
    ns = data.generate("navier-stokes", root / "ns.h5", n=4, resolution=64, time=1.0, progress=False)[0]
    return darcy, ns


@pytest.mark.parametrize("which", [0, 1])
def test_bounds_command_on_generated_files(generated, which, tmp_path, capsys):
    plot = tmp_path / "bounds.png"
    assert cli.main(["bounds", str(generated[which]), "--json", "--plot", str(plot), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["dtypes"]) == {"float16", "bfloat16", "float32"}
    for row in report["dtypes"].values():
        assert set(row) >= {"discretization_error", "precision_error", "discretization_bound", "precision_bound",
                            "ratio", "safe"}
    assert "verdict" in out and plot.stat().st_size > 10_000


def test_bounds_audits_an_sfno_checkpoint_on_the_sphere(tmp_path, capsys):
    """mpno bounds on shallow-water data and an SFNO trained on them: the sphere's audit of the harmonic
    coefficients (mpno.bounds.sphere) on the grid's nested coarsenings, and the model's layers against float64."""
    from mpno.bounds import sphere
    from mpno.run.experiment import train
    from reference import quiet, tiny_config

    path = data.generate("shallow-water", tmp_path / "swe.h5", n=4, resolution=17, nlon=32, progress=False)[0]
    train(tiny_config(tmp_path, tmp_path / "run", model="sfno", data_train=str(path), data_test=[], n_modes=[4, 4],
                      hidden_channels=4, n_layers=1, epochs=1, batch_size=2, precision="mixed"), log=quiet)
    assert cli.main(["bounds", str(path), "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    fields = data.OperatorDataset(path)
    fields = torch.stack([fields[i][0] for i in range(len(fields))]).double()
    assert report["grid"] == [17, 32] and report["n_modes"] == [4, 4] and report["levels"] == [17, 9]
    expected = sphere.discretization(sphere.coarsenings(fields, 4, 4), 4, 4, "equiangular")
    assert report["discretization"]["estimate"] == pytest.approx(expected.error, rel=1e-12)
    scale = sphere.coefficients(fields, 4, 4, "equiangular").abs().max().item()
    assert report["dtypes"]["float32"]["precision_error"] < 20 * UNIT_ROUNDOFF[torch.float32] * scale
    assert report["dtypes"]["bfloat16"]["precision_error"] < 20 * UNIT_ROUNDOFF[torch.bfloat16] * scale
    assert report["dtypes"]["float16"]["discretization_bound"] is None  # no closed form on the sphere
    model = report["model"]
    assert model["precision"] == "mixed/float16"
    assert [layer["layer"] for layer in model["layers"]] == ["lifting", "block 1", "projection"]
    assert all(0 < layer["relative_error"] < 50 * UNIT_ROUNDOFF[torch.float16] for layer in model["layers"])
    assert 0 < model["precision_error"] < 50 * UNIT_ROUNDOFF[torch.float16]
