"""GNO and GINO numerics and memory: half precision against float64, and memory against the chunk size.

* accuracy: a GNOBlock and an (untrained) GINO on potential-flow clouds, in every
  precision, against the same weights in float64;
* memory: one GNO (a latent grid gathering from a dense surface cloud), forward and
  backward, with several chunk sizes: the largest tensor any operator makes, the
  bytes autograd keeps for backward (on CUDA also the allocator's peak) and the time, a fresh
  process per chunk size.

    python benchmarks/geometry.py [--grid 24] [--points 6000] [--chunks 4096 16384 65536 0] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

import mpno
from mpno.data import potential_flow
from mpno.data.pointclouds import PointClouds
from mpno.precision import UNIT_ROUNDOFF
from mpno.run import profiling

POLICIES = ("full", "amp", "mixed", "half", mpno.Precision("mixed", dtype="bfloat16"),
            mpno.Precision("half", dtype="bfloat16"))


def relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def accuracy() -> dict:
    torch.manual_seed(0)
    x = PointClouds.cat([x for x, _ in potential_flow.dataset(4, points=400)])
    latent = torch.rand(2000, 3) * 2 - 1
    block = mpno.GNOBlock(6, 16, radius=0.3, kernel_hidden=32)
    reference = copy.deepcopy(block).double()(latent.double(), x.points.double(), x.features.double())
    gino = mpno.GINO(6, 1, n_modes=(8, 8, 8), hidden_channels=16, n_layers=3, latent_grid=16, radius=0.2)
    x64 = dataclasses.replace(x, points=x.points.double(), features=x.features.double())
    rows = []
    for policy in map(mpno.Precision.parse, POLICIES):
        mpno.precision.set_precision(block, policy)
        gino.set_precision(policy)
        exact = copy.deepcopy(gino).double()  # the same function (stabilizer included) in float64
        exact.set_precision(mpno.Precision("full", stabilizer=policy.stabilizer))
        with torch.no_grad():
            gno = relative(block(latent, x.points, x.features), reference)
            whole = relative(gino(x), exact(x64))
        dtype = policy.real_dtype
        rows.append({"precision": str(policy), "gno_vs_float64": gno, "gino_vs_float64": whole,
                     "gno_tolerance_u_sqrt_15": UNIT_ROUNDOFF[dtype] * 15**0.5 if dtype else None})
    return {"gno": "GNOBlock(6 → 16), 2000 queries, 4 clouds × 400 points, radius 0.3",
            "gino": "GINO(6 → 1), latent 16³, modes 8³, width 16, 3 layers, radius 0.2", "rows": rows}


def memory_row(grid: int, points: int, chunk: int, device: str = "cpu") -> dict:
    """One GNO training step (forward, backward) with ``chunk`` edges per chunk (0: all at once)."""
    torch.manual_seed(0)
    device = torch.device(device)
    x, _ = potential_flow.dataset(1, points=points)[0]
    gino = mpno.GINO(6, 1, n_modes=(8, 8, 8), latent_grid=grid, radius=2.0 / (grid - 1) * 1.5)
    inward, _ = gino.neighborhoods(x.points)
    latent, points_, inward = gino.latent_points(device), x.points.to(device), inward.to(device)
    block = mpno.GNOBlock(6, 32, radius=gino.radius, kernel_hidden=64, chunk_size=chunk or None).to(device)
    features = x.features.to(device).requires_grad_()

    def step():
        block(latent, points_, features, inward).square().sum().backward()

    row = {"chunk_size": chunk or None, "queries": len(latent), "points": points, "edges": inward.n_edges,
           "radius": gino.radius, "device": str(device)}
    if device.type == "cuda":
        step()
        row["cuda_peak_allocated_bytes"] = profiling.cuda_peak_bytes(step, device)
    _, row["largest_tensor_bytes"] = profiling.operator_costs(step)
    row["saved_for_backward_bytes"] = profiling.saved_tensor_bytes(lambda: block(latent, points_, features, inward))
    row["step_seconds"] = profiling.median_seconds(step, repeats=3, device=device)
    return row


def memory(grid: int, points: int, chunks, threads: int, device: str) -> list[dict]:
    """:func:`memory_row` for each chunk size, each in a fresh interpreter (memory peaks do not leak)."""
    rows = []
    for chunk in chunks:
        code = (f"import json, torch; torch.set_num_threads({threads}); import geometry; "
                f"print(json.dumps(geometry.memory_row({grid}, {points}, {chunk}, {device!r})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=24, help="latent grid points per dimension")
    parser.add_argument("--points", type=int, default=6000, help="surface points")
    parser.add_argument("--chunks", type=int, nargs="+", default=[4096, 16384, 65536, 0], help="edges per chunk (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the memory rows run (cuda: also the allocator's peak)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "accuracy": accuracy(),
              "memory": memory(args.grid, args.points, args.chunks, args.threads, args.device)}
    print(f"{'precision':<22} {'GNO vs fp64':>12} {'u·√15':>9} {'GINO vs fp64':>13}")
    for row in report["accuracy"]["rows"]:
        bound = f"{row['gno_tolerance_u_sqrt_15']:.1e}" if row["gno_tolerance_u_sqrt_15"] else "—"
        print(f"{row['precision']:<22} {row['gno_vs_float64']:>12.2e} {bound:>9} {row['gino_vs_float64']:>13.2e}")
    rows = report["memory"]
    print(f"\nGNO memory: {rows[0]['queries']} latent points ← {rows[0]['points']} surface points, "
          f"{rows[0]['edges']} edges (fresh process per row)")
    cuda = "cuda_peak_allocated_bytes" in rows[0]
    print(f"{'chunk':>8} {'largest MiB':>12} {'saved MiB':>10}" + (f" {'CUDA peak MiB':>14}" if cuda else "")
          + f" {'step s':>7}")
    for row in rows:
        print(f"{str(row['chunk_size'] or 'all'):>8} {row['largest_tensor_bytes'] / 2**20:>12.2f} "
              f"{row['saved_for_backward_bytes'] / 2**20:>10.2f}"
              + (f" {row['cuda_peak_allocated_bytes'] / 2**20:>14.1f}" if cuda else "")
              + f" {row['step_seconds']:>7.3f}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
