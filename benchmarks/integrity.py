"""What verifying costs: the SHA-256 fingerprint of a data file and the digest a checkpoint records of its
contents, on files of ``--gigabytes`` (default 1), against reading them alone.

    .venv/bin/python benchmarks/integrity.py [--gigabytes 1] [--repeats 3] [--dir /tmp] [--json FILE]

Medians over ``--repeats``; the files are written to ``--dir`` and removed. A file read a second time comes
from the page cache: the times are those of hashing, not of the disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mpno.data.fingerprint import fingerprint
from mpno.run import checkpoint


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    values = int(args.gigabytes * 2**30 / 4)
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        data = Path(root) / "data.pt"
        torch.save({"x": torch.randn(values // 2), "y": torch.randn(values - values // 2)}, data)
        read = median_seconds(lambda: data.read_bytes(), args.repeats)
        hashed = median_seconds(lambda: fingerprint(data), args.repeats)
        data.unlink()
        state = {"model": {f"w{i}": torch.randn(values // 8) for i in range(8)}, "operator": {"kind": "fno"}}
        saved = Path(root) / "checkpoint.pt"
        checkpoint.save(state, saved)
        loaded = median_seconds(lambda: torch.load(saved, weights_only=True), args.repeats)
        verified = median_seconds(lambda: checkpoint.verify(torch.load(saved, weights_only=True), saved),
                                  args.repeats)
    report = {"gigabytes": args.gigabytes, "repeats": args.repeats, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "read_file_s": read, "fingerprint_s": hashed,
              "torch_load_s": loaded, "torch_load_and_verify_s": verified}
    print(f"{args.gigabytes:g} GB data file: read {read:.2f} s, SHA-256 fingerprint {hashed:.2f} s")
    print(f"{args.gigabytes:g} GB checkpoint: torch.load {loaded:.2f} s, with the digest verified {verified:.2f} s "
          f"({verified / loaded:.2f}×)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
