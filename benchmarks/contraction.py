"""Contraction strategies for factorised spectral weights (TFNO).

For CP and Tucker weights at the paper's Navier–Stokes setting (2D, 128² grid,
hidden 64, n_modes 32, batch 8, rank 0.05), contracts the layer's kept Fourier
coefficients (8, 64, 32, 17) with the weight by three strategies:

* ``naive``: one real ``torch.einsum`` over all operands, each keeping its own
  (re, im) axis (ordered by opt_einsum "auto", as torch.einsum does);
* ``reconstructed``: rebuild the dense weight, then one dense contraction;
* ``planned``: mpno's planned pairwise complex contraction.

Reports per strategy and dtype (float32, float16): forward FLOPs and the largest
tensor produced (counted on meta tensors: the CUDA code path), and the measured
peak memory and median time of one forward + backward, each in a fresh
subprocess (CPU: peak RSS above the inputs; CUDA: peak allocated above them).

    python benchmarks/contraction.py [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import torch

from mpno.nn.factorized import factorized_weight
from mpno.nn.spectral import contract_dense
from mpno.ops.contraction import complex_einsum
from mpno.ops.transforms import kept_shape
from mpno.run import profiling
from one_shot import one_shot_einsum

CONFIG = {"batch": 8, "hidden": 64, "n_modes": (32, 32), "grid": (128, 128), "rank": 0.05}
FACTORIZATIONS = ("cp", "tucker")
STRATEGIES = ("naive", "reconstructed", "planned")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def setup(factorization: str, dtype: torch.dtype, device: str):
    """The weight, the coefficients and factors (leaves needing grad), and each strategy's function."""
    torch.manual_seed(0)
    kept = kept_shape(CONFIG["n_modes"])
    weight = factorized_weight(factorization, (CONFIG["hidden"], CONFIG["hidden"], *kept), CONFIG["rank"])
    coeffs = torch.randn(CONFIG["batch"], CONFIG["hidden"], *kept, 2, device=device, dtype=dtype)
    factors = [f.detach().to(device=device, dtype=dtype) for f in weight.factors]
    equation = weight.contraction_equation()
    strategies = {
        "naive": lambda x, fs: one_shot_einsum(equation, x, *fs),
        "reconstructed": lambda x, fs: contract_dense(x, complex_einsum(weight.reconstruction_equation(), *fs)),
        "planned": lambda x, fs: complex_einsum(equation, x, *fs),
    }
    return weight, coeffs, factors, strategies


def count(factorization: str, strategy: str, dtype: torch.dtype) -> tuple[int, int]:
    _, coeffs, factors, strategies = setup(factorization, dtype, "meta")
    return profiling.operator_costs(lambda: strategies[strategy](coeffs, factors))


def measure(factorization: str, strategy: str, dtype_name: str, device: str, repeats: int) -> dict:
    """Peak memory and median time of one forward + backward (run in a fresh process)."""
    _, coeffs, factors, strategies = setup(factorization, DTYPES[dtype_name], device)
    leaves = [t.requires_grad_() for t in (coeffs, *factors)]
    fn = strategies[strategy]

    def step():
        out = fn(leaves[0], leaves[1:])
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        return grads

    if device == "cuda":
        base = torch.cuda.memory_allocated()
        peak = profiling.cuda_peak_bytes(step, torch.device(device)) - base
    else:
        base = profiling.current_rss_bytes()
        profiling.reset_peak_rss()
        step()
        peak = profiling.peak_rss_bytes() - base
    seconds = profiling.median_seconds(step, repeats, warmup=0, device=torch.device(device))
    return {"peak_memory_bytes": peak, "seconds": seconds}


def measure_in_subprocess(factorization, strategy, dtype_name, device, repeats) -> dict:
    cmd = [sys.executable, __file__, "--measure", factorization, strategy, dtype_name,
           "--device", device, "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--measure", nargs=3, metavar=("FACTORIZATION", "STRATEGY", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.device, args.repeats)))
        return

    results = []
    for factorization in FACTORIZATIONS:
        weight = setup(factorization, torch.float32, "meta")[0]
        dense_elements = math.prod(weight.shape)
        for dtype_name, dtype in DTYPES.items():
            for strategy in STRATEGIES:
                flops, largest = count(factorization, strategy, dtype)
                row = {"factorization": factorization, "ranks": list(weight.ranks), "strategy": strategy,
                       "dtype": dtype_name, "flops": flops, "largest_intermediate_bytes": largest,
                       "dense_weight_bytes": dense_elements * 2 * torch.finfo(dtype).bits // 8}
                row.update(measure_in_subprocess(factorization, strategy, dtype_name, args.device, args.repeats))
                results.append(row)
                if not args.json:
                    print(f"{factorization:7s} {dtype_name:8s} {strategy:14s} {flops / 1e9:8.2f} GFLOP  "
                          f"largest {largest / 2**20:8.1f} MiB  "
                          + (f"peak {row['peak_memory_bytes'] / 2**20:8.1f} MiB  {row['seconds'] * 1e3:8.1f} ms"
                             if "seconds" in row else row["error"]), flush=True)
    summary = {"config": CONFIG, "device": args.device, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "results": results}
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
