"""The ``mpno`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import ast
import os
import sys

from .. import __version__


def _number(text: str) -> int | float:
    """An int where the text is one (``8``), else a float (``0.05``)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _print_json(value) -> None:
    """``value`` as one line of valid JSON (non-finite numbers become null), the last line of stdout."""
    import json

    from .reporting import json_safe

    print(json.dumps(json_safe(value), allow_nan=False))


def _parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE``: the value a Python literal (``true``/``false`` in any case a bool), else the text."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


#: Flags that were spelled otherwise before a name meant one thing in every command: ``{command: {name: old
#: spelling}}``; the old spelling stays an alias of the name.
RENAMED = {"bench": {"--resolution": "--grid", "--batch-size": "--batch"}, "bounds": {"--checkpoint": "--model"}}


def _spelled(command: str, name: str) -> list[str]:
    """The spellings of the flag ``name`` of ``command``: the name, then its old spelling if it had one."""
    old = RENAMED.get(command, {}).get(name)
    return [name] if old is None else [name, old]


#: Options that several commands take, declared once: one spelling and one meaning in every command (``mpno
#: train`` generates its flags from its run options, :class:`mpno.run.config.RunConfig`, under the same names).
SHARED = {
    "device": {"default": "auto", "help": "auto (cuda where there is one, else cpu), cpu, cuda, cuda:N or mps"},
    "threads": {"type": int, "help": "CPU threads torch computes with; default: torch's, one per core (on a busy "
                                     "machine fewer run faster: a line says so)"},
    "json": {"action": "store_true", "help": "print the result as one JSON line, last"},
    "batch_size": {"type": int, "help": "samples per batch"},
    "precision": {"help": "a policy, mode[/dtype][/stabilizer]: full, amp, mixed, half, e.g. mixed/bfloat16 or "
                          "half/float16/tanh"},
    "dtype": {"help": "the half dtype of --precision where it names none (--precision mixed --dtype bfloat16)"},
    "strict": {"action": "store_true", "help": "refuse data that lie outside what the model was trained on (points "
                                               "outside its fitted box, inputs far outside the training range) "
                                               "instead of saying so in a line"},
}


def _shared(parser, command: str, name: str, note: str | None = None, **changes) -> None:
    """Add the shared option ``name`` (:data:`SHARED`) to ``command``'s ``parser``; ``note`` says what it means
    there beyond the shared meaning (its default, say)."""
    from ..precision import DTYPES

    kwargs = {**SHARED[name], **({"choices": tuple(DTYPES)} if name == "dtype" else {}), **changes}
    if note:
        kwargs["help"] = f"{kwargs['help']}; {note}"
    parser.add_argument(*_spelled(command, "--" + name.replace("_", "-")), dest=name, **kwargs)


def _policy_text(args) -> str | None:
    """``--precision`` with ``--dtype`` folded in (``mixed`` and ``bfloat16``: ``mixed/bfloat16``)."""
    from ..precision import DTYPES

    precision, dtype = args.precision, getattr(args, "dtype", None)
    if not dtype:
        return precision
    if not precision:
        raise ValueError("--dtype sets the half dtype of --precision; give both, e.g. --precision mixed "
                         f"--dtype {dtype}")
    mode, *rest = precision.split("/")
    named = rest[0] if rest and rest[0] in DTYPES else None
    if named and named != dtype:
        raise ValueError(f"--precision {precision} names the dtype {named}, --dtype {dtype}; give one")
    return "/".join([mode, dtype, *(rest[1:] if named else rest)])


def _use_threads(args, device: str = "cpu") -> None:
    """Set ``--threads`` (on the CPU, a line on stderr when fewer cores are free than torch uses)."""
    from .assembly import resolve_device
    from .threads import use_threads

    use_threads(args.threads, lambda line: print(line, file=sys.stderr), resolve_device(device).type)


