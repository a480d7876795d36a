"""Complex tensor contractions in any precision, in a planned pairwise order.

Complex tensors are real tensors with a trailing (re, im) axis of size 2. In
float32 and float64 they are viewed as complex and contracted by complex
kernels (in a graph exported for ONNX, which has no complex tensors, as real
blocks like half precision's). ``torch.einsum`` has no complex-half kernels (the dtype's record:
:attr:`mpno.dtypes.DtypeInfo.complex_kernels`), so in half precision each
pairwise product of two complex operands is one *real* contraction: the smaller
operand is expanded to its 2×2 real block ``[[re, im], [-im, re]]`` and contracted together with the
(re, im) axis of the other, so all four real products accumulate in float32 and
round once (:mod:`mpno.ops.products`).

With more than two operands (factorised weights) the order matters: a one-shot
contraction that keeps every operand's (re, im) axis alive carries ``2^k``
combinations, and a bad order can build intermediates larger than the dense
weight. :func:`complex_einsum` asks ``opt_einsum`` for a pairwise order that
keeps the largest intermediate small (then the fewest FLOPs), caches the plan per
(equation, shapes, dtype), and runs each pair in the operands' dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import opt_einsum
import torch
from torch.fx.experimental.symbolic_shapes import optimization_hint

from .. import dtypes
from . import products, tables

_RE_IM_IN, _RE_IM_OUT = "E", "F"  # letters of the (re, im) axes in real equations
_SIZE_SLACK = 1.1  # accept paths whose largest intermediate is within 10% of the smallest


@dataclass(frozen=True)
class Plan:
    """A pairwise contraction order and what it costs, in complex elements."""

    steps: tuple  # (operand positions, einsum of the pair) per step, opt_einsum's convention
    flops: int
    largest_intermediate: int


def _search_path(equation: str, shapes: tuple) -> Plan:
    """The pairwise order with the smallest largest intermediate (within 10%), then fewest FLOPs."""
    candidates = []
    for optimizer in ("greedy", opt_einsum.DynamicProgramming(minimize="flops"),
                      opt_einsum.DynamicProgramming(minimize="size")):
        _, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize=optimizer)
        steps = tuple((step[0], step[2]) for step in info.contraction_list)
        candidates.append(Plan(steps, int(info.opt_cost), int(info.largest_intermediate)))
    smallest = min(plan.largest_intermediate for plan in candidates)
    lean = [plan for plan in candidates if plan.largest_intermediate <= _SIZE_SLACK * smallest]
    return min(lean, key=lambda plan: (plan.flops, plan.largest_intermediate))


@tables.cached(maxsize=1024)
def plan(equation: str, shapes: tuple, dtype: torch.dtype) -> Plan:
    """The cached plan for ``equation`` on complex operands of ``shapes`` in ``dtype``."""
    return _search_path(equation, shapes)


@tables.cached(maxsize=32)
def _block_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2, 4): row 0 (re) → [[1, 0], [0, 1]], row 1 (im) → [[0, 1], [-1, 0]], flattened."""
    return torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, -1.0, 0.0]], dtype=dtype, device=device)


def complex_block(t: torch.Tensor) -> torch.Tensor:
    """(…, 2) complex as real pairs -> (…, 2, 2) block with ``block[..., a, c]`` = coefficient of
    input component ``a`` in output component ``c`` of a product with ``t``: ``[[re, im], [-im, re]]``.

    One (exact) product with a constant basis: a single kernel, forward and backward.
    """
    return products.matmul(t, _block_basis(t.dtype, t.device)).unflatten(-1, (2, 2))


def weight_layout(ndim: int) -> tuple[int, ...]:
    """The memory order, modes first, of a complex weight (in, out, *modes, 2) with ``ndim`` modes, in which the
    products batched over the modes read it (and write its gradient) without a copy."""
    return (*range(2, 2 + ndim), 0, 1, ndim + 2)


