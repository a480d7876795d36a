"""A small SFNO on shallow-water data, in full and in half precision (CPU, a few minutes).

    .venv/bin/python benchmarks/sphere_swe.py [--train 64] [--test 16] [--epochs 30]

Generates the data with ``mpno.data.generate("shallow-water", ...)`` at 32×64
(equiangular), trains the same SFNO (same seed) in each precision with Adam on
the quadrature-weighted relative L² loss between normalised fields, and prints
the test error per channel and the wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import torch

from mpno import SFNO, Precision
from mpno.data import generate
from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.nn.spherical import SphericalL2Loss


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with h5py.File(path) as f:
        return torch.from_numpy(f["x"][:]), torch.from_numpy(f["y"][:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    (train_path,) = generate("shallow-water", root / "train.h5", n=args.train, resolution=32, progress=False)
    (test_path,) = generate("shallow-water", root / "test.h5", n=args.test, resolution=32, seed=1, progress=False)
    print(f"generated {args.train} + {args.test} samples at 32×64 in {time.perf_counter() - started:.1f} s")
    (x, y), (xt, yt) = load(train_path), load(test_path)
    inputs = UnitGaussianNormalizer.fit(x)
    outputs = UnitGaussianNormalizer.fit(y)
    x, xt, y = inputs.encode(x), inputs.encode(xt), outputs.encode(y)
    loss_fn = SphericalL2Loss("equiangular")
    print(f"{'precision':<22} {'train loss':>10} {'test height':>11} {'vorticity':>9} {'divergence':>10} {'time':>7}")
    for policy in (Precision("full"), Precision("mixed"), Precision("half")):
        torch.manual_seed(0)
        model = SFNO(3, 3, (16, 16), hidden_channels=24, n_layers=3, precision=policy)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
        started = time.perf_counter()
        for _ in range(args.epochs):
            for batch in torch.randperm(len(x)).split(8):
                optimizer.zero_grad()
                loss = loss_fn(model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
            scheduler.step()
        elapsed = time.perf_counter() - started
        with torch.no_grad():
            prediction = outputs.decode(model(xt).float())
        errors = [SphericalL2Loss("equiangular")(prediction[:, c:c + 1], yt[:, c:c + 1]).item() for c in range(3)]
        print(f"{str(policy):<22} {loss.item():10.4f} {errors[0]:11.4f} {errors[1]:9.4f} {errors[2]:10.4f} "
              f"{elapsed:6.1f}s")


if __name__ == "__main__":
    main()
