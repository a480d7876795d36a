"""Complex tensor contractions in half precision, in a planned pairwise order.

Complex tensors are real tensors with a trailing (re, im) axis of size 2.
``torch.einsum`` has no complex-half kernels, so each pairwise product of two
complex operands is one *real* contraction: the smaller operand is expanded to
its 2×2 real block ``[[re, im], [-im, re]]`` and contracted together with the
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

from dataclasses import dataclass

import opt_einsum
import torch

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


def complex_pair(equation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex ``einsum(equation, a, b)`` of two real-pair operands, as one real contraction."""
    inputs, output = equation.split("->")
    left, right = inputs.split(",")
    if a.numel() < b.numel():  # expand the smaller operand to its 2×2 block
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


def complex_einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """Complex einsum of real-pair operands in their (shared) dtype, in the planned order."""
    shapes = tuple(tuple(t.shape[:-1]) for t in operands)
    return run_steps(plan(equation, shapes, operands[0].dtype).steps, operands, complex_pair)
