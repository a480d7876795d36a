"""Factorised spectral weights: planned contraction against the reconstructed dense weight."""

import math

import pytest
import torch

import mpno
from mpno import Precision
from mpno.nn.factorized import factorized_weight
from mpno.nn.spectral import contract_dense
from mpno.ops import contraction
from mpno.ops.contraction import complex_einsum
from mpno.ops.transforms import kept_shape
from mpno.run import profiling
from one_shot import one_shot_einsum
from reference import CUDA, relative_error, tolerance

SHAPES = {1: (6, 5, 9), 2: (6, 5, 8, 5), 3: (4, 5, 4, 6, 3)}  # (in, out, *kept)


def operands(weight, batch=3, dtype=torch.float64):
    coeffs = torch.randn(batch, weight.shape[0], *weight.shape[2:], 2, dtype=dtype, requires_grad=True)
    factors = [f.detach().to(dtype).requires_grad_() for f in weight.factors]
    return coeffs, factors


@pytest.mark.parametrize("factorization", ["cp", "tucker", "tt"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_planned_contraction_equals_the_reconstructed_weight_in_float64(factorization, ndim):
    weight = factorized_weight(factorization, SHAPES[ndim], 0.5)
    coeffs, factors = operands(weight)
    planned = complex_einsum(weight.contraction_equation(), coeffs, *factors)
    dense = complex_einsum(weight.reconstruction_equation(), *factors)
    direct = contract_dense(coeffs, dense)
    assert relative_error(planned, direct) < 1e-10
    probe = torch.randn_like(planned)
    grads = torch.autograd.grad((planned * probe).sum(), [coeffs, *factors])
    expected = torch.autograd.grad((direct * probe).sum(), [coeffs, *factors])
    for g, e in zip(grads, expected):
        assert relative_error(g, e) < 1e-10


def test_the_naive_one_shot_contraction_agrees_too():
    weight = factorized_weight("tucker", SHAPES[2], 0.5)
    coeffs, factors = operands(weight)
    planned = complex_einsum(weight.contraction_equation(), coeffs, *factors)
    naive = one_shot_einsum(weight.contraction_equation(), coeffs, *factors)
    assert relative_error(naive, planned) < 1e-12


@pytest.mark.parametrize("factorization", ["cp", "tucker", "tt"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_half_planned_contraction_is_within_the_rounding_tolerance(factorization, dtype, ndim):
    weight = factorized_weight(factorization, SHAPES[ndim], 0.5)
    coeffs, factors = operands(weight)
    equation = weight.contraction_equation()
    exact = complex_einsum(equation, coeffs, *factors)
    half = complex_einsum(equation, coeffs.to(dtype), *[f.to(dtype) for f in factors])
    assert half.dtype == dtype
    # Roundings: the coefficients, each factor, and each pairwise result.
    steps = len(factors)
    stages = 1 + len(factors) + steps
    assert relative_error(half, exact) < tolerance(dtype, stages)
    probe = torch.randn_like(exact)
    g_half = torch.autograd.grad((half.double() * probe).sum(), coeffs)[0]
    g_exact = torch.autograd.grad((exact * probe).sum(), coeffs)[0]
    assert relative_error(g_half, g_exact) < tolerance(dtype, stages + 1)


@pytest.mark.parametrize("factorization", ["cp", "tucker", "tt"])
def test_factorised_layer_equals_its_reconstruction_end_to_end(factorization):
    conv = mpno.SpectralConv(4, 4, (8, 6), factorization=factorization, rank=0.3).double()
    x = torch.randn(2, 4, 16, 12, dtype=torch.float64)
    y = conv(x)
    conv.implementation = "reconstructed"
    assert relative_error(y, conv(x)) < 1e-10


def test_plan_is_computed_once_per_shape(monkeypatch):
    calls = []
    search = contraction._search_path
    monkeypatch.setattr(contraction, "_search_path", lambda *a: calls.append(a) or search(*a))
    contraction.plan.cache_clear()
    model = mpno.TFNO(1, 1, (8, 8), hidden_channels=4, n_layers=2, factorization="cp", rank=0.5)
    model(torch.randn(2, 1, 16, 16))
    first = len(calls)
    assert first >= 1
    model(torch.randn(2, 1, 16, 16))
    model(torch.randn(2, 1, 32, 16))  # a new grid, same kept modes: same shapes, no new plan
    assert len(calls) == first
    model(torch.randn(5, 1, 16, 16))  # a new batch size is a new shape
    assert len(calls) > first


@pytest.mark.parametrize("factorization", ["cp", "tucker", "tt"])
def test_initial_output_scale_matches_the_dense_layer(factorization):
    """E|W|² per entry equals the dense rule, so the mean output energy matches (30 inits)."""
    x = torch.randn(4, 8, 16, 16)
    energy = {}
    for kind in (None, factorization):
        samples = []
        for seed in range(30):
            torch.manual_seed(seed)
            conv = mpno.SpectralConv(8, 8, (8, 8), bias=False, factorization=kind, rank=0.2)
            samples.append(conv(x).pow(2).mean().item())
        energy[kind] = sum(samples) / len(samples)
    assert 0.75 < energy[factorization] / energy[None] < 1.33


def test_tfno_keeps_at_most_six_percent_of_the_dense_spectral_parameters():
    kwargs = dict(n_modes=(32, 32), hidden_channels=64, n_layers=4)
    dense = mpno.FNO(1, 1, **kwargs)
    for factorization in ("tucker", "cp", "tt"):
        tfno = mpno.TFNO(1, 1, factorization=factorization, rank=0.05, **kwargs)
        kept = sum(b.conv.factorized.num_parameters for b in tfno.blocks)
        full = sum(b.conv.weight.numel() // 2 for b in dense.blocks)
        assert kept <= 0.06 * full, factorization


@pytest.mark.parametrize("factorization", ["cp", "tucker"])
def test_planned_half_contraction_is_memory_lean_at_the_benchmark_config(factorization):
    """Largest intermediate (counted on meta tensors, the CUDA path) ≤ ¼ of the one-shot
    einsum's and ≤ the dense weight's, for the paper's TFNO setting."""
    kept = kept_shape((32, 32))
    weight = factorized_weight(factorization, (64, 64, *kept), 0.05)
    coeffs = torch.empty(8, 64, *kept, 2, device="meta", dtype=torch.float16)
    factors = [f.detach().to("meta", torch.float16) for f in weight.factors]
    equation = weight.contraction_equation()
    _, planned = profiling.operator_costs(lambda: complex_einsum(equation, coeffs, *factors))
    _, naive = profiling.operator_costs(lambda: one_shot_einsum(equation, coeffs, *factors))
    dense_weight_bytes = math.prod(weight.shape) * 2 * 2
    assert planned <= naive / 4
    assert planned <= dense_weight_bytes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factorization": "svd"}, "factorization='svd'.*'cp', 'tucker', 'tt'"),
        ({"factorization": "cp", "rank": 1e-6}, "rank=1e-06 rounds to a CP rank of 0"),
        ({"factorization": "tucker", "rank": 1e-7}, "rank=1e-07 rounds to a Tucker rank of 0"),
        ({"factorization": "tucker", "rank": 1.5}, r"rank=1.5 .* must lie in \(0, 1\]"),
        ({"factorization": "tucker", "rank": (9, 9, 9, 9)}, "exceeds the weight's shape"),
        ({"factorization": "cp", "rank": 10_000}, "more than the dense tensor"),
        ({"factorization": "tt", "rank": 10_000}, "more than the dense tensor"),
        ({"factorization": "tt", "rank": (2,)}, "3 positive ints"),
        ({"factorization": "cp", "implementation": "magic"}, "implementation='magic'"),
    ],
)
def test_bad_factorization_arguments_get_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mpno.SpectralConv(4, 4, (8, 8), **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["mixed", "half"])
@pytest.mark.parametrize("grid", [(128, 128), (96, 96)])
def test_tfno_cp_on_cuda_matches_full_precision(mode, grid):
    """The paper's TFNO setting: half output against the same function in float32."""
    torch.manual_seed(0)
    model = mpno.TFNO(1, 1, (32, 32), hidden_channels=64, factorization="cp", rank=0.05).to(CUDA)
    x = torch.randn(8, 1, *grid, device=CUDA)
    policy = Precision(mode)
    with torch.no_grad():
        model.set_precision(Precision("full", stabilizer=policy.stabilizer))
        reference = model(x)
        model.set_precision(policy)
        assert relative_error(model(x), reference) < 20 * tolerance(torch.float16, 1)

