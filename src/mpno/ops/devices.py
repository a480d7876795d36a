"""Which kernels compute for a tensor, decided by its device type, and what a CPU multiplies natively.

mpno's arithmetic takes one of two paths, chosen by the device type of the
tensors it is given, never by what the machine has installed:

* the **CPU path**: half-precision products are emulated in float32 (exact
  products, float32 accumulation, one rounding; :mod:`mpno.ops.products`),
  except bfloat16 products where the CPU multiplies bfloat16 natively with
  float32 accumulation (:func:`native_bfloat16_cpu`); transforms in float32 use
  pocketfft, in half the DFT products;
* the **accelerator path** (CUDA): half operands go straight to the device's
  kernels (tensor cores), float16 transforms of power-of-two sizes use cuFFT.

What each dtype does on each path is its record in :mod:`mpno.dtypes`
(``matrix_products``, ``torch_fft``, keyed by the device type :func:`kernels` returns).

Tensors on the ``meta`` device (shapes and dtypes, no data) follow the CUDA
branches. So the accelerator path can be traced on any machine, without a GPU:
``mpno bench --count-ops`` counts the operations one training step dispatches
on CUDA by running it on ``meta`` tensors (:mod:`mpno.run.profiling`).
"""

from __future__ import annotations

import functools
import os

import torch

#: The device whose branches ``meta`` tensors follow.
TRACED_ACCELERATOR = "cuda"


def kernels(device: torch.device | str) -> str:
    """The device type whose code path runs for tensors on ``device``: its own type, ``"cuda"`` for ``meta``."""
    device_type = torch.device(device).type
    return TRACED_ACCELERATOR if device_type == "meta" else device_type


@torch.compiler.assume_constant_result  # torch.compile asks once, when it traces
def native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively and accumulates in float32.

    True where PyTorch's oneDNN (mkldnn) backend is available and enabled and
    the CPU has the instructions that multiply bfloat16 pairs into float32
    sums: AVX512-BF16 (``vdpbf16ps``) or AMX-BF16. PyTorch's bfloat16 matrix
    products then run in oneDNN, which accumulates in float32 and rounds the
    result once, as a tensor core does (``tests/test_products.py`` checks it on
    inputs where a bfloat16 accumulation would fail). Elsewhere, and for
    float16 everywhere, mpno emulates the products in float32. The environment
    variable ``MPNO_NATIVE_BFLOAT16=0`` turns the native path off (read once,
    at the first bfloat16 product on the CPU).
    """
    return torch.backends.mkldnn.enabled and _cpu_multiplies_bfloat16()


@functools.lru_cache(maxsize=1)
def _cpu_multiplies_bfloat16() -> bool:
    if os.environ.get("MPNO_NATIVE_BFLOAT16", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    units = cpu_matrix_units()
    return units["avx512_bf16"] or units["amx_bf16"]


#: The CPU's half-precision matrix instructions :func:`cpu_matrix_units` reports (PyTorch's names).
MATRIX_UNITS = ("amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16")


def cpu_matrix_units() -> dict[str, bool]:
    """Which half-precision matrix instructions this CPU has (:data:`MATRIX_UNITS`): AMX tiles multiply
    bfloat16 many times faster than float32, AVX512-BF16 at about float32's speed or slower; without either,
    mpno emulates bfloat16 products in float32. All ``False`` where PyTorch cannot tell."""
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # a PyTorch without the query, or a CPU it cannot identify
        capabilities = {}
    return {unit: bool(capabilities.get(unit)) for unit in MATRIX_UNITS}
