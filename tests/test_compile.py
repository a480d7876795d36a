"""torch.compile: every operator in every precision, one graph (no breaks), forward and backward as in eager mode."""

import numpy as np
import pytest
import torch

import mpno
from mpno.data import potential_flow
from mpno.data.pointclouds import PointClouds
from mpno.precision import UNIT_ROUNDOFF
from mpno.run.profiling import saved_tensor_bytes
from reference import relative_error

POLICIES = ["full", "mixed/float16", "mixed/bfloat16", "half/float16", "half/bfloat16"]


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Each test compiles its own model: the compiler's caches are per code object, shared by all models, and
    would reach its recompilation limit over this file's thirty models."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()

OPERATORS = ["fno", "tfno-cp", "tfno-tucker", "tfno-tt", "sfno", "gino", "fno-gno", "uno"]


def _clouds(sizes=(30, 20)) -> PointClouds:
    clouds = []
    for i, size in enumerate(sizes):
        s = potential_flow.sample(0, i, size, 0.3, 0.9)
        features = np.concatenate([s["normals"], np.broadcast_to(s["flow"], (size, 3))], axis=1)
        clouds.append(PointClouds(torch.tensor(s["points"]).float(), torch.tensor(features).float(), (size,)))
    return PointClouds.cat(clouds)


def operator_and_input(name: str, precision: str):
    """A small operator of kind ``name`` in ``precision`` and an input for it."""
    policy = mpno.Precision.from_string(precision)
    small = dict(hidden_channels=4, n_layers=1, precision=policy)
    if name in ("gino", "fno-gno"):
        operator = mpno.GINO if name == "gino" else mpno.FNOGNO
        model = operator(6, 1, (4, 4, 4), latent_grid=6, radius=0.5, kernel_hidden=4, **small)
        x = _clouds()
        x.neighbors = model._batch_neighborhoods(x)
        return model, x
    if name == "sfno":
        return mpno.SFNO(1, 1, (6, 6), **small), torch.randn(2, 1, 12, 24)
    if name == "uno":
        return mpno.UNO(1, 1, (6, 6), **{**small, "n_layers": 3}), torch.randn(2, 1, 12, 12)
    if name.startswith("tfno"):
        return mpno.TFNO(1, 1, (6, 6), factorization=name.split("-")[1], rank=0.5, **small), torch.randn(2, 1, 12, 12)
    return mpno.FNO(1, 1, (6, 6), **small), torch.randn(2, 1, 12, 12)


def output_and_gradients(model, x, called=None):
    """``called(x)`` (default ``model(x)``) and the gradients of the model's parameters of ``Σ out²``."""
    model.zero_grad(set_to_none=True)
    out = (model if called is None else called)(x)
    out.float().square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def tolerance(precision: str) -> float:
    """One unit roundoff of the policy's half dtype; float32 kernels may sum in another order (1e-5)."""
    if precision == "full":
        return 1e-5
    return UNIT_ROUNDOFF[mpno.Precision.from_string(precision).half_dtype]


def test_one_graph_forward_and_backward_without_inductor():
    """A quick check in the default run: no graph break (``fullgraph`` raises on one), and the same numbers."""
    torch.manual_seed(0)
    model, x = operator_and_input("fno", "mixed/float16")
    eager = output_and_gradients(model, x)
    compiled = output_and_gradients(model, x, mpno.compiled(model, backend="aot_eager"))
    assert relative_error(compiled[0], eager[0]) == 0
    assert all(relative_error(c, e) == 0 for c, e in zip(compiled[1], eager[1]))


@pytest.mark.slow
@pytest.mark.parametrize("precision", POLICIES)
@pytest.mark.parametrize("name", OPERATORS)
def test_compiled_matches_eager(name, precision):
    """Inductor, with the rounding points kept (``mpno.compiled``): one graph, outputs and gradients within one
    unit roundoff of eager mode (on the CPU they agree to the last bit in the half modes)."""
    torch.manual_seed(0)
    model, x = operator_and_input(name, precision)
    eager = output_and_gradients(model, x)
    compiled = output_and_gradients(model, x, mpno.compiled(model))
    limit = tolerance(precision)
    assert relative_error(compiled[0], eager[0]) <= limit
    for c, e in zip(compiled[1], eager[1]):
        assert relative_error(c, e) <= limit


@pytest.mark.parametrize("precision", ["mixed/float16", "half/bfloat16"])
def test_compiled_saves_half_tensors_for_backward(precision):
    """Compiled, a low precision keeps the memory it promises: the bytes saved for backward are at most 0.55×
    those of compiled ``full`` and at most eager mode's in the same precision (the partitioner is inductor's;
    without the checkpoint in :func:`mpno.ops.products._emulate` it keeps the float32 upcasts on the CPU)."""
    torch.manual_seed(0)
    model = mpno.FNO(1, 1, (8, 8), hidden_channels=16, n_layers=2)
    x = torch.randn(4, 1, 32, 32)

    def saved(policy, compile_):
        model.set_precision(mpno.Precision.from_string(policy))
        torch._dynamo.reset()
        run = mpno.compiled(model, backend="aot_eager_decomp_partition") if compile_ else model
        run(x).float().square().sum().backward()  # the first call compiles
        return saved_tensor_bytes(lambda: run(x))

    compiled = saved(precision, True)
    assert compiled <= 0.55 * saved("full", True)
    assert compiled <= saved(precision, False)
