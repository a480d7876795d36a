"""What a domain of data is to a run: the parts every domain has, the capabilities some declare, and the options
each brings.

A run asks the domain of its operator (:func:`mpno.run.domains.of`) everything that depends on the data rather
than on the operator's name: how to read and check files, the default modes, the losses, how to batch, what
predictions hold, and what ``mpno bench`` feeds the model. A domain declares optional :data:`CAPABILITIES`
(``capabilities``), and commands refuse, from that declaration, what a domain cannot do (:meth:`Domain.require`).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import torch

from ...data import DataError
from ...nn.normalized import NormalizedOperator
from ...nn.registry import build_operator
from ..forecast import most_unrolled

#: Optional capabilities a domain may declare: what each lets a user do, as messages name it.
CAPABILITIES = {
    "audit": "mpno bounds",  # the data's and a model's discretisation and precision errors
    "auto_precision": "precision='auto'",  # the cheapest mode that mpno bounds' audits call safe
    "plots": "plotting test samples",  # in the run directory
    "rollout": "forecasting",  # a one-step operator rolled out over trajectories
    "export": "mpno export --format pt2 or onnx",  # a traced program that runs without mpno
    "onnx": "mpno export --format onnx",  # an ONNX model
    "symmetries": "a symmetry of the data (--augment, --symmetry-check)",  # training samples moved by it, or checked
}
#: The evaluation losses of a domain without its own loss when ``eval_losses`` is not given.
EVAL_LOSSES = ("l2", "h1")
#: Options of ``mpno train`` every operator's constructor takes (``None``: the operator's default).
COMMON_OPTIONS = ("hidden_channels", "n_layers", "channel_mlp", "rank", "factorization")


class Domain(abc.ABC):
    """A kind of data (fields on a grid, on the sphere, point clouds) as a run sees it.

    Subclasses set the class attributes below and implement every abstract method; a capability they declare
    in ``capabilities`` comes with the methods it needs (``audit``: :meth:`check_audited`, :meth:`audit_modes`,
    :meth:`audit_data`, :meth:`audit_model`; ``auto_precision``: :meth:`choose_precision`; ``plots``:
    :meth:`plot`), and one they do not declare says why in ``lacks``.
    """

    #: The domain's name, as operators declare it (``Operator.domain``).
    name: ClassVar[str]
    #: What the domain's data are, in messages.
    data: ClassVar[str]
    #: The optional capabilities (keys of :data:`CAPABILITIES`) the domain has.
    capabilities: ClassVar[frozenset] = frozenset()
    #: Why a capability is missing, for the message that refuses it: ``{capability: reason}``.
    lacks: ClassVar[dict] = {}
    #: The options the domain adds to ``mpno train`` and config files: ``{name: option(...)}``
    #: (:func:`mpno.run.options.option`).
    declared_options: ClassVar[dict] = {}
    #: Options of ``mpno train`` passed to the operator beyond :data:`COMMON_OPTIONS`.
    operator_arguments: ClassVar[tuple] = ()
    #: ``None``: the losses are ``--loss``/``--eval-losses``; else the one loss the domain trains and tests
    #: with (named ``l2``), in words.
    own_loss: ClassVar[str | None] = None
    #: Kept modes per dimension when ``--n-modes`` is not given.
    default_mode: ClassVar[int] = 12
    #: What :func:`mpno.data.files.identify` calls the domain's data files.
    file_kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown capabilities {sorted(unknown)}; known: {', '.join(CAPABILITIES)}")

    # -- capabilities and options -----------------------------------------------------------
    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str) -> None:
        """Refuse, in one line, what this domain's data cannot do."""
        if not self.has(capability):
            why = self.lacks.get(capability, f"the {self.name} domain does not declare it")
            raise ValueError(f"{CAPABILITIES[capability]} does not apply to {self.data}: {why}")

    def check_options(self, config) -> None:
        """Refuse options that do not apply to this domain (from :meth:`mpno.run.config.RunConfig.validate`)."""
        forecasting = config.trajectories or config.history > 1 or most_unrolled(config.unroll) > 1 or config.residual
        if forecasting and not self.has("rollout"):
            self.require("rollout")
        if (config.augment or config.channel_types) and not self.has("symmetries"):
            self.require("symmetries")
        if config.precision == "auto" and not self.has("auto_precision"):
            raise ValueError(f"precision='auto' {self.lacks['auto_precision']}; give --model {config.model} a "
                             "precision mode")
        if self.own_loss is not None:
            for name, value in (("loss", config.loss), ("eval_losses", config.eval_losses)):
                if value not in ("l2", ["l2"], []):
                    raise ValueError(f"{name}={value!r} does not apply to model={config.model!r}, which trains and "
                                     f"is tested with {self.own_loss} (named l2); drop --{name.replace('_', '-')}")

    def default_eval_losses(self) -> list[str]:
        return ["l2"] if self.own_loss is not None else list(EVAL_LOSSES)

    def default_modes(self, grid: Sequence[int]) -> list[int]:
        """The default ``n_modes`` for training data on ``grid``."""
        return [self.default_mode]

    def example_grid(self, n_modes: Sequence[int]) -> tuple[int, ...]:
        """The grid ``mpno export`` traces a program on by default: twice the modes per dimension."""
        return tuple(2 * m for m in n_modes)

    def modes_note(self, grid: Sequence[int]) -> str:
        """What the default modes followed, for the line that reports them."""
        return ""

    def operator_options(self, config) -> dict:
        """The constructor arguments ``config`` gives the operator (options left ``None`` keep its default)."""
        names = COMMON_OPTIONS + self.operator_arguments
        return {name: getattr(config, name) for name in names if getattr(config, name) is not None}

    def settle(self, config, paths: Sequence[str]) -> dict:
        """Options that the data files decide, ``{name: value}``, for the run's resolution (before the files are
        read)."""
        return {}

    def check_file(self, path: str, model: NormalizedOperator) -> None:
        """Refuse, before reading it, a file a trained model cannot be evaluated on."""

    def outside_training(self, model: NormalizedOperator, dataset) -> str | None:
        """What of ``dataset`` lies outside what ``model`` was trained on, in one line, or ``None``."""
        return None

    def augmentation(self, config, train):
        """``--augment``'s transformation of training batches, ``augment(x, y, generator)``; ``None`` without
        ``--augment`` (capability ``symmetries``)."""
        return None

    def symmetries(self, config, dataset, kinds: Sequence[str]):
        """The symmetries ``kinds`` names and the channels' types, checked against ``dataset`` (capability
        ``symmetries``)."""
        self.require("symmetries")

    def symmetry_representatives(self, config, kinds: Sequence[str], dataset) -> dict:
        """The symmetries ``mpno evaluate --symmetry-check`` measures on ``dataset``, ``{name: symmetry}``
        (capability ``symmetries``)."""
        self.require("symmetries")

    def describe_predictions(self, file, dataset) -> None:
        """Add to a predictions file what it needs beyond the per-sample arrays."""

    def bench_operator(self, config, in_channels: int, out_channels: int, **arguments):
        """The operator ``mpno bench`` times for a :class:`mpno.run.bench.BenchConfig`."""
        return build_operator(config.model, in_channels, out_channels, tuple(config.n_modes),
                              factorization=config.factorization, hidden_channels=config.hidden_channels,
                              n_layers=config.n_layers, rank=config.rank, **arguments)

    # -- reading and checking data ------------------------------------------------------------
    @abc.abstractmethod
    def dataset(self, path: str, config):
        """The data set in ``path``, read with ``config``'s options: indexable pairs ``(input, output)``."""

    def training_set(self, dataset, config):
        """The data set the run trains on, from one opened as test sets are (forecasting: windows of
        ``--unroll`` targets)."""
        return dataset

    @abc.abstractmethod
    def grid(self, dataset) -> list[int]:
        """The grid of a data set's fields (empty where there is none)."""

    @abc.abstractmethod
    def check_data(self, train, tests: dict, config) -> None:
        """Refuse test sets that do not match the training set, and data too coarse for the modes."""

    @abc.abstractmethod
    def check_for_model(self, path: str, dataset, model: NormalizedOperator) -> None:
        """Refuse a file whose samples do not fit a trained model."""

    @abc.abstractmethod
    def has_targets(self, path: str, config) -> bool:
        """Whether ``path`` holds outputs beside its inputs."""

    @abc.abstractmethod
    def inputs_only(self, config):
        """``config`` reading a file's inputs as their own pair (a file without outputs)."""

    # -- the model ----------------------------------------------------------------------------
    @abc.abstractmethod
    def channels_and_modes(self, config, train) -> tuple[int, int, tuple[int, ...]]:
        """Input channels, output channels and modes of the operator for ``train``."""

    @abc.abstractmethod
    def fitted(self, operator, train, residual: bool = False) -> NormalizedOperator:
        """``operator`` with what is fitted on ``train`` (normalisers, a position map)."""

    @abc.abstractmethod
    def points_per_sample(self, config, train) -> int:
        """Points an activation has per sample (the memory estimate before training)."""

    # -- batches, losses, predictions ---------------------------------------------------------
    @abc.abstractmethod
    def batches(self, dataset, config, device: torch.device, model: NormalizedOperator, name: str):
        """Mini-batches of ``dataset`` for ``model``, this process's share of each."""

    @abc.abstractmethod
    def losses(self, config, model: NormalizedOperator) -> tuple[Callable, dict[str, Callable]]:
        """The training loss and the evaluation losses ``{name: loss}``."""

    @abc.abstractmethod
    def prediction_arrays(self, x, y, prediction: torch.Tensor, dataset) -> dict[str, torch.Tensor]:
        """What ``mpno predict`` writes of a batch, one row per sample (``y`` is ``None`` without outputs)."""

    @abc.abstractmethod
    def samples(self, prediction: torch.Tensor, y) -> list[tuple]:
        """``(prediction, target)`` of each sample of a batch, as a loss takes them."""

    # -- mpno bench ---------------------------------------------------------------------------
    @abc.abstractmethod
    def bench_model(self, config):
        """The operator ``mpno bench`` times for a :class:`mpno.run.bench.BenchConfig`."""

    @abc.abstractmethod
    def bench_batch(self, config, model, device: torch.device) -> tuple:
        """One training batch and its loss: ``(input, target, loss function)``."""

    def in_float64(self, x):
        """A batch's inputs in float64 (``mpno bench``'s reference)."""
        return x.double()

    # -- capabilities: what a domain declaring them implements --------------------------------
    def plot(self, model: NormalizedOperator, batches, path: Path, name: str, dataset) -> None:
        """``plots``: a few test samples drawn in ``path``."""
        self.require("plots")

    def choose_precision(self, config, train, model, device: torch.device):
        """``auto_precision``: the cheapest safe policy for ``model`` and the training inputs, and why."""
        self.require("auto_precision")

    def check_audited(self, path: str, model: NormalizedOperator | None) -> None:
        """``audit``: refuse, before reading it, a file ``mpno bounds`` cannot audit."""
        self.require("audit")

    def trajectories_in(self, dataset):
        """``dataset``'s trajectories (:class:`mpno.data.trajectories.TrajectoryWindows`), or ``None`` where it
        holds none (every domain without ``rollout``)."""
        return None

    def trajectories_of(self, dataset, path: str):
        """``rollout``: ``dataset``'s trajectories, or a ``DataError`` naming ``path`` where it holds none."""
        self.require("rollout")
        trajectories = self.trajectories_in(dataset)
        if trajectories is None:
            raise DataError(f"{path} holds input-output pairs, and a rollout needs trajectories (N, T, C, *grid): "
                            "mpno generate ... --steps T, or --trajectories for a file of such arrays")
        return trajectories

    def power_spectrum(self, fields: torch.Tensor, model: NormalizedOperator) -> tuple[list[int], list[float]]:
        """``rollout``: the power of ``fields`` (B, C, *grid) per wavenumber (a grid: radial; the sphere:
        spherical harmonic degree), summed over channels, mean over the batch."""
        self.require("rollout")

    def fields(self, dataset, count: int, field: str = "x") -> torch.Tensor:
        """``audit``: the first ``count`` samples' inputs (``field="x"``) or outputs, stacked."""
        self.require("audit")

    def audit_modes(self, fields: torch.Tensor, modes: Sequence[int] | None) -> tuple[int, ...]:
        """``audit``: the modes audited."""
        self.require("audit")

    def audit_data(self, path: str, fields: torch.Tensor, modes, device: torch.device) -> dict:
        """``audit``: the data's discretisation and precision errors."""
        self.require("audit")

    def audit_model(self, model: NormalizedOperator, inputs: torch.Tensor, policy) -> dict:
        """``audit``: each layer's error in ``policy`` against float64."""
        self.require("audit")

