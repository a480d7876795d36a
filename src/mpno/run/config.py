"""Run configuration: every option of ``mpno train``, from defaults, a TOML/YAML file and flags."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..nn.factorized import FACTORIZATIONS
from ..nn.losses import LOSSES
from ..nn.models import MODELS
from ..precision import DTYPES, PrecisionSchedule


@dataclass
class RunConfig:
    """Options of a training run. Field names are the CLI flags with ``_`` for ``-``."""

    # data (no data_train: the default example, a Darcy data set generated into the cache)
    data_train: str | None = None
    data_test: list[str] = field(default_factory=list)
    test_fraction: float = 0.2  # held out of data_train when no data_test is given
    n_train: int | None = None  # use only the first n training samples
    x_key: str | None = None
    y_key: str | None = None
    spatial_dims: int = 2
    time_in: int = 0
    time_out: int = -1
    # model
    model: str = "fno"
    modes: list[int] = field(default_factory=lambda: [12])
    width: int = 32
    layers: int = 4
    factorization: str | None = None  # None: the model's default (dense for fno, tucker for tfno)
    rank: float = 0.05
    channel_mlp: bool = True
    domain_padding: float = 0.0
    # precision
    precision: str = "schedule"
    dtype: str = "float16"
    nonfinite_patience: int = 5
    # optimisation
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    step_size: int = 10
    gamma: float = 0.5
    grad_clip: float | None = None
    loss: str = "l2"
    eval_losses: list[str] = field(default_factory=lambda: ["l2", "h1"])
    periodic: bool = True
    # run
    device: str = "auto"
    dist_backend: str = "auto"  # under torchrun: nccl on CUDA, gloo on the CPU
    seed: int = 0
    out: str | None = None
    tensorboard: bool = True
    in_memory_limit_gb: float = 2.0

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the option for values out of range."""
        choices = {
            "model": tuple(MODELS), "dtype": tuple(DTYPES), "optimizer": ("adam", "adamw"),
            "scheduler": ("cosine", "step", "none"), "loss": LOSSES,
            "factorization": (None, *FACTORIZATIONS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; allowed: "
                                 + ", ".join(repr(a) for a in allowed))
        if self.precision not in ("auto", "schedule"):
            PrecisionSchedule.parse(self.precision, self.dtype)  # raises naming the bad part
        for name in self.eval_losses:
            if name not in LOSSES:
                raise ValueError(f"eval_losses: {name!r} is not supported; allowed: {', '.join(LOSSES)}")
        for name in ("epochs", "batch_size", "width", "layers", "nonfinite_patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive int")
        if not self.modes or any(not isinstance(m, int) or m < 1 for m in self.modes):
            raise ValueError(f"modes={self.modes!r} must be positive ints (one, or one per spatial dim)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction={self.test_fraction!r} must lie in (0, 1)")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be positive")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {key.replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {', '.join(unknown)}; "
                             f"known options: {', '.join(sorted(known))}")
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
            raise ValueError(f"{path}: cannot parse ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a table of options at the top level")
        return cls.from_dict(values, source=str(path))
