"""Accuracy and time of every transform implementation against float64, at benchmark shapes.

For the forward transform (field → kept coefficients) and the inverse (kept
coefficients → field), each implementation that runs on the device — torch.fft
(cuFFT on CUDA) in float32 and in float16 (CUDA, powers of two), the DFT in
float32, float16 and bfloat16 — reports the normwise relative error against
float64 on random data (batch 8, 64 channels) and the median time of one call.
The inverse gets random coefficients, which are not Hermitian-consistent on the
last dimension's 0 plane (as after the spectral weights): it checks that every
backend computes the same projected operator (``docs/precision.md``).

    python benchmarks/fft_accuracy.py [--device cuda] [--repeats 20] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch

from mpno.ops import transforms
from mpno.run.profiling import median_seconds

SHAPES = [((64, 64), (16, 16)), ((128, 128), (32, 32)), ((256, 256), (32, 32)), ((96, 96), (32, 32))]
VARIANTS = (("torch", torch.float32), ("dft", torch.float32), ("torch", torch.float16), ("dft", torch.float16),
            ("dft", torch.bfloat16))


def relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.double().cpu()
    if not torch.isfinite(value).all():
        return float("inf")
    return ((value - reference).norm() / reference.norm()).item()


def measure(fn, reference: torch.Tensor, device: torch.device, repeats: int) -> dict:
    value = fn()
    return {"error": relative(value, reference), "seconds": median_seconds(fn, repeats, device=device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for grid, modes in SHAPES:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(8, 64, *grid, dtype=torch.float64, generator=generator)
        exact = transforms.forward(x, modes)
        coeffs = torch.randn(exact.shape, dtype=torch.float64, generator=generator)
        field = transforms.inverse(coeffs, grid)
        x_device, coeffs_device = x.to(device), coeffs.to(device)
        for backend, dtype in VARIANTS:
            row = {"grid": list(grid), "n_modes": list(modes), "backend": backend, "dtype": str(dtype)[6:]}
            try:
                row["forward"] = measure(lambda: transforms.forward(x_device, modes, dtype=dtype, backend=backend),
                                         exact, device, args.repeats)
                row["inverse"] = measure(lambda: transforms.inverse(coeffs_device, grid, dtype=dtype, backend=backend),
                                         field, device, args.repeats)
            except ValueError as err:
                row["note"] = str(err).split(";")[0]
            rows.append(row)
            if not args.json:
                print(row)
    if args.json:
        print(json.dumps({"device": args.device, "torch": torch.__version__, "repeats": args.repeats,
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "rows": rows}))


if __name__ == "__main__":
    main()
