"""Matrix products in half precision on every device.

On CUDA (and any other accelerator) half-precision operands go straight to
``torch.matmul`` / ``torch.einsum`` / ``torch.conv*``: tensor cores multiply the
half values and accumulate in float32, then round the result to half.

On the CPU the same arithmetic is *emulated*: the half operands are upcast
(exactly), multiplied and accumulated in float32, and the result is rounded to
the half dtype. Products of two float16 (or bfloat16) numbers are exact in
float32, so this reproduces what a tensor core computes, overflow to ``inf``
included. Only the half operands are saved for backward, as on the GPU; the
gradients are computed the same way. The exception: bfloat16 products on a CPU
that multiplies bfloat16 natively with float32 accumulation
(:func:`mpno.ops.devices.native_bfloat16_cpu`) run natively, which computes the
same thing faster. float16 products are always emulated on the CPU (PyTorch's
CPU float16 products are slow, and their accumulation is not float32 everywhere).

Which path runs follows the operands' device type (:func:`mpno.ops.devices.kernels`) and
what the dtype's record says for it (:attr:`mpno.dtypes.DtypeInfo.matrix_products`).
Operands that are not half precision are passed to torch unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .. import dtypes
from .devices import kernels, native_bfloat16_cpu


class _EmulatedHalfProduct(torch.autograd.Function):
    """``fn(*operands)`` for half operands, computed in float32 and rounded to half.

    ``None`` operands (an absent bias) are passed through.
    """

    @staticmethod
    def forward(ctx, fn, *operands):
        ctx.fn = fn
        ctx.save_for_backward(*operands)
        return fn(*(None if t is None else t.float() for t in operands)).to(operands[0].dtype)

    @staticmethod
    def backward(ctx, grad):
        operands = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        with torch.enable_grad():
            wide = [None if t is None else t.detach().float().requires_grad_(need)
                    for t, need in zip(operands, needs)]
            wrt = [t for t in wide if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(ctx.fn(*wide), wrt, grad.float()) if wrt else ())
        return (None, *(next(grads).to(t.dtype) if t is not None and need else None
                        for t, need in zip(operands, needs)))


def emulated(*operands: torch.Tensor | None) -> bool:
    """Whether a product of ``operands`` (one dtype; ``None`` ignored) is emulated in float32 here."""
    operands = [t for t in operands if t is not None]
    dtype = operands[0].dtype
    if any(t.dtype != dtype for t in operands):
        raise TypeError(f"operands must share a dtype, got {', '.join(str(t.dtype) for t in operands)}")
    how = dtypes.info(dtype).products_on(kernels(operands[0].device))
    if how == dtypes.NATIVE_IF_CAPABLE:
        return not _cpu_multiplies_natively(dtype)
    return how == dtypes.EMULATED


def _cpu_multiplies_natively(dtype: torch.dtype) -> bool:
    """The capability check of a dtype whose products the table runs natively only where the CPU can
    (:data:`mpno.dtypes.NATIVE_IF_CAPABLE`)."""
    if dtype == torch.bfloat16:
        return native_bfloat16_cpu()
    raise NotImplementedError(f"no check of whether this CPU multiplies {dtype} natively; add one here")


def _emulate(fn, *operands: torch.Tensor | None) -> torch.Tensor:
    """``fn(*operands)`` computed in float32 from half operands, rounded to half.

    Under ``torch.compile`` this is written as what it computes (upcasts, the
    float32 product, a cast: autograd's own backward of that is the same), inside
    a selective activation checkpoint (:func:`_save_rounded`) that saves for
    backward what the uncompiled function saves: half tensors. Without it the
    compiler's partitioner keeps the float32 upcasts, twice the bytes.
    """
    if not torch.compiler.is_compiling():
        return _EmulatedHalfProduct.apply(fn, *operands)
    if not torch.is_grad_enabled():
        return _in_float32(fn, *operands)
    return checkpoint(_in_float32, fn, *operands, use_reentrant=False,
                      context_fn=functools.partial(create_selective_checkpoint_contexts, _save_rounded))


def _in_float32(fn, *operands: torch.Tensor | None) -> torch.Tensor:
    return fn(*(None if t is None else t.float() for t in operands)).to(operands[0].dtype)


def _save_rounded(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Inside :func:`_emulate` under ``torch.compile``: save the product rounded to half, recompute the (exact)
    float32 upcasts of the half operands in backward; the half operands themselves are the region's inputs."""
    if any(kwargs.get("dtype") == dtypes.info(name).torch_dtype for name in dtypes.half_names()):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)``, with tensor-core numerics for half operands on the CPU."""
    if emulated(a, b):
        return _emulate(torch.matmul, a, b)
    return torch.matmul(a, b)


def einsum(equation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.einsum`` of two operands, with tensor-core numerics for half operands on the CPU."""
    if emulated(a, b):
        return _emulate(lambda x, y: torch.einsum(equation, x, y), a, b)
    return torch.einsum(equation, a, b)


_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_i weight[o, i] x[b, i, …] + bias[o]`` at every point of ``x`` (batch, in, *grid), 1 to 3 grid dims.

    A 1×1 convolution: one kernel forward (bias included, added before the one
    rounding of the result) and one backward (all three gradients). It is fastest,
    on CPUs and GPUs alike, on activations in channels-last memory
    (:func:`mpno.nn.layers.channels_last`), and keeps that layout.
    """
    conv = _CONVOLUTIONS[x.ndim - 2]
    kernel = weight.view(*weight.shape, *([1] * (x.ndim - 2)))
    if emulated(x, kernel, bias):
        return _emulate(conv, x, kernel, bias)
    return conv(x, kernel, bias)
