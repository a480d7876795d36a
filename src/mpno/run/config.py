"""Run configuration: every option of ``mpno train``, declared once.

Each field of :class:`RunConfig` declares its kind, range, help and aliases
(:func:`mpno.run.options.option`): the options every run has here, and those each
domain brings in its own module (:mod:`mpno.run.domains`). ``mpno train``'s flags,
the checks of config files and their type coercion are all generated from these
declarations, so they cannot drift apart. A configuration is frozen: the options
mpno chooses for a run (the device, defaults sized to the data, ``precision=auto``)
are settled once, into a new configuration (:mod:`mpno.run.resolve`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..nn.factorized import FACTORIZATIONS
from ..nn.losses import LOSSES
from ..nn.registry import models
from ..precision import DTYPES, PrecisionSchedule
from ..writing import write_text
from . import domains
from .options import coerce, option


#: What ``config.json`` records beside the options: the data files' fingerprints
#: (:func:`mpno.data.fingerprint.fingerprint`) and the resumptions on changed data.
RECORDS = ("data_files", "resumed_with_changed_data")


@dataclass(frozen=True)
class RunOptions:
    """The options every training run has (:class:`RunConfig` adds the domains'). Field names are the CLI flags
    with ``_`` for ``-``."""

    # data (no data_train: the default example, a Darcy data set generated into the cache)
    data_train: str | None = option(None, "str", "training data file (.pt, .h5, .npz); default: the Darcy example",
                                    optional=True, group="data")
    data_test: list[str] = option([], "str_list", "test data files, repeatable (e.g. one per resolution); default: "
                                  "test_fraction of the training file", group="data")
    test_fraction: float = option(0.2, "float", "held out of data_train when no data_test is given",
                                  low=0.0, high=1.0, open_low=True, group="data")
    n_train: int | None = option(None, "int", "use only the first N training samples (trajectories)", low=1,
                                 optional=True, group="data")
    # model
    model: str = option("fno", "str", "the operator", choices=tuple(models()), group="model")
    n_modes: list[int] | None = option(None, "int_list", "kept modes: one value, or one per spatial dimension; "
                                       "default: as the operator's domain chooses: 12 on a grid, every degree the "
                                       "training grid carries on the sphere (nlat, min(nlat, nlon/2 + 1)), 8 for point "
                                       "clouds", low=1, aliases=("modes",), optional=True, group="model")
    hidden_channels: int = option(32, "int", "width of the Fourier layers", low=1, aliases=("width",), group="model")
    n_layers: int = option(4, "int", "Fourier layers", low=1, aliases=("layers",), group="model")
    factorization: str | None = option(None, "str", "spectral weights (default: the operator's: tucker for tfno, "
                                       "gino, fno-gno, dense for the others)", choices=FACTORIZATIONS, optional=True,
                                       group="model")
    rank: float | int = option(0.05, "number", "factorised weights: a fraction of the dense parameters in (0, 1], "
                               "or an int rank", low=0.0, open_low=True, group="model")
    channel_mlp: bool = option(True, "bool", "a channel MLP in each Fourier layer", group="model")
    domain_padding: float = option(0.0, "float", "zero-pad this fraction of each dimension (non-periodic problems)",
                                   low=0.0, high=1.0, group="model")
    # precision
    precision: str = option("mixed", "str", "full, amp, mixed (default), half, schedule (the paper's "
                            "half:0.25,mixed:0.5,full:0.25), auto (the cheapest mode the data and model audits "
                            "call safe) or a schedule such as 'half/tanh:0.5,mixed/tanh:0.5'", group="precision")
    dtype: str = option("float16", "str", "the half dtype", choices=tuple(DTYPES), group="precision")
    nonfinite_patience: int = option(5, "int", "consecutive non-finite steps before the precision is raised",
                                     low=1, group="precision")
    # optimisation
    epochs: int = option(30, "int", "epochs", low=1, group="optimisation")
    batch_size: int | None = option(None, "int", "batch size (per process under torchrun); default: the largest "
                                    "power of two up to 32 that gives each epoch at least 30 steps (4 for 200 "
                                    "training samples, 32 from 960)", low=1, optional=True, group="optimisation")
    lr: float = option(2e-3, "float", "learning rate", low=0.0, open_low=True, group="optimisation")
    weight_decay: float = option(1e-4, "float", "weight decay", low=0.0, group="optimisation")
    optimizer: str = option("adamw", "str", "optimizer", choices=("adam", "adamw"), group="optimisation")
    scheduler: str = option("cosine", "str", "learning-rate schedule", choices=("cosine", "step", "none"),
                            group="optimisation")
    step_size: int = option(10, "int", "step scheduler: epochs between decays", low=1, group="optimisation")
    gamma: float = option(0.5, "float", "step scheduler: decay factor", low=0.0, high=1.0, open_low=True,
                          group="optimisation")
    grad_clip: float | None = option(None, "float", "clip the gradient norm to this value", low=0.0, open_low=True,
                                     optional=True, group="optimisation")
    loss: str = option("l2", "str", "training loss: relative L2, relative H1 or MSE (sfno, gino: their own "
                       "relative L2 only)", choices=LOSSES, group="optimisation")
    eval_losses: list[str] = option([], "str_list", "evaluation losses; default: l2 h1 (sfno, gino: their own "
                                    "relative L2, l2)", choices=LOSSES, group="optimisation")
    # run
    device: str = option("auto", "str", "auto, cpu, cuda or cuda:N (config.json records the device used)",
                         group="run")
    threads: int | None = option(None, "int", "CPU threads torch computes with; default: torch's, one per core "
                                 "(on a busy machine fewer run faster: a line says so)", low=1, optional=True,
                                 group="run")
    dist_backend: str = option("auto", "str", "under torchrun: nccl on CUDA, gloo on the CPU",
                               choices=("auto", "nccl", "gloo"), group="run")
    seed: int = option(0, "int", "random seed", low=0, group="run")
    out: str | None = option(None, "str", "run directory (default: runs/<date-time>)", optional=True, group="run")
    tensorboard: bool = option(True, "bool", "also log to TensorBoard when it is installed", group="run")
    in_memory_limit_gb: float = option(2.0, "float", "data sets up to this size are loaded into memory; larger "
                                       "ones are read lazily", low=0.0, group="run")
    compile: bool = option(False, "bool", "train the model compiled with torch.compile, one graph, rounding where "
                           "the precision says (mpno.compiled); the first step of each precision compiles",
                           group="run")

    def validate(self) -> "RunConfig":
        """This configuration with every value coerced to its kind and checked against its range, and the
        evaluation losses the domain tests with when none are given; ``ValueError`` names a bad option."""
        values = {spec.name: coerce(spec, getattr(self, spec.name)) for spec in dataclasses.fields(self)}
        if values["precision"] not in ("auto", "schedule"):
            PrecisionSchedule.parse(values["precision"], values["dtype"])  # raises naming the bad part
        if isinstance(values["rank"], float) and values["rank"] > 1:
            raise ValueError(f"rank={values['rank']!r}: a float rank is a fraction of the dense parameters in (0, 1]; "
                             "give an int for an explicit rank")
        checked = dataclasses.replace(self, **values)
        domain = domains.of(checked.model)
        domain.check_options(checked)
        return dataclasses.replace(checked, eval_losses=checked.eval_losses or domain.default_eval_losses())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path, **records) -> None:
        """Write the options, and beside them the facts ``records`` of :data:`RECORDS` (``config.json``)."""
        write_text(path, json.dumps({**self.to_dict(), **records}, indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        """Options from a dict (a config file, a checkpoint): names or aliases, ``-`` or ``_``,
        values coerced to each option's kind."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = {alias: f.name for f in fields.values() for alias in f.metadata["aliases"]}
        clean = {}
        for key, value in values.items():
            if key in RECORDS:  # what a run recorded beside its options (config.json)
                continue
            name = names.get(key.replace("-", "_"), key.replace("-", "_"))
            if name not in fields:
                raise ValueError(f"{source}: unknown option {key!r}; known options: {', '.join(sorted(fields))}")
            try:
                clean[name] = coerce(fields[name], value)
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
        return cls(**clean)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file of options."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
            raise ValueError(f"{path}: unknown config format {path.suffix!r}; use .toml, .yaml or .json")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                if sys.version_info >= (3, 11):
                    import tomllib
                else:  # pragma: no cover - Python 3.10
                    import tomli as tomllib
                values = tomllib.loads(text)
            elif path.suffix == ".json":
                values = json.loads(text)
            else:
                import yaml

                values = yaml.safe_load(text) or {}
        except Exception as err:  # each parser has its own error type
            mark = getattr(err, "problem_mark", None)  # YAML's spans lines: keep where and what
            where = f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}" if mark else " ".join(str(err).split())
            raise ValueError(f"{path}: cannot parse ({where})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a table of options at the top level")
        return cls.from_dict(values, source=str(path))

    def to_yaml(self) -> str:
        """The options as YAML that :meth:`from_file` reads back (``--print-config``)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Every option of a training run: :class:`RunOptions` and each domain's declared options.
RunConfig = dataclasses.make_dataclass(
    "RunConfig", [(name, object, declared) for name, declared in domains.options().items()],
    bases=(RunOptions,), frozen=True)
RunConfig.__module__ = __name__
RunConfig.__doc__ = ("Options of a training run: those of :class:`RunOptions` and those the domains declare "
                     "(:mod:`mpno.run.domains`). Field names are the CLI flags with ``_`` for ``-``.")
