"""How much of a point cloud reaches a GINO's latent grid, and how much signal comes back, at initialisation.

    python benchmarks/geometry_signal.py DATA.h5 [--clouds 16] [--seed 0]

Builds the GINO that ``mpno train --model gino`` builds for ``DATA.h5`` (its
defaults, its position map fitted on the clouds read) and prints, for one batch:

* the share of latent grid points with a cloud point within the radius, and the
  latent neighbours of each cloud point (at least one: the GNO back reaches every point);
* the spread of the input GNO's output over the latent points that have neighbours;
* the spread over space of the latent FNO's activations after its lifting and after
  each block (a signal that halves at every block reaches the output as a constant);
* the spread of the standardised prediction within each cloud, and the gradient
  of its sum with respect to the standardised input features.

A GINO whose prediction barely varies within a cloud and whose gradient is small
starts on the plateau of the constant prediction (relative L2 ≈ 0.82 on
potential flow) and may stay there for epochs.
"""

from __future__ import annotations

import argparse

import torch

from mpno.data.pointclouds import PointCloudBatches
from mpno.run.assembly import model_for
from mpno.run.resolve import open_run
from mpno.run.config import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--clouds", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = RunConfig(model="gino", data_train=args.data, n_train=args.clouds, test_fraction=0.5).validate()
    run = open_run(config, lambda line: None)
    train = run.train
    model = model_for(run.config, train)
    gino = model.operator
    x, _, _ = next(PointCloudBatches(train, len(train), neighborhoods=gino.neighborhoods).iterate())
    inward, outward = x.neighbors
    batch, size = len(x.sizes), inward.n_queries // len(x.sizes)
    counts = inward.counts().reshape(batch, size).float()
    print(f"latent points with a cloud point within radius {gino.radius:.3g}: "
          f"{(counts > 0).float().mean().item():.1%} (per cloud {(counts > 0).float().mean(1).min().item():.1%}"
          f"–{(counts > 0).float().mean(1).max().item():.1%})")
    print(f"latent neighbours per cloud point: mean {outward.counts().float().mean().item():.1f}, "
          f"min {outward.counts().min().item()}")
    features = model.inputs.encode(x).features.requires_grad_()
    standardised = type(x)(x.points, features, x.sizes, x.weights, x.neighbors)
    activations = {}

    def keep(name):
        return lambda module, inputs, output: activations.__setitem__(name, output)

    hooks = [gino.gno_in.register_forward_hook(keep("gno_in")), gino.fno.lifting.register_forward_hook(keep("lifting"))]
    hooks += [block.register_forward_hook(keep(f"block {i}")) for i, block in enumerate(gino.fno.blocks)]
    prediction = gino(standardised)
    for hook in hooks:
        hook.remove()
    reached = inward.counts() > 0
    print(f"input GNO output: std {activations['gno_in'][reached].std().item():.3g} over the latent points reached")
    for name in ["lifting", *(f"block {i}" for i in range(len(gino.fno.blocks)))]:
        field = activations[name]
        print(f"latent FNO after {name}: std over space {field.std(dim=tuple(range(2, field.ndim))).mean().item():.3g}")
    within = torch.stack([p.std() for p in prediction.split(list(x.sizes))]).mean().item()
    prediction.sum().backward()
    print(f"prediction: std within a cloud {within:.3g}; gradient of its sum wrt the features: "
          f"{features.grad.norm().item():.3g}")


if __name__ == "__main__":
    main()
