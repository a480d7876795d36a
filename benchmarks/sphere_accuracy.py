"""Half-precision spherical harmonic transforms against float64, next to the rounding tolerance.

    .venv/bin/python benchmarks/sphere_accuracy.py [--sizes 32 64 128] [--seeds 3] [--aliasing]

For each grid, size (nlat × 2·nlat) and half dtype: the normwise relative error
of the forward transform (coefficients), the inverse (field) and the round trip
on band-limited random fields (|c_lm| ~ 1/(1 + l), all degrees the grid resolves
exactly), the maximum over seeds, and the tolerance ``u·√k`` the tests allow
(k = 6 forward, 4 inverse, 10 round trip; docs/sphere.md).

``--aliasing`` measures instead, in float64, what keeping degrees beyond the
grid's exact quadrature costs on equiangular grids: the relative round-trip
error ``‖SHT⁻¹(SHT(f)) − f‖ / ‖f‖`` (on the grid points) with ``lmax`` the exact
limit ``(nlat + 1) // 2`` and with ``lmax = nlat`` (torch-harmonics' and
neuraloperator's choice), for fields band-limited below each of them and for
white noise (an independent normal value at every grid point).
"""

from __future__ import annotations

import argparse
import math

import torch

from mpno.ops import sht
from mpno.precision import UNIT_ROUNDOFF


def relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def coefficients(lmax: int, mmax: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(4, lmax, mmax, 2, generator=gen, dtype=torch.float64)
    l, m = torch.arange(lmax)[:, None], torch.arange(mmax)[None, :]
    c = c * ((m <= l) / (1.0 + l))[..., None]
    c[..., 0, 1] = 0.0  # real at m = 0
    return c


def round_trip(f: torch.Tensor, lmax: int) -> float:
    nlat, nlon = f.shape[-2:]
    mmax = min(lmax, nlon // 2 + 1)
    back = sht.inverse(sht.forward(f, lmax, mmax, "equiangular"), nlat, nlon, "equiangular")
    return relative(back, f)


def aliasing(sizes: list[int], seeds: int) -> None:
    """The round-trip table of ``--aliasing`` (maximum over seeds)."""
    print(f"{'nlat×nlon':>9} {'field':<22} {'lmax exact':>10} {'error':>9} {'lmax = nlat':>11} {'error':>9}")
    for nlat in sizes:
        nlon, exact = 2 * nlat, sht.exact_lmax(nlat, "equiangular")
        fields = {}
        for degrees in (exact, nlat):
            fields[f"band-limited, l < {degrees}"] = [
                sht.inverse(coefficients(degrees, min(degrees, nlon // 2 + 1), seed), nlat, nlon, "equiangular")
                for seed in range(seeds)]
        fields["white noise"] = [torch.randn(4, nlat, nlon, dtype=torch.float64,
                                             generator=torch.Generator().manual_seed(seed)) for seed in range(seeds)]
        for name, samples in fields.items():
            errors = [max(round_trip(f, lmax) for f in samples) for lmax in (exact, nlat)]
            print(f"{f'{nlat}×{nlon}':>9} {name:<22} {exact:>10} {errors[0]:9.2e} {nlat:>11} {errors[1]:9.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--aliasing", action="store_true", help="the float64 round trip beyond the exact lmax")
    args = parser.parse_args()
    if args.aliasing:
        aliasing(args.sizes, args.seeds)
        return
    print(f"{'grid':<15} {'nlat×nlon':>9} {'dtype':>8} {'forward':>9} {'inverse':>9} {'round trip':>10} "
          f"{'tolerance':>9} {'ratio':>6}")
    for grid in sht.GRIDS:
        for nlat in args.sizes:
            nlon = 2 * nlat
            lmax = sht.exact_lmax(nlat, grid)
            mmax = min(lmax, nlon // 2)
            for dtype in (torch.float16, torch.bfloat16):
                errors = []
                for seed in range(args.seeds):
                    c = coefficients(lmax, mmax, seed)
                    f = sht.inverse(c, nlat, nlon, grid)
                    coeffs = sht.forward(f, lmax, mmax, grid, dtype=dtype)
                    errors.append((relative(coeffs, c),
                                   relative(sht.inverse(c, nlat, nlon, grid, dtype=dtype), f),
                                   relative(sht.inverse(coeffs, nlat, nlon, grid), f)))
                worst = [max(e[i] for e in errors) for i in range(3)]
                tol = UNIT_ROUNDOFF[dtype] * math.sqrt(10)
                name = str(dtype).removeprefix("torch.")
                print(f"{grid:<15} {f'{nlat}×{nlon}':>9} {name:>8} {worst[0]:9.2e} {worst[1]:9.2e} {worst[2]:10.2e} "
                      f"{tol:9.2e} {worst[2] / tol:6.2f}")


if __name__ == "__main__":
    main()
