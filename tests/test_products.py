"""Half-precision products: tensor-core numerics, emulated on the CPU."""

import pytest
import torch

from mpno.ops import products
from mpno.precision import UNIT_ROUNDOFF
from reference import saved_dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_matmul_is_the_rounded_exact_product_of_half_operands(dtype):
    a = torch.randn(3, 40, 200).to(dtype)
    b = torch.randn(200, 30).to(dtype)
    out = products.matmul(a, b)
    exact = a.double() @ b.double()
    assert out.dtype == dtype
    # One rounding of the result, plus float32 accumulation error (200 terms, 2^-24 each).
    magnitude = a.double().abs() @ b.double().abs()
    bound = UNIT_ROUNDOFF[dtype] * exact.abs() + 200 * 2.0**-24 * magnitude
    assert ((out.double() - exact).abs() <= bound + 1e-30).all()


def test_matmul_overflows_to_inf_like_a_tensor_core():
    a = torch.full((1, 64), 1100.0, dtype=torch.float16)
    b = torch.ones(64, 1, dtype=torch.float16)
    assert torch.isinf(products.matmul(a, b)).all()  # 70400 > 65504
    assert torch.isfinite(products.matmul(a * 0.9, b)).all()  # 63360


def test_einsum_matches_float64_and_gradients_are_half():
    a = torch.randn(4, 8, 6, dtype=torch.float16, requires_grad=True)
    b = torch.randn(8, 5, 6, dtype=torch.float16, requires_grad=True)
    out = products.einsum("bik,iok->bok", a, b)
    exact = torch.einsum("bik,iok->bok", a.double(), b.double())
    assert (out.double() - exact).abs().max() <= 4 * UNIT_ROUNDOFF[torch.float16] * exact.abs().max()
    grad = torch.randn_like(out)
    ga, gb = torch.autograd.grad(out, (a, b), grad)
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ra, rb = torch.autograd.grad(torch.einsum("bik,iok->bok", a64, b64), (a64, b64), grad.double())
    assert ga.dtype == gb.dtype == torch.float16
    for g, r in ((ga, ra), (gb, rb)):
        assert (g.double() - r).abs().max() <= 4 * UNIT_ROUNDOFF[torch.float16] * r.abs().max()


def test_only_half_tensors_are_saved_for_backward():
    a = torch.randn(16, 16, dtype=torch.float16, requires_grad=True)
    b = torch.randn(16, 16, dtype=torch.float16, requires_grad=True)
    assert saved_dtypes(lambda: products.matmul(a, b)) == {torch.float16}


def test_mixed_dtypes_are_refused():
    with pytest.raises(TypeError, match="share a dtype"):
        products.matmul(torch.ones(2, 2, dtype=torch.float16), torch.ones(2, 2))
