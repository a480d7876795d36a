"""Half-precision copies of a model's parameters, cast once per forward pass.

Master weights stay in the model's dtype (float32); in modes other than
``full`` the layers compute with half copies. Cast one parameter at a time,
that is two kernels per parameter and step (the cast, and in backward the cast
of its gradient back to float32), more than the rest of a small layer costs.
An operator therefore casts, at the start of its forward pass, every parameter
its policy uses in half at once (:func:`begin`): one concatenation and one cast,
and for the dense spectral weights, wanted as their real 2×2 blocks
(:mod:`mpno.ops.contraction`), one product and one cast that lays the blocks
out; backward brings all their gradients back to float32 in as few kernels.
Each layer takes its copy with :func:`weight` or :func:`block`. The values are
those of per-parameter casts (a cast rounds each element on its own), and so
are the gradients.

A layer called on its own, outside an operator's forward pass, casts its
parameters itself. Without gradients (inference) the copies are kept with the
model and reused while its parameters do not change, so predicting batch after
batch casts them once.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from ..ops import contraction

#: parameter -> its half copy, while an operator's forward pass runs
_ACTIVE: dict = {}
#: complex weight -> its half 2×2 block (:func:`mpno.ops.contraction.blocks`), likewise
_BLOCKS: dict = {}


def weight(parameter: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``parameter`` in ``dtype``: the copy cast for the current forward pass, else a fresh cast."""
    if parameter is None:
        return None
    copy = _ACTIVE.get(parameter)
    return copy if copy is not None and copy.dtype == dtype else parameter.to(dtype)


