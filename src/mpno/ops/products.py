"""Matrix products in half precision on every device.

On CUDA (and any other accelerator) half-precision operands go straight to
``torch.matmul`` / ``torch.einsum``: tensor cores multiply the half values and
accumulate in float32, then round the result to half.

On the CPU, PyTorch's half matmuls are slow and its accumulation order differs,
so the same arithmetic is *emulated*: the half operands are upcast (exactly),
multiplied and accumulated in float32, and the result is rounded to the half
dtype. Products of two float16 (or bfloat16) numbers are exact in float32, so
this reproduces what a tensor core computes, overflow to ``inf`` included. Only
the half operands are saved for backward, as on the GPU; the gradients are
computed the same way.

Operands that are not half precision are passed to torch unchanged.
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


class _EmulatedHalfProduct(torch.autograd.Function):
    """``fn(a, b)`` for half ``a``, ``b``, computed in float32 and rounded to half."""

    @staticmethod
    def forward(ctx, fn, a, b):
        ctx.fn = fn
        ctx.save_for_backward(a, b)
        return fn(a.float(), b.float()).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        with torch.enable_grad():
            a32 = a.detach().float().requires_grad_(needs[0])
            b32 = b.detach().float().requires_grad_(needs[1])
            wrt = [t for t in (a32, b32) if t.requires_grad]
            grads = iter(torch.autograd.grad(ctx.fn(a32, b32), wrt, grad.float()))
        ga = next(grads).to(a.dtype) if needs[0] else None
        gb = next(grads).to(b.dtype) if needs[1] else None
        return None, ga, gb


def _emulate(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype:
        raise TypeError(f"operands must share a dtype, got {a.dtype} and {b.dtype}")
    return a.dtype in HALF_DTYPES and a.device.type == "cpu"


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)``, with tensor-core numerics for half operands on the CPU."""
    if _emulate(a, b):
        return _EmulatedHalfProduct.apply(torch.matmul, a, b)
    return torch.matmul(a, b)


def einsum(equation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.einsum`` of two operands, with tensor-core numerics for half operands on the CPU."""
    if _emulate(a, b):
        return _EmulatedHalfProduct.apply(lambda x, y: torch.einsum(equation, x, y), a, b)
    return torch.einsum(equation, a, b)
