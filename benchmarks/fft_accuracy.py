"""Accuracy of every transform implementation against float64, at benchmark shapes.

For the forward transform (field → kept coefficients) and the inverse (kept
coefficients → field), each implementation that runs on the device — torch.fft
(cuFFT on CUDA) in float32 and in float16 (CUDA, powers of two), the DFT in
float32, float16 and bfloat16 — reports the normwise relative error against
float64 on random data (batch 8, 64 channels).

    python benchmarks/fft_accuracy.py [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch

from mpno.ops import transforms

SHAPES = [((64, 64), (16, 16)), ((128, 128), (32, 32)), ((256, 256), (32, 32)), ((96, 96), (32, 32))]


def relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.double().cpu()
    if not torch.isfinite(value).all():
        return float("inf")
    return ((value - reference).norm() / reference.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for grid, modes in SHAPES:
        x = torch.randn(8, 64, *grid, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        exact = transforms.forward(x, modes)
        field = transforms.inverse(exact, grid)
        for backend, dtype in (("torch", torch.float32), ("dft", torch.float32), ("torch", torch.float16),
                               ("dft", torch.float16), ("dft", torch.bfloat16)):
            row = {"grid": list(grid), "n_modes": list(modes), "backend": backend, "dtype": str(dtype)[6:]}
            for direction in ("forward", "inverse"):
                try:
                    if direction == "forward":
                        value = transforms.forward(x.to(device), modes, dtype=dtype, backend=backend)
                        row["forward_error"] = relative(value, exact)
                    else:
                        value = transforms.inverse(exact.to(device), grid, dtype=dtype, backend=backend)
                        row["inverse_error"] = relative(value, field)
                except ValueError as err:
                    row[f"{direction}_error"] = None
                    row["note"] = str(err).split(";")[0]
            rows.append(row)
            if not args.json:
                print(row)
    if args.json:
        print(json.dumps({"device": args.device, "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "rows": rows}))


if __name__ == "__main__":
    main()
