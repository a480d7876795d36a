"""The dtype table: one record per floating dtype mpno computes in, holding every fact about it that code reads.

The low-precision ("half") dtypes a :class:`mpno.Precision` may name are the
records with ``half=True`` (float16, bfloat16); float32 and float64 are here as
the master and reference dtypes, for their unit roundoff and what torch runs in
them. ``mpno.precision.DTYPES``, ``HALF_DTYPES`` and ``UNIT_ROUNDOFF`` are
derived from this table; kernels ask :func:`info` for a dtype's record. Adding
a dtype is one record here plus the kernels that really differ
(``docs/operators.md``, "Adding a dtype").

Per-device facts are mappings from a device type (``"cpu"``, ``"cuda"``; tensors
on ``meta`` follow ``"cuda"``, :func:`mpno.ops.devices.kernels`) to a value, with
:data:`OTHER_DEVICES` standing for every device type the mapping does not name.

This module imports nothing from mpno, so every subpackage may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: The key of a per-device mapping that stands for every device type it does not name.
OTHER_DEVICES = "*"

#: What ``torch.fft`` runs in a dtype on a device type (:attr:`DtypeInfo.torch_fft`): nothing, transforms
#: whose sizes are all powers of two, or any size.
FFT_NONE, FFT_POWERS_OF_TWO, FFT_ANY = "none", "powers_of_two", "any"
#: How a device type computes a dtype's matrix products (:attr:`DtypeInfo.matrix_products`): in torch's own
#: kernels, accumulating in float32 or finer; emulated (operands upcast to float32, one rounding of the result:
#: :mod:`mpno.ops.products`); or natively only where the CPU has the instructions that accumulate the dtype's
#: products in float32 (a check per dtype in :func:`mpno.ops.products.emulated`), emulated elsewhere.
NATIVE, EMULATED, NATIVE_IF_CAPABLE = "native", "emulated", "native_if_capable"


@dataclass(frozen=True)
class DtypeInfo:
    """What mpno knows about one floating dtype.

    Attributes:
        name: the dtype's name in policies, reports and command lines (``"float16"``).
        torch_dtype: the torch dtype.
        half: whether a policy may name it as its low-precision dtype (``Precision.dtype``); such dtypes are
            ``mpno.precision.DTYPES``, and transforms round every dimension's partial sums to them.
        unit_roundoff: ``u``, half the machine epsilon: the relative error of one rounding (error bounds,
            audits, tolerances).
        largest: the largest finite value: a partial sum beyond it overflows to ``inf``.
        needs_loss_scaling: whether training with a stage in this dtype scales the loss
            (``torch.amp.GradScaler``) because small gradients underflow (float16; bfloat16 has float32's range).
        complex_part_dtype: the dtype of the real and imaginary parts of the torch complex values mpno makes
            from this dtype (complex constants, the SHT modules' results): float32 (complex64), float64
            (complex128) for float64. Where it is not this dtype itself, torch has no complex kernels (einsum)
            in this dtype (no complex bfloat16; complex32 is experimental) and complex products run as real
            2×2 blocks (:attr:`complex_kernels`).
        torch_fft: per device type, what ``torch.fft`` transforms in this dtype (:data:`FFT_NONE`,
            :data:`FFT_POWERS_OF_TWO`, :data:`FFT_ANY`); elsewhere transforms use the DFT products.
        matrix_products: per device type, how its matrix products run (:data:`NATIVE`, :data:`EMULATED`,
            :data:`NATIVE_IF_CAPABLE`).
    """

    name: str
    torch_dtype: torch.dtype
    half: bool
    unit_roundoff: float
    largest: float
    needs_loss_scaling: bool
    complex_part_dtype: torch.dtype
    torch_fft: dict = field(hash=False)
    matrix_products: dict = field(hash=False)

    @property
    def complex_kernels(self) -> bool:
        """Whether torch contracts complex values in this dtype itself (float32, float64); otherwise mpno
        contracts (re, im) pairs as real 2×2 blocks (:mod:`mpno.ops.contraction`)."""
        return self.complex_part_dtype == self.torch_dtype

    def torch_fft_runs(self, device_type: str, sizes) -> bool:
        """Whether ``torch.fft`` transforms this dtype on ``device_type`` along dimensions of ``sizes``."""
        support = _on(self.torch_fft, device_type)
        if support == FFT_POWERS_OF_TWO:
            return all(n > 0 and n & (n - 1) == 0 for n in sizes)
        return support == FFT_ANY

    def torch_fft_where(self) -> str:
        """Where ``torch.fft`` runs this dtype, in words (for error messages): ``"on cuda at power-of-two
        sizes"``."""
        words = {FFT_POWERS_OF_TWO: "at power-of-two sizes", FFT_ANY: "at any size"}
        others = "every device" if len(self.torch_fft) == 1 else "every other device"
        places = [f"on {others if device == OTHER_DEVICES else device} {words[support]}"
                  for device, support in self.torch_fft.items() if support != FFT_NONE]
        return " and ".join(places) if places else "nowhere"

    def products_on(self, device_type: str) -> str:
        """How matrix products in this dtype run on ``device_type`` (:attr:`matrix_products`)."""
        return _on(self.matrix_products, device_type)


def _on(per_device: dict, device_type: str):
    return per_device[device_type] if device_type in per_device else per_device[OTHER_DEVICES]


#: Every dtype mpno computes in, by name: the half dtypes first, in the order policies and reports list them.
DTYPE_TABLE: dict[str, DtypeInfo] = {
    "float16": DtypeInfo(
        "float16", torch.float16, half=True, unit_roundoff=2.0**-11, largest=(2 - 2.0**-10) * 2.0**15,
        needs_loss_scaling=True, complex_part_dtype=torch.float32,
        # cuFFT runs float16 at power-of-two sizes; pocketfft (the CPU) has no half precision.
        torch_fft={"cuda": FFT_POWERS_OF_TWO, OTHER_DEVICES: FFT_NONE},
        # PyTorch's CPU float16 products are slow, and their accumulation is not float32 everywhere.
        matrix_products={"cpu": EMULATED, OTHER_DEVICES: NATIVE},
    ),
    "bfloat16": DtypeInfo(
        "bfloat16", torch.bfloat16, half=True, unit_roundoff=2.0**-8, largest=(2 - 2.0**-7) * 2.0**127,
        needs_loss_scaling=False, complex_part_dtype=torch.float32,
        torch_fft={OTHER_DEVICES: FFT_NONE},
        # Native with AVX512-BF16 or AMX-BF16 (mpno.ops.devices.native_bfloat16_cpu).
        matrix_products={"cpu": NATIVE_IF_CAPABLE, OTHER_DEVICES: NATIVE},
    ),
    "float32": DtypeInfo(
        "float32", torch.float32, half=False, unit_roundoff=2.0**-24, largest=(2 - 2.0**-23) * 2.0**127,
        needs_loss_scaling=False, complex_part_dtype=torch.float32,
        torch_fft={OTHER_DEVICES: FFT_ANY}, matrix_products={OTHER_DEVICES: NATIVE},
    ),
    "float64": DtypeInfo(
        "float64", torch.float64, half=False, unit_roundoff=2.0**-53, largest=(2 - 2.0**-52) * 2.0**1023,
        needs_loss_scaling=False, complex_part_dtype=torch.float64,
        torch_fft={OTHER_DEVICES: FFT_ANY}, matrix_products={OTHER_DEVICES: NATIVE},
    ),
}


def info(dtype: str | torch.dtype) -> DtypeInfo:
    """The record of ``dtype``, given by name (``"bfloat16"``) or as a torch dtype.

    Raises ``ValueError`` naming the known dtypes for one that has no record.
    """
    if isinstance(dtype, torch.dtype):
        for record in DTYPE_TABLE.values():
            if record.torch_dtype == dtype:
                return record
    elif dtype in DTYPE_TABLE:
        return DTYPE_TABLE[dtype]
    raise ValueError(f"dtype {dtype!r} has no record in mpno.dtypes.DTYPE_TABLE; known: {', '.join(DTYPE_TABLE)}")


def half_names() -> tuple[str, ...]:
    """The names of the dtypes a policy may name as its half dtype, in table order."""
    return tuple(name for name, record in DTYPE_TABLE.items() if record.half)