def blocks(weights: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """The 2×2 blocks ``[[re, im], [-im, re]]`` of complex weights, rounded to the half ``dtype``.

    ``weights``: (L, *modes, in, out, 2), L weights in :func:`weight_layout`. Row
    ``E = 0`` of a block is the weight ``z`` itself and row ``E = 1`` is ``i·z``: one
    complex product with ``(1, i)`` (exact) writes the blocks modes first, then in,
    E, out, F, as :func:`block_product` reads them, and one cast rounds them.
    Returns the L blocks as (in, out, *modes, E, F) views.
    """
    ndim = weights.ndim - 4
    if torch.onnx.is_in_onnx_export():  # no complex tensors in ONNX: the rows z and i·z stacked as real pairs
        turned = torch.stack([-weights[..., 1], weights[..., 0]], -1)
        block = torch.stack([weights, turned], -3).to(dtype)
    else:
        rows = torch.view_as_complex(weights).unsqueeze(-2) * _block_rows(weights.dtype, weights.device)
        block = torch.view_as_real(rows).to(dtype)  # (L, *modes, in, E, out, F)
    logical = (ndim, ndim + 2, *range(ndim), ndim + 1, ndim + 3)
    return [b.permute(logical) for b in block.unbind(0)]


def block_memory(ndim: int) -> tuple[int, ...]:
    """The memory order of a block (in, out, *modes, E, F) made by :func:`blocks`: (*modes, in, E, out, F)."""
    return (*range(2, 2 + ndim), 0, ndim + 2, 1, ndim + 3)


def blocks_adjoint(grads: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gradient of :func:`blocks`: from the blocks' gradients (L, *modes, in, E, out, F) to the weights'
    (L, *modes, in, out, 2) in ``dtype``: ``g_0 - i·g_1`` (rows E), after one cast."""
    grads = torch.view_as_complex(grads.to(dtype))
    return torch.view_as_real(torch.add(grads.select(-2, 0), grads.select(-2, 1), alpha=-1j))


@tables.cached(maxsize=32)
def _block_rows(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2, 1) complex: 1 and i, the factors of a block's two rows, with parts in ``dtype``'s
    :attr:`mpno.dtypes.DtypeInfo.complex_part_dtype` (complex64, complex128 for float64)."""
    parts = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=dtypes.info(dtype).complex_part_dtype, device=device)
    return torch.view_as_complex(parts)


def block_product(coeffs: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """Complex ``Σ_i coeffs[b, i, k] · W[i, o, k]`` from half coefficients (batch, in, *modes, 2) and the block
    of ``W`` (:func:`blocks`): one real product batched over the modes, float32 accumulation, one rounding."""
    # torch.einsum orders the labels of each group alphabetically: in before re/im (i < r), out before re/im
    # (o < s), the modes h < j < …, which is the memory order of both operands (no copy).
    modes = "hjklmn"[: coeffs.ndim - 3]
    return products.einsum(f"bi{modes}r,io{modes}rs->bo{modes}s", coeffs, block)


def as_complex(t: torch.Tensor) -> torch.Tensor:
    """A real-pair tensor (…, 2) viewed as complex (copied first only where its strides forbid the view; the
    pairs mpno makes start at even offsets).

    Under ``torch.compile`` a tensor that is not contiguous is copied first:
    inductor (torch 2.13) computes wrong gradients through a complex view of a
    permuted real tensor, such as a spectral weight stored modes first.
    """
    if t.stride(-1) != 1 or any(stride % 2 for stride in t.stride()[:-1]) \
            or (torch.compiler.is_compiling() and not t.is_contiguous()):
        t = t.contiguous()
    return torch.view_as_complex(t)


class _ComplexPair(torch.autograd.Function):
    """``einsum(equation, a, b)`` of real-pair operands, computed as a complex einsum.

    Autograd's own backward of ``view_as_complex`` and ``view_as_real`` copies
    every gradient to contiguous memory; this one takes and returns gradients in
    the layout they come in: ``ā = einsum(C,B->A)(g, b̄)`` and
    ``b̄ = einsum(A,C->B)(ā, g)`` with conjugates (lazy views, no copies).
    """

    @staticmethod
    def forward(ctx, equation, a, b):
        ctx.equation = equation
        ctx.save_for_backward(a, b)
        return torch.view_as_real(torch.einsum(equation, as_complex(a), as_complex(b)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        inputs, output = ctx.equation.split("->")
        left, right = inputs.split(",")
        grad = as_complex(grad)
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = torch.view_as_real(torch.einsum(f"{output},{right}->{left}", grad, as_complex(b).conj()))
        if ctx.needs_input_grad[2]:
            grad_b = torch.view_as_real(torch.einsum(f"{left},{output}->{right}", as_complex(a).conj(), grad))
        return None, grad_a, grad_b


def complex_pair(equation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex ``einsum(equation, a, b)`` of two real-pair operands.

    float32 and float64 operands are viewed as complex and contracted with one
    complex einsum; half operands (no complex-half kernels) as one real
    contraction with the smaller operand expanded to its 2×2 block. Every index
    of an operand appears in the other operand or in the output.
    """
    if dtypes.info(a.dtype).complex_kernels and not torch.onnx.is_in_onnx_export():  # ONNX has no complex
        return _ComplexPair.apply(equation, a, b)
    inputs, output = equation.split("->")
    left, right = inputs.split(",")
    if _elements(a) < _elements(b):  # expand the smaller operand to its 2×2 block
        a, b, left, right = b, a, right, left
    real = f"{left}{_RE_IM_IN},{right}{_RE_IM_IN}{_RE_IM_OUT}->{output}{_RE_IM_OUT}"
    return products.einsum(real, a, complex_block(b))


def run_steps(steps, tensors, pair) -> torch.Tensor:
    """Contract ``tensors`` pairwise following opt_einsum-style ``steps`` with ``pair(eq, a, b)``."""
    remaining = list(tensors)
    for positions, pair_equation in steps:
        operands = [remaining.pop(i) for i in positions]
        remaining.append(pair(pair_equation, *operands))
    (result,) = remaining
    return result


def _size_hint(n) -> int:
    """A size as an int: under ``torch.export`` a symbolic size's example value, read without a guard, so that
    the order planned for the example serves every size (an order is correct for all; it is chosen for one)."""
    return optimization_hint(n) if isinstance(n, torch.SymInt) else n


def _elements(t: torch.Tensor) -> int:
    """``t.numel()``, of the example's sizes under ``torch.export`` (:func:`_size_hint`)."""
    return math.prod([_size_hint(n) for n in t.shape])  # a list: the compiler traces no generator here


def complex_einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """Complex einsum of real-pair operands in their (shared) dtype, in the planned order (:func:`complex_pair`
    per step)."""
    shapes = tuple(tuple(_size_hint(n) for n in t.shape[:-1]) for t in operands)
    steps = plan(equation, shapes, operands[0].dtype).steps
    return run_steps(steps, operands, complex_pair)