def block(parameter: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The half 2×2 block of the complex weight ``parameter`` (in, out, *modes, 2): the one built for the current
    forward pass, else a fresh one."""
    copy = _BLOCKS.get(parameter)
    if copy is not None and copy.dtype == dtype:
        return copy
    return _HalfCopies.apply(dtype, 0, (tuple(parameter.shape),), parameter)[0]


def _memory_order(t: torch.Tensor) -> list[int]:
    """The dimensions of ``t`` from the largest stride to the smallest: ``t.permute`` of them is contiguous for
    a dense tensor, so its copy keeps ``t``'s memory layout."""
    return sorted(range(t.ndim), key=lambda d: (-t.stride(d), d))


def _inverse(order) -> list[int]:
    return sorted(range(len(order)), key=list(order).__getitem__)


class _HalfCopies(torch.autograd.Function):
    """Half copies of ``n_plain`` parameters (same values, same memory layout) and the 2×2 blocks of the complex
    weights after them (grouped by ``block_shapes``, each group's weights consecutive).

    Forward: one concatenation of everything (in memory order), one cast of the
    plain part, and per shape of weights one product and one cast
    (:func:`mpno.ops.contraction.blocks`). Backward: one concatenation of all the
    gradients, one cast of the plain part, and per shape one cast and one sum
    (:func:`mpno.ops.contraction.blocks_adjoint`); the gradients come back as views
    in each parameter's memory layout.
    """

    @staticmethod
    def forward(ctx, dtype, n_plain, block_shapes, *parameters):
        plain, weights = parameters[:n_plain], parameters[n_plain:]
        ctx.master, ctx.n_plain, ctx.block_shapes = parameters[0].dtype, n_plain, block_shapes
        ctx.orders = [_memory_order(p) for p in plain]
        ctx.plain_shapes = [tuple(p.shape) for p in plain]
        layouts = [contraction.weight_layout(w.ndim - 3) for w in weights]
        # the complex weights first: at even offsets, where they can be viewed as complex
        flat = torch.cat([p.permute(order).reshape(-1) for p, order in zip((*weights, *plain),
                                                                             (*layouts, *ctx.orders))])
        blocks, start = [], 0
        for shape, count in _groups(block_shapes):
            ndim = len(shape) - 3
            memory = [shape[d] for d in contraction.weight_layout(ndim)]
            stacked = flat[start:start + count * math.prod(shape)].view(count, *memory)
            blocks += contraction.blocks(stacked, dtype)
            start += count * math.prod(shape)
        copies = []
        if plain:
            sizes = [p.numel() for p in plain]
            for p, order, piece in zip(plain, ctx.orders, flat[start:].to(dtype).split(sizes)):
                copies.append(piece.view([p.shape[d] for d in order]).permute(_inverse(order)))
        return (*copies, *blocks)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        template = next(g for g in grads if g is not None)
        pieces = []
        for i, g in enumerate(grads):
            if g is None:
                pieces.append(template.new_zeros(_numel_of(i, ctx)))
            elif i < ctx.n_plain:
                pieces.append(g.permute(ctx.orders[i]).reshape(-1))
            else:
                pieces.append(g.permute(contraction.block_memory(g.ndim - 4)).reshape(-1))
        flat = torch.cat(pieces)
        sizes = [math.prod(s) for s in ctx.plain_shapes]
        plain_size = sum(sizes)
        out = []
        if sizes:
            for shape, order, piece in zip(ctx.plain_shapes, ctx.orders,
                                           flat[:plain_size].to(ctx.master).split(sizes)):
                out.append(piece.view([shape[d] for d in order]).permute(_inverse(order)))
        start = plain_size
        for shape, count in _groups(ctx.block_shapes):
            ndim = len(shape) - 3
            memory = [(*shape[:-1], 2, 2)[d] for d in contraction.block_memory(ndim)]
            size = count * 4 * math.prod(shape[:-1])
            weights = contraction.blocks_adjoint(flat[start:start + size].view(count, *memory), ctx.master)
            back = _inverse(contraction.weight_layout(ndim))
            out += [w.permute(back) for w in weights.unbind(0)]
            start += size
        return (None, None, None, *out)


def _numel_of(i: int, ctx) -> int:
    """Elements of the ``i``-th gradient piece of :class:`_HalfCopies` (a plain copy, or a block: 2× its weight)."""
    if i < ctx.n_plain:
        return math.prod(ctx.plain_shapes[i])
    return 2 * math.prod(ctx.block_shapes[i - ctx.n_plain])


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _groups(block_shapes) -> list:
    """(shape, count) of each group of consecutive weights of one shape."""
    return [(shape, block_shapes.count(shape)) for shape in _unique(block_shapes)]


def begin(model: nn.Module) -> list:
    """Cast the parameters ``model``'s layers use in half, all at once; returns what :func:`end` releases.

    Layers say which of their own parameters they use in half with a method
    ``half_parameters()`` returning ``(parameter, dtype)`` pairs, or
    ``(parameter, dtype, "block")`` for a complex weight wanted as its 2×2 block.
    Parameters already cast (an operator inside another) are left as they are.
    """
    plain: dict = {}
    weights: dict = {}
    for module in model.modules():
        for parameter, dtype, *form in getattr(module, "half_parameters", lambda: ())():
            if parameter is None or parameter.dtype == dtype or parameter in _ACTIVE or parameter in _BLOCKS:
                continue
            kind = weights if form == ["block"] else plain
            kind.setdefault(dtype, {})[parameter] = None  # ordered, each once
    started = []
    for dtype in dict.fromkeys([*plain, *weights]):
        some = list(plain.get(dtype, ()))
        blocked = sorted(weights.get(dtype, ()), key=lambda w: tuple(w.shape))  # stable: one group per shape
        copies = _copies(model, dtype, some, blocked)
        _ACTIVE.update(zip(some, copies[:len(some)]))
        _BLOCKS.update(zip(blocked, copies[len(some):]))
        started += some + blocked
    return started


#: model -> {dtype: (the parameters, their versions, their half copies)}, kept for inference
_KEPT = WeakIdKeyDictionary()


def _copies(model: nn.Module, dtype: torch.dtype, plain: list, blocked: list) -> tuple:
    """:class:`_HalfCopies` of ``plain`` and ``blocked``. Without gradients (inference), the copies are kept with
    the model and reused until a parameter changes (its version counter moves, or it is replaced)."""
    shapes = tuple(tuple(w.shape) for w in blocked)
    if torch.compiler.is_compiling():  # part of the graph
        return _HalfCopies.apply(dtype, len(plain), shapes, *plain, *blocked)
    if torch.is_grad_enabled():
        _KEPT.pop(model, None)
        return _HalfCopies.apply(dtype, len(plain), shapes, *plain, *blocked)
    parameters = tuple(plain + blocked)
    versions = tuple(p._version for p in parameters)
    kept = _KEPT.setdefault(model, {}).get(dtype)
    if kept is not None and len(kept[0]) == len(parameters) and all(a is b for a, b in zip(kept[0], parameters)) \
            and kept[1] == versions:
        return kept[2]
    copies = _HalfCopies.apply(dtype, len(plain), shapes, *plain, *blocked)
    _KEPT[model][dtype] = (parameters, versions, copies)
    return copies


def end(started: list) -> None:
    """Release the copies :func:`begin` made."""
    for parameter in started:
        _ACTIVE.pop(parameter, None)
        _BLOCKS.pop(parameter, None)
