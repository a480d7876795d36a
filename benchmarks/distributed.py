"""Samples per second of training with 1 and 2 CPU processes (gloo), same global batch.

Expect little gain on 2 cores: the point is that data-parallel training runs and
matches (``tests/test_distributed.py``). Trains an FNO (width 16, modes 8, 4
layers) on 256 synthetic samples at 32², global batch 32, 3 epochs, precision
full; each process uses one thread (torchrun's default), the single process both.

    python benchmarks/distributed.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SAMPLES, EPOCHS, GLOBAL_BATCH = 256, 3, 32


def train(data: Path, out: Path, processes: int) -> dict:
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = launcher + ["-m", "mpno", "train", "--data-train", str(data), "--test-fraction", "0.1",
                          "--modes", "8", "--width", "16", "--layers", "4", "--epochs", str(EPOCHS),
                          "--precision", "full", "--device", "cpu", "--batch-size", str(GLOBAL_BATCH // processes),
                          "--out", str(out), "--json"]
    env = dict(os.environ)
    if processes > 1:
        env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    train_samples = SAMPLES - round(0.1 * SAMPLES)
    return {"processes": processes, "seconds": summary["seconds"],
            "samples_per_second": EPOCHS * train_samples / summary["seconds"],
            "test": summary["test"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x = torch.randn(SAMPLES, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        torch.save({"x": x, "y": torch.roll(x, 5, -1)}, tmp / "data.pt")
        rows = [train(tmp / "data.pt", tmp / f"run{k}", k) for k in (1, 2)]
    result = {"samples": SAMPLES, "epochs": EPOCHS, "global_batch": GLOBAL_BATCH, "cores": os.cpu_count(),
              "runs": rows, "speedup": rows[1]["samples_per_second"] / rows[0]["samples_per_second"]}
    if args.json:
        print(json.dumps(result))
    else:
        for row in rows:
            print(f"{row['processes']} process(es): {row['samples_per_second']:7.1f} samples/s")
        print(f"speed-up with 2: {result['speedup']:.2f}×")


if __name__ == "__main__":
    main()