def _add_generate(commands) -> None:
    from ..data.generate import GENERATORS, flags

    p = commands.add_parser("generate", help="solve a PDE for many random inputs and write a data set",
                            description="Generate an operator-learning data set with mpno's own solvers.")
    p.add_argument("equation", choices=list(GENERATORS))
    p.add_argument("--resolution", type=int, help="grid points per dimension (shallow-water: latitudes); "
                                                  "not for potential-flow")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--coarsen", type=int, nargs="*", default=[], metavar="R",
                   help="also write copies subsampled to these resolutions (OUT_<R>.h5)")
    _shared(p, "generate", "batch_size", "samples solved together")
    p.add_argument("--steps", type=int, help="write trajectories of this many snapshots (for forecasting) instead "
                                             "of input-output pairs: navier-stokes, burgers, shallow-water")
    p.add_argument("--interval", type=float, help="with --steps: the time between snapshots (default: the "
                                                  "equation's --time)")
    parameters = p.add_argument_group("the equations' parameters (each generator declares its own)")
    for name, (kind, text) in flags().items():
        parameters.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    parameters.add_argument("--set", type=_parse_setting, action="append", default=[], metavar="KEY=VALUE",
                            help="any other parameter of the equation, e.g. --set tau=5")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _shared(p, "generate", "threads")
    p.set_defaults(run=_run_generate)


def _run_generate(args) -> None:
    from ..data.generate import GENERATORS, flags, generate

    params = {name: getattr(args, name) for name in flags() if getattr(args, name) is not None}
    taken = GENERATORS[args.equation].flags
    for name in params:
        if name not in taken:
            offered = ", ".join("--" + n.replace("_", "-") for n in taken) or "none"
            raise ValueError(f"--{name.replace('_', '-')} does not apply to {args.equation} (its flags: {offered}; "
                             "others with --set KEY=VALUE)")
    params.update(dict(args.set))
    _use_threads(args)
    paths = generate(args.equation, args.out, n=args.n, resolution=args.resolution, seed=args.seed,
                     coarsen=args.coarsen, batch_size=args.batch_size, overwrite=args.overwrite, steps=args.steps,
                     interval=args.interval, **params)
    for path in paths:
        print(path)


