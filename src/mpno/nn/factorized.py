"""Factorised complex spectral weights: CP, Tucker and tensor-train (TT).

The weight of a spectral convolution is a complex tensor of shape
``(in, out, *kept)``. A factorised weight stores factors instead and is never
rebuilt in the forward pass: the activation is contracted with the factors in a
planned pairwise order (:mod:`mpno.ops.contraction`).

``rank`` (documented in ``docs/factorization.md``):

* a float in (0, 1]: the fraction of the dense tensor's parameter count to keep;
* an int: the CP rank, every Tucker rank, or every internal TT rank;
* a sequence of ints: Tucker ranks (one per mode) or internal TT ranks (modes − 1).

Initialisation: every factor's entries are complex normal with one common
variance ``v``, chosen so that each entry of the implied dense weight has
``E|W|² = 2 / (in + out)``, the dense layer's rule. The implied entries are
uncorrelated with mean zero, so a factorised layer's output has the dense layer's
scale for any input.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..ops.contraction import complex_einsum
from . import casting

FACTORIZATIONS = ("dense", "cp", "tucker", "tt")
_MODE_LETTERS = "ioxyz"  # in, out, then up to three spatial modes
_RANK_LETTERS = "pqrstuv"


def _check_fraction(rank: float) -> None:
    if not 0.0 < rank <= 1.0:
        raise ValueError(
            f"rank={rank!r} is not supported: a float rank is the fraction of the dense "
            "parameter count to keep and must lie in (0, 1]; give an int for an explicit rank"
        )


def _int_ranks(rank, count: int, kind: str) -> tuple[int, ...]:
    ranks = (rank,) * count if isinstance(rank, int) else tuple(rank)
    if len(ranks) != count or not all(isinstance(r, int) and r > 0 for r in ranks):
        raise ValueError(f"rank={rank!r} is not supported for {kind}: give a float in (0, 1], "
                         f"a positive int, or {count} positive ints")
    return ranks


def _too_small(rank, kind: str, shape) -> ValueError:
    return ValueError(f"rank={rank!r} rounds to a {kind} rank of 0 for a weight of shape {tuple(shape)}; "
                      "raise rank or give explicit int ranks")


def _too_large(rank, kind: str, shape, params: int) -> ValueError:
    return ValueError(f"rank={rank!r} gives a {kind} weight with {params} parameters, more than the "
                      f"dense tensor of shape {tuple(shape)} ({math.prod(shape)}); lower rank")


class FactorizedWeight(nn.Module):
    """A complex tensor of ``shape`` stored as factors (real pairs, master dtype float32).

    Subclasses set ``self.factors`` and ``self.terms`` (the einsum term of each factor).
    """

    kind = ""

    def __init__(self, shape: Sequence[int], rank):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, (int, float, Sequence)):
            raise ValueError(f"rank={rank!r} is not supported; give a float in (0, 1], an int, or ints")
        self.shape = tuple(shape)
        self.letters = _MODE_LETTERS[: len(self.shape)]

    def _init_factors(self, factor_shapes, implied_terms: int) -> None:
        """Factors with a common variance such that the implied entries have E|W|² = 2/(in+out)."""
        target = 2.0 / (self.shape[0] + self.shape[1])
        variance = (target / implied_terms) ** (1.0 / len(factor_shapes))
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(*s, 2) * math.sqrt(variance / 2)) for s in factor_shapes
        )

    @property
    def num_parameters(self) -> int:
        """Complex parameters (each stored as two reals)."""
        return sum(f.numel() // 2 for f in self.factors)

    def contraction_equation(self) -> str:
        batch_in = "b" + self.letters[0] + self.letters[2:]
        out = "b" + self.letters[1] + self.letters[2:]
        return f"{batch_in},{','.join(self.terms)}->{out}"

    def reconstruction_equation(self) -> str:
        return f"{','.join(self.terms)}->{self.letters}"

    def contract(self, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Contract coefficients (batch, in, *kept, 2) with the factors, in ``dtype``, planned."""
        return complex_einsum(self.contraction_equation(), coeffs.to(dtype),
                              *[casting.weight(f, dtype) for f in self.factors])

    def to_dense(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense tensor ``(*shape, 2)``, reconstructed in ``dtype`` (default: the factors')."""
        dtype = dtype or self.factors[0].dtype
        return complex_einsum(self.reconstruction_equation(), *[casting.weight(f, dtype) for f in self.factors])

    def extra_repr(self) -> str:
        return f"shape={self.shape}, ranks={self.ranks}"


class CPWeight(FactorizedWeight):
    """``W = Σ_r Π_k A_k[n_k, r]``: one factor per mode, a shared rank."""

    kind = "cp"

    def __init__(self, shape, rank):
        super().__init__(shape, rank)
        dense = math.prod(self.shape)
        if isinstance(rank, float):
            _check_fraction(rank)
            cp_rank = round(rank * dense / sum(self.shape))
            if cp_rank < 1:
                raise _too_small(rank, "CP", self.shape)
        else:
            (cp_rank,) = _int_ranks(rank, 1, "CP")
        if cp_rank * sum(self.shape) > dense:
            raise _too_large(rank, "CP", self.shape, cp_rank * sum(self.shape))
        self.ranks = (cp_rank,)
        self.terms = [m + "p" for m in self.letters]
        self._init_factors([(n, cp_rank) for n in self.shape], implied_terms=cp_rank)


class TuckerWeight(FactorizedWeight):
    """``W = G ×_k U_k``: a core of shape ``ranks`` and one factor ``(n_k, r_k)`` per mode."""

    kind = "tucker"

    def __init__(self, shape, rank):
        super().__init__(shape, rank)
        if isinstance(rank, float):
            _check_fraction(rank)
            ranks = self._ranks_for_fraction(rank)
        else:
            ranks = _int_ranks(rank, len(self.shape), "Tucker")
            if any(r > n for r, n in zip(ranks, self.shape)):
                raise ValueError(f"rank={rank!r} exceeds the weight's shape {self.shape}: each Tucker "
                                 "rank must be at most its mode's size")
        self.ranks = ranks
        core = _RANK_LETTERS[: len(ranks)]
        self.terms = [core] + [m + r for m, r in zip(self.letters, core)]
        self._init_factors([ranks] + [(n, r) for n, r in zip(self.shape, ranks)],
                           implied_terms=math.prod(ranks))

    def _ranks_for_fraction(self, fraction: float) -> tuple[int, ...]:
        """Ranks ``round(f·n_k)`` with one ratio f, chosen (bisection) to keep ``fraction`` of the parameters."""
        dense = math.prod(self.shape)

        def params(f):
            ranks = [f * n for n in self.shape]
            return math.prod(ranks) + sum(n * r for n, r in zip(self.shape, ranks))

        low, high = 0.0, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if params(mid) < fraction * dense else (low, mid)
        ranks = tuple(min(n, round(low * n)) for n in self.shape)
        if min(ranks) < 1:
            raise _too_small(fraction, "Tucker", self.shape)
        return ranks


class TTWeight(FactorizedWeight):
    """Tensor train: ``W[n_1..n_K] = G_1[n_1, :] G_2[:, n_2, :] … G_K[:, n_K]``."""

    kind = "tt"

    def __init__(self, shape, rank):
        super().__init__(shape, rank)
        count = len(self.shape) - 1
        if isinstance(rank, float):
            _check_fraction(rank)
            ranks = (self._uniform_rank(rank),) * count
        else:
            ranks = _int_ranks(rank, count, "TT")
        bounds = [1] + list(ranks) + [1]
        params = sum(a * n * b for a, n, b in zip(bounds, self.shape, bounds[1:]))
        if params > math.prod(self.shape):
            raise _too_large(rank, "TT", self.shape, params)
        self.ranks = ranks
        letters = _RANK_LETTERS[:count]
        self.terms = [self.letters[0] + letters[0]]
        self.terms += [letters[k - 1] + self.letters[k] + letters[k] for k in range(1, count)]
        self.terms += [letters[-1] + self.letters[-1]]
        shapes = [(self.shape[0], ranks[0])]
        shapes += [(ranks[k - 1], self.shape[k], ranks[k]) for k in range(1, count)]
        shapes += [(ranks[-1], self.shape[-1])]
        self._init_factors(shapes, implied_terms=math.prod(ranks))

    def _uniform_rank(self, fraction: float) -> int:
        """The internal rank r with ``n_1 r + Σ_mid n_k r² + n_K r`` closest to ``fraction`` of the parameters."""
        ends, middle = self.shape[0] + self.shape[-1], sum(self.shape[1:-1])
        target = fraction * math.prod(self.shape)
        r = (-ends + math.sqrt(ends * ends + 4 * middle * target)) / (2 * middle)
        if round(r) < 1:
            raise _too_small(fraction, "TT", self.shape)
        return round(r)


def factorization_name(factorization: str | None) -> str:
    """The canonical name of a spectral weight's form: ``None`` and ``"dense"`` are ``"dense"``."""
    name = "dense" if factorization is None else factorization
    if name not in FACTORIZATIONS:
        raise ValueError(f"factorization={factorization!r} is not supported; allowed: "
                         + ", ".join(repr(k) for k in FACTORIZATIONS) + " (None is 'dense')")
    return name


def factorized_weight(factorization: str | None, shape: Sequence[int], rank) -> FactorizedWeight | None:
    """A factorised weight of kind ``"cp"``, ``"tucker"`` or ``"tt"``; ``None`` for a dense weight
    (``factorization`` ``None`` or ``"dense"``). The one place that turns a name into a weight type."""
    kinds = {"dense": None, "cp": CPWeight, "tucker": TuckerWeight, "tt": TTWeight}
    kind = kinds[factorization_name(factorization)]
    return None if kind is None else kind(shape, rank)
