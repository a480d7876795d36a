"""Half-precision products: tensor-core numerics, emulated on the CPU or native bfloat16 where the CPU has it."""

import pytest
import torch

from mpno.ops import devices, products
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


def test_native_bfloat16_follows_the_detected_capability(monkeypatch):
    """bfloat16 products run natively exactly where the CPU multiplies bfloat16 (the detection decides);
    float16 products on the CPU are always emulated; other devices never are."""
    a = torch.ones(2, 2, dtype=torch.bfloat16)
    for native in (True, False):
        monkeypatch.setattr(products, "native_bfloat16_cpu", lambda native=native: native)
        assert products.emulated(a, a) is not native
        assert products.emulated(a.half(), a.half())
    assert not products.emulated(a.to("meta"), a.to("meta"))  # the meta device traces the CUDA path
    capabilities = torch.cpu.get_capabilities()
    expected = torch.backends.mkldnn.is_available() and bool(capabilities.get("avx512_bf16")
                                                            or capabilities.get("amx_bf16"))
    assert devices._cpu_multiplies_bfloat16() == expected



@pytest.mark.parametrize("reported", [{"amx_bf16": True, "amx_tile": True}, {"avx512_bf16": True}, {}, None])
def test_the_matrix_units_are_read_from_torch(monkeypatch, reported):
    """mpno bench reports the CPU's matrix units as PyTorch detects them (none where it cannot tell), and the
    native bfloat16 path follows them."""
    def capabilities():
        if reported is None:
            raise RuntimeError("unknown CPU")
        return reported

    monkeypatch.setattr(torch.cpu, "get_capabilities", capabilities)
    devices._cpu_multiplies_bfloat16.cache_clear()
    try:
        units = devices.cpu_matrix_units()
        assert units == {unit: bool((reported or {}).get(unit)) for unit in devices.MATRIX_UNITS}
        native = torch.backends.mkldnn.is_available() and bool(reported)
        assert devices._cpu_multiplies_bfloat16() == native
    finally:
        devices._cpu_multiplies_bfloat16.cache_clear()

def _cancelling_sums(n: int = 4098, columns: int = 16):
    """bfloat16 operands whose products sum, with cancellation, to bfloat16 numbers: (1, n) @ (n, columns).

    Column ``j`` holds ``2^(8+j%4)``, then ``n - 2`` small terms of ±1 or ±2, then the
    first term's negative: an accumulation in bfloat16 (8 significant bits) loses
    every small term once the partial sum is that large and ends near 0; float32
    accumulates them exactly.
    """
    gen = torch.Generator().manual_seed(0)
    small = torch.randint(1, 3, (n - 2, columns), generator=gen).double()
    small[: (n - 2) // 2] *= -1  # mostly cancelling, so the exact sums are small and of few bits
    small[0] += (small.sum(0) % 2 != 0).double() * torch.sign(small[0])  # even sums: exact in bfloat16
    big = 2.0 ** (8 + torch.arange(columns) % 4)
    b = torch.cat([big[None], small, -big[None]]).to(torch.bfloat16)
    a = torch.ones(1, n, dtype=torch.bfloat16)
    return a, b


@pytest.mark.skipif(not devices.native_bfloat16_cpu(), reason="this CPU does not multiply bfloat16 natively")
def test_native_bfloat16_products_accumulate_in_float32_and_round_once():
    """On adversarial long sums with cancellation, the native products agree with the float32 emulation
    within one bfloat16 rounding (here exactly, the sums being bfloat16 numbers), where a bfloat16
    accumulation would be far off; for matmul, einsum (batched) and the pointwise convolution."""
    a, b = _cancelling_sums()
    exact = a.double() @ b.double()
    assert (exact.abs() < 2 ** 8).all() and (exact.to(torch.bfloat16).double() == exact).all()
    partial = torch.zeros(b.shape[1], dtype=torch.bfloat16)
    for row in b:  # what accumulating in bfloat16 would give
        partial = partial + row
    assert (partial.double() - exact[0]).abs().max() > 64

    emulated = products._EmulatedHalfProduct.apply(torch.matmul, a, b)
    native = products.matmul(a, b)
    assert not products.emulated(a, b)
    assert torch.equal(native, emulated) and torch.equal(native.double(), exact)

    batched = products.einsum("kij,kjl->kil", a.expand(3, *a.shape), b.expand(3, *b.shape))
    assert torch.equal(batched.double(), exact.expand(3, *exact.shape))
    conv = products.pointwise(b.unsqueeze(0), a)  # n input channels, one output channel, at `columns` points
    assert torch.equal(conv.double()[0], exact)

    # Random operands: within one bfloat16 rounding of the emulation (plus float32 summation order).
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(64, 2048, generator=gen).to(torch.bfloat16)
    b = torch.randn(2048, 48, generator=gen).to(torch.bfloat16)
    native = products.matmul(a, b).double()
    emulated = products._EmulatedHalfProduct.apply(torch.matmul, a, b).double()
    magnitude = a.double().abs() @ b.double().abs()
    bound = UNIT_ROUNDOFF[torch.bfloat16] * emulated.abs() * 2 + 2048 * 2.0**-24 * magnitude
    assert ((native - emulated).abs() <= bound).all()
