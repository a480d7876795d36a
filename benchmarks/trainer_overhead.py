"""What the trainer costs on top of a bare training loop (target: a full epoch ≤ 1.1× the bare loop).

Same model (FNO, width 32, modes 12, 4 layers), same in-memory data (512 samples
at 32², batch 32), precision ``full``, CPU. Times, alternating between the two to
share any drift, the median over repeats of:

* bare: for each batch, zero_grad, forward, relative L2 loss, backward, step;
* trainer step: ``Trainer.train_epoch`` (finiteness checks, gradient norm, schedule, progress);
* trainer epoch: ``Trainer.fit`` for one epoch with a run directory (adds the atomic
  checkpoint and the metrics row; no test sets, so no evaluation).

    python benchmarks/trainer_overhead.py [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mpno import FNO, NormalizedOperator, UnitGaussianNormalizer
from mpno.data import OperatorDataset
from mpno.nn import losses
from mpno.run.batches import Batches
from mpno.run.trainer import Trainer


def make_data(path: Path, n: int, resolution: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, resolution, resolution, generator=generator)
    y = torch.fft.irfft2(torch.fft.rfft2(x)[..., :8] * 0.5, s=(resolution, resolution))
    torch.save({"x": x, "y": y}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp / "data.pt", 512, 32)
        dataset = OperatorDataset(tmp / "data.pt")
        torch.manual_seed(0)
        model = NormalizedOperator(FNO(1, 1, (12, 12), hidden_channels=32, n_layers=4),
                                   UnitGaussianNormalizer.fit(x for x, _ in dataset),
                                   UnitGaussianNormalizer.fit(y for _, y in dataset))
        loss_fn = losses.LpLoss(2)
        batches = Batches(dataset, 32, torch.device("cpu"))
        trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-4), batches, epochs=10_000,
                          loss=loss_fn, run_dir=tmp, log=lambda m: None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def bare():
            model.train()
            for x, y, _ in batches.iterate(seed=0):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                optimizer.step()

        def trainer_step():
            trainer.train_epoch(0)

        def trainer_epoch():
            trainer.epochs = trainer.epoch + 1
            trainer.fit()

        timings = {"bare": [], "trainer_step": [], "trainer_epoch": []}
        functions = {"bare": bare, "trainer_step": trainer_step, "trainer_epoch": trainer_epoch}
        bare()  # warm-up
        for _ in range(args.repeats):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in timings.items()}
    result = {"threads": torch.get_num_threads(), "repeats": args.repeats, "median_seconds": median,
              "ratio_step": median["trainer_step"] / median["bare"],
              "ratio_epoch": median["trainer_epoch"] / median["bare"]}
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in median.items():
            print(f"{name:14s} {value:7.3f} s  ({value / median['bare']:.3f}× bare)")


if __name__ == "__main__":
    main()
