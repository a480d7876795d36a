"""Why zero-shot transfer from 32×64 to 64×128 fails on torch-harmonics' shallow-water data, and when it does not.

    python benchmarks/sphere_zero_shot.py [--data DIR] [--train 200] [--test 50] [--epochs 20] [--seeds 0]
        [--set KEY=VALUE ...] [--no-peer] [--json FILE]

Needs torch-harmonics (its ``ShallowWaterSolver`` makes the data; the environment
of ``benchmarks/peer_neuraloperator.py`` has it, and neuraloperator, which is then
trained too). The data are made as neuraloperator's ``load_spherical_swe`` makes
them: a random initial state (``random_initial_condition(mach=0.2)``: independent
normal coefficients at every degree below the solver's truncation
``lmax = ⌈nlat / 3⌉``) and the state one hour later, equiangular grids. Sets:

* ``train_32`` / ``test_32``: 32×64 (truncation 11);
* ``test_64``: 64×128 as neuraloperator makes it (truncation 22: the finer grid's
  states hold random energy at degrees 11–21 as well);
* ``test_64_matched``: 64×128 with the 32×64 solver's truncation (11) and time
  step: the same distribution of flows as the training set, at more points.

Reports the share of the (standardised) inputs' energy at degrees ≥ 11 in each set,
and the test error (``l2`` of ``benchmarks/sphere_swe.py``: relative L2 over all
channels of the standardised fields) of mpno's SFNO trained with ``mpno train``'s
defaults and of neuraloperator's recipe, both at 32×64.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import h5py
import torch

from mpno.nn.normalized import UnitGaussianNormalizer
from mpno.ops import sht
from sphere_swe import PEER_RECIPE, parse_overrides, predict, run_mpno, run_peer, scores

#: name: (latitudes, the solver's truncation and time step from this many latitudes, seed)
SETS = {"train_32": (32, 32, 0), "test_32": (32, 32, 1), "test_64": (64, 64, 1), "test_64_matched": (64, 32, 1)}
TRUNCATION = 11  # ⌈32 / 3⌉: the training set's highest degree + 1


def solve(n: int, nlat: int, like: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (input, state an hour later) pairs on ``nlat × 2 nlat``, with the truncation and steps of ``like``."""
    from torch_harmonics.examples import ShallowWaterSolver

    steps = math.floor(3600 / (256 / like * 150))
    lmax = math.ceil(like / 3)
    solver = ShallowWaterSolver(nlat, 2 * nlat, 3600 / steps, lmax=lmax, mmax=lmax, grid="equiangular").double()
    torch.manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        state = solver.random_initial_condition(mach=0.2)
        xs.append(solver.spec2grid(state))
        ys.append(solver.spec2grid(solver.timestep(state, steps)))
    return torch.stack(xs).float(), torch.stack(ys).float()


def high_degree_share(x: torch.Tensor, normalizer: UnitGaussianNormalizer) -> float:
    """The share of the standardised fields' energy at degrees ≥ :data:`TRUNCATION`."""
    nlat, nlon = x.shape[-2:]
    lmax = sht.exact_lmax(nlat, "equiangular")
    c = torch.view_as_complex(sht.forward(normalizer.encode(x.double()), lmax, lmax, "equiangular").contiguous())
    weight = torch.ones(lmax)
    weight[1:] = 2.0  # the negative orders
    energy = (c.abs() ** 2 * weight).sum((0, 1, 3))  # per degree
    return (energy[TRUNCATION:].sum() / energy.sum()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory of the data files (made there if missing)")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="mpno train options")
    parser.add_argument("--no-peer", action="store_true", help="skip neuraloperator even where it is installed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data or Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    files, data = {}, {}
    for name, (nlat, like, seed) in SETS.items():
        path = files[name] = root / f"{name}.h5"
        if not path.exists():
            x, y = solve(args.train if name.startswith("train") else args.test, nlat, like, seed)
            with h5py.File(path, "w") as f:
                f["x"], f["y"] = x.numpy(), y.numpy()
                f.attrs["grid"] = "equiangular"
        with h5py.File(path) as f:
            data[name] = torch.from_numpy(f["x"][:]), torch.from_numpy(f["y"][:])
    standard = UnitGaussianNormalizer.fit(data["train_32"][1])
    report = {"energy_share_at_degrees_from_11": {name: high_degree_share(x, standard) for name, (x, _) in data.items()},
              "runs": []}
    print("share of the standardised inputs' energy at degrees ≥ 11:",
          {k: round(v, 4) for k, v in report["energy_share_at_degrees_from_11"].items()})
    try:
        import neuralop  # noqa: F401
        libraries = ("mpno",) if args.no_peer else ("mpno", "neuraloperator")
    except ImportError:
        libraries = ("mpno",)
    work = Path(tempfile.mkdtemp())
    tests = [name for name in SETS if name.startswith("test")]
    print(f"{'library':<15} {'seed':>4} " + " ".join(f"{name:>16}" for name in tests))
    for seed in args.seeds:
        for library in libraries:
            if library == "mpno":
                model = run_mpno(files, args, "mixed", seed, parse_overrides(args.set), work)[0]
            else:
                model = run_peer(*data["train_32"], args, seed)[0]
            errors = {name: scores(predict(model, data[name][0]), data[name][1], standard)["l2"] for name in tests}
            report["runs"].append({"library": library, "seed": seed, "l2": errors})
            print(f"{library:<15} {seed:>4} " + " ".join(f"{errors[name]:16.4f}" for name in tests), flush=True)
    if args.json:
        report.update(train=args.train, test=args.test, epochs=args.epochs, peer_recipe=PEER_RECIPE)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
