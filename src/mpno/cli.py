"""The ``mpno`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import ast
import sys

from . import __version__


def _parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _add_generate(commands) -> None:
    from .data import EQUATIONS

    p = commands.add_parser("generate", help="solve a PDE for many random inputs and write a data set",
                            description="Generate an operator-learning data set with mpno's own solvers.")
    p.add_argument("equation", choices=list(EQUATIONS))
    p.add_argument("--resolution", type=int, required=True, help="grid points per dimension")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--coarsen", type=int, nargs="*", default=[], metavar="R",
                   help="also write copies subsampled to these resolutions (OUT_<R>.h5)")
    p.add_argument("--batch-size", type=int, help="samples solved together")
    p.add_argument("--viscosity", type=float, help="navier-stokes, burgers")
    p.add_argument("--time", type=float, help="final time T (navier-stokes, burgers)")
    p.add_argument("--snapshots", type=int, help="navier-stokes: outputs at this many times in (0, T]")
    p.add_argument("--dt", type=float, help="time step (default: from the resolution)")
    p.add_argument("--set", type=_parse_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="any other parameter of the equation, e.g. --set tau=5")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(run=_run_generate)


def _run_generate(args) -> None:
    from .data import generate

    params = {k: getattr(args, k) for k in ("viscosity", "time", "snapshots", "dt") if getattr(args, k) is not None}
    params.update(dict(args.set))
    paths = generate(args.equation, args.out, n=args.n, resolution=args.resolution, seed=args.seed,
                     coarsen=args.coarsen, batch_size=args.batch_size, overwrite=args.overwrite, **params)
    for path in paths:
        print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpno", description="Mixed-precision neural operators.")
    parser.add_argument("--version", action="version", version=f"mpno {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_generate(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as err:
        print(f"mpno {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
