"""The naive one-shot complex contraction: a baseline for ``benchmarks/contraction.py`` and the tests.

A user who writes a complex einsum in real arithmetic by hand keeps every
operand's (re, im) axis alive until a final sign tensor; mpno's planned pairwise
contraction (:func:`mpno.ops.contraction.complex_einsum`) is compared with it.
"""

from __future__ import annotations

import itertools

import opt_einsum
import torch

from mpno.ops import products
from mpno.ops.contraction import run_steps


def one_shot_equation(equation: str, count: int) -> tuple[str, torch.Tensor]:
    """The naive real form of a complex einsum: every operand keeps its own (re, im) axis.

    Returns the real equation (``count`` operands and a final sign tensor) and the
    sign tensor ``S[a_1, …, a_k, c]`` that maps each of the ``2^k`` component
    combinations to the real or imaginary part of the product.
    """
    inputs, output = equation.split("->")
    letters = "GHIJKLMNQRSTUVW"[:count]
    operands = [term + letter for term, letter in zip(inputs.split(","), letters)]
    signs = torch.zeros((2,) * count + (2,))
    for combo in itertools.product((0, 1), repeat=count):
        imaginary = sum(combo)  # i^imaginary: real for even, imaginary for odd counts
        signs[combo + (imaginary % 2,)] = (-1) ** (imaginary // 2)
    return f"{','.join(operands)},{letters}Z->{output}Z", signs


def one_shot_einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """Complex einsum as one real ``torch.einsum`` over all operands (a benchmark baseline).

    Each operand keeps its own (re, im) axis until the final sign tensor, as a
    user would write it; the order is opt_einsum's ``"auto"``, which is what
    ``torch.einsum`` uses, and each pair runs through :mod:`mpno.ops.products`.
    """
    real, signs = one_shot_equation(equation, len(operands))
    tensors = (*operands, signs.to(operands[0]))
    _, info = opt_einsum.contract_path(real, *[t.shape for t in tensors], shapes=True, optimize="auto")
    return run_steps([(step[0], step[2]) for step in info.contraction_list], tensors, products.einsum)
