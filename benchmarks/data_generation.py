"""How fast the data generators are.

* Darcy: 1000 samples at 64² (target ≤ 60 s on 2 CPU cores).
* Navier–Stokes: seconds per sample at 64², T = 10, ν = 1e-3, batch 32 (target ≤ 0.5 s).

    python benchmarks/data_generation.py [--json] [--darcy-n 1000] [--ns-n 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mpno import data


def timed_generation(equation: str, n: int, resolution: int, **params) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        data.generate(equation, Path(tmp) / "out.h5", n=n, resolution=resolution, progress=False, **params)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--darcy-n", type=int, default=1000)
    parser.add_argument("--ns-n", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    darcy = timed_generation("darcy", args.darcy_n, 64)
    ns = timed_generation("navier-stokes", args.ns_n, 64, viscosity=1e-3, time=10.0, batch_size=args.ns_n)
    result = {
        "threads": torch.get_num_threads(),
        "darcy": {"n": args.darcy_n, "resolution": 64, "seconds": darcy},
        "navier_stokes": {"n": args.ns_n, "resolution": 64, "time": 10.0, "viscosity": 1e-3,
                          "batch_size": args.ns_n, "seconds": ns, "seconds_per_sample": ns / args.ns_n},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"darcy          {args.darcy_n} samples at 64²: {darcy:6.1f} s")
        print(f"navier-stokes  {args.ns_n} samples at 64², T=10: {ns:6.1f} s = {ns / args.ns_n:.3f} s/sample")


if __name__ == "__main__":
    main()