def _config_flags(spec) -> list[str]:
    return ["--" + name.replace("_", "-") for name in (spec.name, *spec.metadata["aliases"])]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`RunConfig` field (and its aliases), with its help, kind and default."""
    import dataclasses

    from .config import RunConfig

    groups = {}
    for spec in dataclasses.fields(RunConfig):
        meta = spec.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(f"{meta['group']} options"))
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        said = "default" in meta["help"] or shown in (None, "")  # the help says it, or there is none to say
        kwargs = {"dest": spec.name, "default": None, "help": meta["help"] if said else f"{meta['help']} (default: {shown})"}
        if meta["choices"]:
            kwargs["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        if meta["kind"] == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta["kind"].endswith("_list"):
            kwargs.update(nargs="+", action="extend" if spec.name == "data_test" else "store")
        group.add_argument(*_config_flags(spec), **kwargs)


def _given_options(args) -> dict:
    """The :class:`RunConfig` options given on the command line."""
    import dataclasses

    from .config import RunConfig

    return {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(RunConfig)
            if getattr(args, spec.name, None) is not None}


def _add_train(commands) -> None:
    p = commands.add_parser(
        "train", help="train a neural operator (no arguments: the Darcy example)",
        description="Train an FNO, TFNO, SFNO or GINO in mixed precision. With no arguments, runs the default example: "
                    "Darcy flow generated by mpno, trained at 32² in precision 'mixed', "
                    "tested at 32² and zero-shot at 64². Every option can also be set in a --config file.")
    p.add_argument("--config", help="a .toml, .yaml or .json file of options (flags override it)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved options as YAML (which --config reads back) and exit")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint; with --epochs N, "
                                                     "extend it to N epochs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out directory")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: resume although the data files changed since the run fingerprinted them "
                        "(config.json records it)")
    _shared(p, "train", "json")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no progress: only the final table")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="also print the resolved options first")
    _add_config_options(p)
    p.set_defaults(run=_run_train)


def _run_train(args) -> None:
    from .config import RunConfig
    from .experiment import train
    from .reporting import summary_table

    given = _given_options(args)
    extend = None
    if args.resume:
        extra = sorted(set(given) - {"epochs", "device", "threads"}) + (["config"] if args.config else [])
        if extra:
            raise ValueError(f"--resume continues {args.resume} with its saved options (only --epochs, --device "
                             "and --threads may change); drop " + ", ".join("--" + k.replace("_", "-") for k in extra))
        config = RunConfig.from_dict(given, source="command line")  # typed and checked
        extend = config.epochs if "epochs" in given else None
    else:
        values = RunConfig.from_file(args.config).to_dict() if args.config else {}
        config = RunConfig.from_dict({**values, **given}, source="command line").validate()
        if args.print_config or args.verbose:
            from .assembly import default_paths, resolve_device
            from .resolve import what_runs

            shown = what_runs(config, default_paths(), resolve_device(config.device))
            print(shown.to_yaml(), end="", file=sys.stdout if args.print_config else sys.stderr)
            if args.print_config:
                return
    if args.allow_changed_data and not args.resume:
        raise ValueError("--allow-changed-data applies to --resume RUN_DIR")
    summary = train(config, resume=args.resume, overwrite=args.overwrite, epochs=extend, progress=not args.quiet,
                    allow_changed_data=args.allow_changed_data)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, process 0 reports
        print(summary_table(summary))
        if args.json:
            _print_json(summary)


def _add_evaluate(commands) -> None:
    p = commands.add_parser("evaluate", help="test a saved model on data files",
                            description="Evaluate a checkpoint (checkpoint.pt or best.pt of a run) on data files, "
                                        "in the precision it was saved in (or --precision).")
    p.add_argument("checkpoint")
    p.add_argument("--data-test", "--data", dest="data_test", action="extend", nargs="+", required=True,
                   help="data files, repeatable")
    _shared(p, "evaluate", "precision", "evaluate in this policy instead of the saved one")
    _shared(p, "evaluate", "dtype")
    p.add_argument("--x-key", help="input key in the data files (default: the run's)")
    p.add_argument("--y-key", help="output key in the data files (default: the run's)")
    _shared(p, "evaluate", "device")
    _shared(p, "evaluate", "batch_size", "default: the run's")
    _shared(p, "evaluate", "threads")
    _shared(p, "evaluate", "strict")
    symmetries = p.add_argument_group("symmetries")
    symmetries.add_argument("--symmetry-check", nargs="*", metavar="KIND",
                            help="also report how far the model is from commuting with each symmetry: shift, flip, "
                                 "rotate on a grid, rotate, reflect on point clouds (default: those the run trained "
                                 "with, --augment), as ‖M(g x) − g M(x)‖ / ‖g M(x)‖ over the test samples")
    symmetries.add_argument("--channel-types", help="with --symmetry-check: how each field transforms (default: "
                                                    "the run's; see mpno train --help)")
    forecasting = p.add_argument_group("forecasting (trajectories)")
    forecasting.add_argument("--rollout", type=int, metavar="N",
                             help="roll the model out N steps from the first window of every trajectory and report "
                                  "the error at each lead time")
    forecasting.add_argument("--spectra-at", type=int, nargs="+", metavar="LEAD",
                             help="with --rollout: lead times whose power spectra are reported (default: the first, "
                                  "middle and last)")
    forecasting.add_argument("--plot", metavar="FILE.png",
                             help="with --rollout: plot the error against lead time and the spectra")
    _shared(p, "evaluate", "json")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> None:
    from .evaluation import evaluate_checkpoint, rollout_checkpoint
    from .reporting import results_table, rollout_table, symmetry_table

    _use_threads(args, args.device)
    if args.rollout is None and (args.spectra_at or args.plot):
        raise ValueError("--spectra-at and --plot describe a rollout: add --rollout N")
    if args.channel_types is not None and args.symmetry_check is None:
        raise ValueError("--channel-types says how fields transform under a symmetry: add --symmetry-check")
    if args.rollout is not None and args.symmetry_check is not None:
        raise ValueError("--symmetry-check applies to pairs, not to a rollout: drop one of them")
    if args.rollout is not None:
        report = rollout_checkpoint(args.checkpoint, args.data_test, args.rollout, args.device, args.batch_size,
                                    precision=_policy_text(args), x_key=args.x_key, spectra_at=args.spectra_at)
        print(rollout_table(report))
        if args.plot:
            from .plots import plot_rollout

            plot_rollout(report, args.plot)
            print(f"plot: {args.plot}")
        if args.json:
            _print_json(report)
        return
    report = evaluate_checkpoint(args.checkpoint, args.data_test, args.device, args.batch_size,
                                 precision=_policy_text(args), x_key=args.x_key, y_key=args.y_key, strict=args.strict,
                                 symmetry_check=args.symmetry_check, channel_types=args.channel_types)
    print(results_table(report["test"], report["grids"]))
    if "symmetry" in report:
        print(symmetry_table(report["symmetry"]))
    print(f"precision: {report['precision']}")
    if args.json:
        _print_json(report)


def _add_predict(commands) -> None:

    p = commands.add_parser("predict", help="run a trained model on a data file and write the predictions",
                            description="Predict every input of a data file with a checkpoint (checkpoint.pt or "
                                        "best.pt of a run) and write them to HDF5; when the file also holds "
                                        "outputs, write the errors too. Reports throughput and peak memory.")
    p.add_argument("checkpoint")
    p.add_argument("data", help="data file (.pt, .h5, .npz); outputs are optional")
    p.add_argument("--out", required=True, help="output .h5 file (never the input file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _shared(p, "predict", "precision", "predict in this policy instead of the saved one")
    _shared(p, "predict", "dtype")
    _shared(p, "predict", "batch_size", "default: the run's")
    p.add_argument("--x-key", help="input key in the data file (default: the run's)")
    p.add_argument("--y-key", help="output key in the data file (default: the run's)")
    _shared(p, "predict", "device")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _shared(p, "predict", "threads")
    _shared(p, "predict", "strict")
    p.add_argument("--rollout", type=int, metavar="N",
                   help="trajectories: roll the model out N steps from the first window of every trajectory and "
                        "write the predicted trajectories (with the errors where the file holds the truth)")
    _shared(p, "predict", "json")
    p.set_defaults(run=_run_predict)


def _run_predict(args) -> None:
    from .predict import predict

    _use_threads(args, args.device)
    precision = _policy_text(args)
    if args.rollout is not None:
        from .predict import predict_rollout

        report = predict_rollout(args.checkpoint, args.data, args.out, args.rollout, precision, args.batch_size,
                                 args.device, args.x_key, overwrite=args.overwrite)
        print(f"{report['out']}: {report['trajectories']} trajectories of {report['steps']} predicted steps in "
              f"{report['precision']}")
        if report["relative_l2"] is not None:
            print("relative L2 error per lead time: " + " ".join(f"{e:.4f}" for e in report["relative_l2"]))
        if args.json:
            _print_json(report)
        return
    report = predict(args.checkpoint, args.data, args.out, precision, args.batch_size, args.device,
                     args.x_key, args.y_key, progress=not args.quiet, overwrite=args.overwrite, strict=args.strict)
    where = f" at {'×'.join(map(str, report['grid']))}" if report["grid"] else " of point clouds"
    print(f"{report['out']}: {report['samples']} predictions{where} in {report['precision']}")
    if report["relative_l2"] is not None:
        print(f"relative L2 error: {report['relative_l2']:.4f} (mean over samples)")
    print(f"{report['samples_per_second']:.1f} samples/s, peak memory {report['peak_memory_bytes'] / 2**20:.0f} MiB "
          f"({report['memory_kind']})")
    if args.json:
        _print_json(report)


def _add_bounds(commands) -> None:
    p = commands.add_parser(
        "bounds", help="is half precision safe for this data (and model)?",
        description="Measure the discretisation error the data carry and the precision error of each dtype "
                    "(float16, bfloat16, float32), with their closed-form bounds and a verdict, for fields on a "
                    "grid or on the sphere; with --checkpoint, also the model's half path against float64, layer "
                    "by layer.")
    p.add_argument("data", help="data file (.pt, .h5, .npz)")
    p.add_argument(*_spelled("bounds", "--checkpoint"),
                   help="a checkpoint (checkpoint.pt or best.pt of a run) whose model to audit as well")
    p.add_argument("--n-modes", "--modes", dest="n_modes", type=int, nargs="+",
                   help="kept modes (default: the model's, or min(16, n/4); on the sphere (lmax, mmax))")
    p.add_argument("--samples", type=int, default=64, help="samples to audit (64)")
    p.add_argument("--field", choices=("x", "y"), default="x", help="audit the inputs (x, default) or outputs (y)")
    _shared(p, "bounds", "precision", "audit the model in this policy (default: its last training policy; mixed "
                                     "if that was full)")
    _shared(p, "bounds", "dtype")
    p.add_argument("--x-key")
    p.add_argument("--y-key")
    p.add_argument("--spatial-dims", type=int)
    _shared(p, "bounds", "device")
    p.add_argument("--plot", metavar="FILE.png", help="write a log-log plot of both errors against resolution "
                                                       "(with --rollout: both errors against lead time)")
    forecasting = p.add_argument_group("forecasting (trajectories, with --checkpoint)")
    forecasting.add_argument("--rollout", type=int, metavar="N",
                             help="roll the checkpoint's model out N steps in full precision and in each low "
                                  "precision from the same initial states: the precision gap per lead time beside "
                                  "the model error, and its bound")
    forecasting.add_argument("--precisions", nargs="+", metavar="POLICY",
                             help="with --rollout: the low precisions compared with full (default: mixed and "
                                  "half, in float16 and bfloat16)")
    _shared(p, "bounds", "batch_size", "with --rollout; default: the run's")
    _shared(p, "bounds", "json")
    p.set_defaults(run=_run_bounds)


def _run_bounds(args) -> None:
    from .audits import bounds_report, rollout_report
    from .plots import plot_bounds, plot_precision_gap
    from .reporting import bounds_table, precision_gap_table

    if args.rollout is not None:
        if args.checkpoint is None:
            raise ValueError("--rollout rolls a trained model out: give its --checkpoint RUN/best.pt")
        report = rollout_report(args.data, args.checkpoint, args.rollout, args.precisions, args.device,
                                args.batch_size, x_key=args.x_key)
        print(precision_gap_table(report))
        if args.plot:
            plot_precision_gap(report, args.plot, title=f"{args.checkpoint} on {args.data}")
            print(f"plot: {args.plot}")
        if args.json:
            _print_json(report)
        return
    if args.precisions or args.batch_size:
        raise ValueError("--precisions and --batch-size apply to a rollout: add --rollout N")

    report = bounds_report(args.data, args.checkpoint, args.n_modes, args.samples, args.field, _policy_text(args),
                           args.device, x_key=args.x_key, y_key=args.y_key, spatial_dims=args.spatial_dims)
    print(bounds_table(report))
    if args.plot:
        from pathlib import Path

        field = "inputs" if args.field == "x" else "outputs"
        plot_bounds(report, Path(args.plot), title=f"errors of the {field} of {Path(args.data).name}")
        print(f"plot: {args.plot}")
    if args.json:
        _print_json(report)


def _add_bench(commands) -> None:
    from ..nn.registry import models
    from .bench import PRESETS

    p = commands.add_parser(
        "bench", help="time and measure training steps in every precision",
        description="Training steps (forward, loss, backward, AdamW step) in full, amp, mixed and half, with "
                    "float16 and bfloat16: median step time, samples/s, memory (CUDA: peak and activations; "
                    "CPU: bytes saved for backward and peak RSS, each mode in a fresh process), ratios to full, "
                    "and the output's difference from full (float32 and float64). With --save-baseline, keep "
                    "the report; with --baseline, compare with a kept report and exit 1 on a regression.")
    p.add_argument("--preset", default="darcy64",
                   help=f"{', '.join(PRESETS)} (default darcy64); flags below override")
    p.add_argument("--model", choices=tuple(models()))
    p.add_argument("--factorization")
    p.add_argument("--rank", type=_number, help="a fraction of the dense parameters in (0, 1], or an int rank")
    p.add_argument("--hidden-channels", "--width", dest="hidden_channels", type=int)
    p.add_argument("--n-modes", "--modes", dest="n_modes", type=int, nargs="+")
    p.add_argument("--n-layers", "--layers", dest="n_layers", type=int)
    p.add_argument(*_spelled("bench", "--resolution"), type=int, nargs="+",
                   help="grid points per dimension, one value or one per dimension (point operators: of their "
                        "latent grid); formerly --grid")
    _shared(p, "bench", "batch_size", "per step; formerly --batch")
    p.add_argument("--fft-backend", choices=("auto", "torch", "dft"), help="half-precision transforms (auto)")
    _shared(p, "bench", "device")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode, after 3 warm-up steps (10)")
    p.add_argument("--inference", action="store_true",
                   help="time forward passes under no_grad (inference) instead of training steps")
    _shared(p, "bench", "threads")
    p.add_argument("--in-process", action="store_true",
                   help="CPU: measure every mode in this process (faster; peak RSS is then not per mode)")
    p.add_argument("--compile", action="store_true",
                   help="time the model compiled by mpno.compiled (torch.compile, one graph; warm-up steps compile)")
    p.add_argument("--precisions", nargs="+", metavar="POLICY",
                   help="measure only these policies, e.g. mixed/float16 half/bfloat16 (full is always measured "
                        "first: the ratios are to it)")
    p.add_argument("--count-ops", action="store_true",
                   help="instead of timing, count the operations one step (forward, loss, backward) dispatches, "
                        "per precision, on the CPU path and on the CUDA path traced with meta tensors")
    _shared(p, "bench", "json")
    guard = p.add_argument_group("regression guard")
    kept = guard.add_mutually_exclusive_group()
    kept.add_argument("--save-baseline", metavar="FILE.json", help="write the report to FILE.json as a baseline")
    kept.add_argument("--baseline", metavar="FILE.json",
                      help="compare with a baseline written by --save-baseline; exit 1 on a regression")
    guard.add_argument("--judge", nargs="+", choices=("time", "memory", "accuracy"),
                       help="what a regression is judged on (default: all three; time is a ratio to full)")
    guard.add_argument("--time-tolerance", type=float, metavar="FRACTION",
                       help="a mode's step time × full may exceed the baseline's by this fraction plus the "
                            "spread of the timings (0.10)")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> None:
    from . import bench, counting, guard
    from .assembly import resolve_device

    config = bench.configure(args.preset, model=args.model, factorization=args.factorization, rank=args.rank,
                             hidden_channels=args.hidden_channels, n_modes=args.n_modes, n_layers=args.n_layers,
                             resolution=args.resolution, batch_size=args.batch_size, fft_backend=args.fft_backend,
                             inference=args.inference, compile=args.compile)
    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    guard.check_guard(args.baseline, args.save_baseline, args.judge, args.time_tolerance)
    policies = bench.policies_for(args.precisions, kept=bool(args.baseline or args.save_baseline))
    if args.count_ops:
        if args.baseline or args.save_baseline or args.compile or args.inference:
            raise ValueError("--count-ops counts the operations of a training step; drop --baseline, "
                             "--save-baseline, --compile and --inference")
        report = counting.run_counts(config, policies, preset=args.preset)
        print(counting.count_table(report))
        if args.json:
            _print_json(report)
        return
    device = str(resolve_device(args.device))
    _use_threads(args, device)
    baseline = guard.load_baseline(args.baseline, args.preset, config, device) if args.baseline else None
    report = bench.run(config, device, args.steps, isolate=False if args.in_process else None, preset=args.preset,
                       policies=policies,
                       progress=lambda row: print(f"  {row['precision']}: done", file=sys.stderr, flush=True))
    print(bench.table(report))
    if args.save_baseline:
        guard.save_baseline(report, args.save_baseline)
        print(f"baseline written to {args.save_baseline}")
    failures = []
    if baseline is not None:
        text, failures = guard.guard(report, baseline, args.baseline, args.judge, args.time_tolerance)
        print(text)
    if args.json:
        _print_json(report)
    if failures:
        print(f"mpno bench: {len(failures)} regression(s) against {args.baseline}", file=sys.stderr)
        raise SystemExit(1)  # 1: a regression; 2 (from main): bad input


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one clean line (what the user typed is echoed without escape codes)."""

    def error(self, message: str):
        from ..checks import one_line

        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mpno", description="Mixed-precision neural operators.")
    parser.add_argument("--version", action="version", version=f"mpno {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_generate(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_bounds(commands)
    _add_bench(commands)
    _add_export(commands)
    return parser


def _add_export(commands) -> None:
    from .export import FORMATS

    p = commands.add_parser("export", help="export a trained model for use without mpno (pt2, onnx, safetensors)",
                            description="Export the model of a checkpoint (or a .safetensors weight file) as a "
                                        "torch.export program (pt2: torch.export.load runs it without mpno), an "
                                        "ONNX model (FNO, TFNO, U-NO; pip install 'mpno[export]'), each in the "
                                        "model's precision with a dynamic batch and, for FNO and TFNO, dynamic "
                                        "grid sizes; or as a safetensors weight file (no pickle: the safe way to "
                                        "share weights; mpno.load_model reads it). docs/deploy.md.")
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="the file to write (.pt2, .onnx, .safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _shared(p, "export", "precision", "export in this policy instead of the saved one")
    _shared(p, "export", "dtype")
    p.add_argument("--example-shape", type=int, nargs="+", metavar="N",
                   help="pt2 and onnx: the input the program is traced on, batch channels *grid (default: two "
                        "samples on twice the modes per dimension; on the sphere the grid of its modes, which an "
                        "SFNO program is then fixed to)")
    _shared(p, "export", "device", "pt2: the device the program runs on (onnx: cpu)", default="cpu")
    _shared(p, "export", "json")
    p.set_defaults(run=_run_export)


def _run_export(args) -> None:
    from .export import export

    report = export(args.checkpoint, args.fmt, args.out, _policy_text(args), args.example_shape, args.device,
                    args.overwrite)
    print(f"{report['out']}: {report['kind']} in {report['precision']}, {report['format']}; dynamic: "
          f"{report['dynamic']}")
    if "largest_difference_on_example" in report:
        print(f"largest difference from the model on the example: {report['largest_difference_on_example']:.3g}"
              + (" (in ONNX Runtime)" if args.fmt == "onnx" else ""))
    if args.json:
        _print_json(report)


def _out_of_memory(err: RuntimeError) -> bool:
    """Whether ``err`` is an allocator's refusal (the up-front estimates are lower bounds)."""
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(err) \
        or "out of memory" in str(err).lower()


def main(argv: list[str] | None = None) -> int:
    """Run the ``mpno`` command; every failure the user can fix ends in one line on stderr and exit 2,
    Ctrl-C in one line and exit 130."""
    from ..checks import one_line
    from .trainer import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, FloatingPointError, TrainingError) as err:  # OSError: unreadable, unwritable
        message = err.strerror if isinstance(err, OSError) and err.filename and err.strerror else str(err)
        if isinstance(err, OSError) and err.filename:  # the OS's own errors: name the file
            message = f"{err.filename}: {message}"
        print(f"mpno {args.command}: error: {one_line(message)}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if not _out_of_memory(err):
            raise
        print(f"mpno {args.command}: error: out of memory ({one_line(str(err))[:200]}); ask for less: a smaller "
              "model, batch or grid", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: every file mpno writes appears whole or not at all
        print(f"mpno {args.command}: interrupted; {one_line(str(err)) or 'no partial file was left behind'}",
              file=sys.stderr)
        return 130
    return 0
