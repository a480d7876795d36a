"""The precision policy: the one place that decides what runs in which dtype.

A :class:`Precision` names a *mode* and, for the low-precision modes, the half
dtype, the stabilizer applied before a half-precision forward transform and the
implementation of half-precision transforms.

======  ==================  ===========  ===========  ===========
mode    real-valued layers  forward FFT  contraction  inverse FFT
======  ==================  ===========  ===========  ===========
full    fp32                fp32         fp32         fp32
amp     half                fp32         fp32         fp32
mixed   half                fp32 → half  half         half
half    half                half         half         half
======  ==================  ===========  ===========  ===========

"half" is float16 or bfloat16 (``dtype``); in ``mixed`` the forward transform
computes in fp32 and rounds its result to half. :data:`STAGE_DTYPES` is this
table as data: layers ask their policy for a stage's dtype
(:meth:`Precision.stage_dtype`), and what reports and benchmarks list follows
:data:`STAGES` and :data:`DTYPES`. Master weights always stay in the model's own
dtype; they are cast on the fly. ``docs/precision.md`` has the full table, per device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch

from . import dtypes

MODES = ("full", "amp", "mixed", "half")
#: The half dtypes a policy may name, by name (the records of :data:`mpno.dtypes.DTYPE_TABLE` with ``half``).
DTYPES = {name: dtypes.info(name).torch_dtype for name in dtypes.half_names()}
#: The half dtypes a policy may name, as torch dtypes.
HALF_DTYPES = tuple(DTYPES.values())
#: The stages of a kernel layer, in the order they run: the real-valued layers (lifting, skips, MLPs,
#: projection), the forward transform, the contraction with the weights, the inverse transform.
STAGES = ("real", "forward", "contraction", "inverse")
#: The dtype of each stage in each mode: ``None`` is the master dtype (the parameters', float32),
#: ``"half"`` the policy's half dtype (``Precision.dtype``), any other value a name in :data:`DTYPES`.
STAGE_DTYPES = {
    "full": {"real": None, "forward": None, "contraction": None, "inverse": None},
    "amp": {"real": "half", "forward": None, "contraction": None, "inverse": None},
    "mixed": {"real": "half", "forward": None, "contraction": "half", "inverse": "half"},
    "half": {"real": "half", "forward": "half", "contraction": "half", "inverse": "half"},
}
STABILIZERS = ("tanh", "clip_hard", "clip_sigma")
FFT_BACKENDS = ("auto", "torch", "dft")

#: Unit roundoff (half the machine epsilon) of each floating dtype of :data:`mpno.dtypes.DTYPE_TABLE`.
UNIT_ROUNDOFF = {record.torch_dtype: record.unit_roundoff for record in dtypes.DTYPE_TABLE.values()}


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not supported; allowed: {shown}")


@dataclass(frozen=True)
class Precision:
    """What runs in which dtype.

    Args:
        mode: ``"full"``, ``"amp"``, ``"mixed"`` or ``"half"`` (see the module table).
        dtype: the half dtype, ``"float16"`` or ``"bfloat16"`` (a name in :data:`mpno.dtypes.DTYPE_TABLE` whose
            record has ``half``).
        stabilizer: squashes the input of the forward transform (the spectral
            branch only; the skip branch sees the raw input) so that a half
            transform cannot overflow: ``"tanh"``, ``"clip_hard"`` (clip to
            [-1, 1]), ``"clip_sigma"`` (standardise per sample and channel, clip to
            ±2σ) or ``None``. ``"auto"``: ``"tanh"`` in mode ``"half"``, ``None``
            otherwise. (A stabilizer in another mode computes the same function in
            higher precision: a reference for a half model.)
        fft_backend: how half-precision transforms are computed: ``"torch"``
            (where the dtype's record says ``torch.fft`` runs: float16 on CUDA at power-of-two sizes,
            :attr:`mpno.dtypes.DtypeInfo.torch_fft`), ``"dft"`` (the kept
            modes as matrix products: any device, dtype and size) or ``"auto"``
            (``"torch"`` where it can run, ``"dft"`` elsewhere).
    """

    mode: str = "full"
    dtype: str = "float16"
    stabilizer: str | None = "auto"
    fft_backend: str = "auto"

    def __post_init__(self):
        _choice("mode", self.mode, MODES)
        _choice("dtype", self.dtype, dtypes.half_names())
        _choice("fft_backend", self.fft_backend, FFT_BACKENDS)
        stabilizer = self.stabilizer
        if stabilizer == "none":
            stabilizer = None
        if stabilizer == "auto":
            stabilizer = "tanh" if self.mode == "half" else None
        _choice("stabilizer", stabilizer, STABILIZERS + (None,))
        object.__setattr__(self, "stabilizer", stabilizer)

    @classmethod
    def parse(cls, value: "Precision | str | dict | None") -> "Precision":
        """A policy from a policy, a mode name, a dict of fields, or ``None`` (full)."""
        if value is None:
            return cls()
        if isinstance(value, Precision):
            return value
        if isinstance(value, str):
            return cls.from_string(value)
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"unknown precision fields {sorted(unknown)}")
            return cls(**value)
        raise ValueError(
            f"precision={value!r} is not supported; give a Precision, a mode name "
            f"({', '.join(MODES)}) or a dict of Precision fields"
        )

    @classmethod
    def from_string(cls, text: str, dtype: str = "float16") -> "Precision":
        """A policy from its printed form: ``"full"``, ``"mixed/bfloat16"``, ``"half/float16/tanh"``,
        ``"mixed/float16/tanh"``, ``"half/no-stabilizer"``; ``dtype`` where the text names none."""
        mode, *rest = text.strip().split("/")
        fields = {"mode": mode, "dtype": dtype}
        if rest and rest[0] in dtypes.half_names():
            fields["dtype"] = rest.pop(0)
        if rest:
            name = rest.pop(0)
            fields["stabilizer"] = None if name in ("no-stabilizer", "none") else name
        if rest:
            raise ValueError(f"precision={text!r} is not a policy; write mode[/dtype][/stabilizer], "
                             "e.g. 'mixed/bfloat16' or 'half/float16/tanh'")
        return cls(**fields)

    def replace(self, **changes) -> "Precision":
        """A copy with some fields changed (``stabilizer`` re-defaults with the mode)."""
        fields = dataclasses.asdict(self)
        if "mode" in changes and "stabilizer" not in changes:
            fields["stabilizer"] = "auto"
        fields.update(changes)
        return Precision(**fields)

    @property
    def half_dtype(self) -> torch.dtype:
        return dtypes.info(self.dtype).torch_dtype

    def _stage_dtype_name(self, stage: str) -> str | None:
        name = STAGE_DTYPES[self.mode][stage]
        return self.dtype if name == "half" else name

    def stage_dtype(self, stage: str) -> torch.dtype | None:
        """The dtype ``stage`` (one of :data:`STAGES`) runs in, or ``None`` for the master dtype."""
        name = self._stage_dtype_name(stage)
        return None if name is None else dtypes.info(name).torch_dtype

    @property
    def stage_dtypes(self) -> dict[str, torch.dtype | None]:
        """``{stage: dtype}`` for every stage of :data:`STAGES` (``None``: the master dtype)."""
        return {stage: self.stage_dtype(stage) for stage in STAGES}

    #: The dtype of each stage (``None``: the master dtype), by name.
    real_dtype = property(lambda self: self.stage_dtype("real"), doc="dtype of the real-valued layers")
    forward_dtype = property(lambda self: self.stage_dtype("forward"), doc="dtype of the forward transform")
    contraction_dtype = property(lambda self: self.stage_dtype("contraction"),
                                 doc="dtype of the contraction (and of the forward transform's result)")
    inverse_dtype = property(lambda self: self.stage_dtype("inverse"),
                             doc="dtype of the inverse transform (and of the bias added after it)")

    @property
    def low_precision(self) -> bool:
        """Whether any stage runs in a dtype other than the master dtype."""
        return any(dtype is not None for dtype in self.stage_dtypes.values())

    @property
    def uses_grad_scaler(self) -> bool:
        """Whether training steps in this policy need loss scaling (``torch.amp.GradScaler``): where a stage
        runs in a dtype whose record says so (float16, whose gradients underflow; bfloat16 has float32's range
        and full needs none)."""
        names = {self._stage_dtype_name(stage) for stage in STAGES} - {None}
        return any(dtypes.info(name).needs_loss_scaling for name in names)

    def __str__(self) -> str:
        text = "full" if self.mode == "full" else f"{self.mode}/{self.dtype}"
        if self.mode == "half":
            text += f"/{self.stabilizer or 'no-stabilizer'}"
        elif self.stabilizer:
            text += f"/{self.stabilizer}"
        return text


def names_stabilizer(text: str) -> bool:
    """Whether a policy written ``mode[/dtype][/stabilizer]`` names its stabilizer (``"half/tanh"``,
    ``"half/float16/none"``) rather than leaving it to the mode (``"half"``, ``"mixed/bfloat16"``)."""
    _, *rest = text.strip().split("/")
    return len(rest) > 1 or (len(rest) == 1 and rest[0] not in dtypes.half_names())


def inference_policy(requested: str, trained: Precision) -> tuple[Precision, str | None]:
    """The policy a trained model runs in when ``requested`` is asked for at inference, and a warning or None.

    The stabilizer is part of the function the model learned: a ``requested``
    policy that does not name one keeps ``trained``'s (``"half"`` for a model
    trained in ``mixed`` is ``half/no-stabilizer``, not ``half/tanh``). A named
    stabilizer that differs from ``trained``'s is used, with a warning naming both.
    """
    policy = Precision.from_string(requested)
    if not names_stabilizer(requested):
        return policy.replace(stabilizer=trained.stabilizer), None
    if policy.stabilizer == trained.stabilizer:
        return policy, None
    return policy, (f"warning: --precision {requested} applies {_stabilizer(policy.stabilizer)}, but the model "
                    f"was trained with {_stabilizer(trained.stabilizer)}: it computes a function it was not "
                    f"trained on, and its errors grow; --precision {policy.mode}/{policy.dtype} keeps the trained "
                    "stabilizer")


def _stabilizer(name: str | None) -> str:
    return f"the {name} stabilizer" if name else "no stabilizer"


def set_precision(module: torch.nn.Module, precision) -> Precision:
    """Give every precision-aware submodule of ``module`` the same policy."""
    policy = Precision.parse(precision)
    for sub in module.modules():
        if hasattr(sub, "precision"):
            sub.precision = policy
    return policy


def inside_autocast(policy: Precision, device_type: str) -> Precision:
    """The policy a model runs in when called inside ``torch.autocast`` on ``device_type``.

    The model's policy wins: autocast never reaches inside mpno's modules (it would
    put transforms and contractions in whatever dtype each op lists). A model
    whose policy is ``full`` runs as ``amp`` in autocast's dtype, which is what
    autocast does to linear layers; ``amp``, ``mixed`` and ``half`` stay as set.
    """
    if policy.mode != "full" or not torch.amp.is_autocast_available(device_type) \
            or not torch.is_autocast_enabled(device_type):
        return policy
    names = {dtype: name for name, dtype in DTYPES.items()}
    name = names.get(torch.get_autocast_dtype(device_type))
    return policy if name is None else policy.replace(mode="amp", dtype=name, stabilizer=policy.stabilizer)


def autocast_off(device_type: str):
    """A context in which ``torch.autocast`` is off on ``device_type`` (a no-op where autocast does not
    exist, such as the ``meta`` device that traces the accelerator path: :mod:`mpno.ops.devices`)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


#: Inductor options under which compiled code rounds where the policy says (:func:`compiled`).
COMPILE_OPTIONS = {"emulate_precision_casts": True}


def compiled(model: torch.nn.Module, backend: str = "inductor", **kwargs) -> torch.nn.Module:
    """``torch.compile(model, fullgraph=True)`` computing what ``model`` computes uncompiled, in any policy.

    Inductor fuses elementwise operations into kernels that keep their
    intermediates in float32, and by default drops a rounding to half between two
    fused operations: a compiled ``mixed`` or ``half`` model is then a little more
    accurate than the policy says, and differs from the uncompiled model by about
    that model's own rounding error. :data:`COMPILE_OPTIONS` makes inductor round
    at every cast to half, as the uncompiled model does (on the CPU the two agree
    to the last bit). Other ``torch.compile`` arguments pass through; ``options``
    add to :data:`COMPILE_OPTIONS` (inductor only).
    """
    options = kwargs.pop("options", None)
    if backend == "inductor":
        options = {**COMPILE_OPTIONS, **(options or {})}
    kwargs.setdefault("fullgraph", True)
    return torch.compile(model, backend=backend, options=options, **kwargs)


#: The authors' recipe: 25% half (tanh), 50% mixed, 25% full.
DEFAULT_SCHEDULE = "half:0.25,mixed:0.5,full:0.25"


@dataclass(frozen=True)
class PrecisionSchedule:
    """Precision per phase of training: ``((fraction of epochs, policy), ...)``.

    Phase ``i`` starts at epoch ``round(epochs · Σ_{j<i} fraction_j)``.
    """

    phases: tuple

    def __post_init__(self):
        if not self.phases:
            raise ValueError("a precision schedule needs at least one phase")
        total = sum(fraction for fraction, _ in self.phases)
        if any(fraction <= 0 for fraction, _ in self.phases) or abs(total - 1.0) > 1e-6:
            raise ValueError(f"schedule fractions must be positive and sum to 1; got {total:g}")

    @classmethod
    def parse(cls, value, dtype: str = "float16") -> "PrecisionSchedule":
        """From a schedule, a policy, a mode name, ``"schedule"`` (the paper's recipe) or a string
        such as ``"half:0.25,mixed:0.5,full:0.25"`` or ``"half/tanh:0.5,mixed/tanh:0.5"``
        (each phase a policy as :meth:`Precision.from_string` reads it); ``dtype`` applies to
        every phase that names none."""
        if isinstance(value, PrecisionSchedule):
            return value
        if isinstance(value, Precision):
            return cls(((1.0, value),))
        if value == "schedule":
            value = DEFAULT_SCHEDULE
        if not isinstance(value, str):
            raise ValueError(f"precision={value!r} is not supported; give a mode, 'schedule' or "
                             "a schedule string such as 'half:0.25,mixed:0.5,full:0.25'")
        phases = []
        for part in value.split(","):
            mode, _, fraction = part.strip().partition(":")
            try:
                share = float(fraction) if fraction else 1.0
            except ValueError:
                raise ValueError(f"precision={value!r}: {fraction!r} is not a fraction of epochs") from None
            if not math.isfinite(share) or share <= 0:
                raise ValueError(f"precision={value!r}: {fraction!r} is not a positive fraction of epochs")
            phases.append((share, Precision.from_string(mode, dtype)))
        return cls(tuple(phases))

    def starts(self, epochs: int) -> list[int]:
        """The first epoch of each phase."""
        return phase_starts([fraction for fraction, _ in self.phases], epochs)

    def at(self, epoch: int, epochs: int) -> Precision:
        """The policy for ``epoch`` (0-based) of ``epochs``."""
        current = self.phases[0][1]
        for start, (_, policy) in zip(self.starts(epochs), self.phases):
            if epoch >= start:
                current = policy
        return current

    def __str__(self) -> str:
        return ",".join(f"{policy}:{fraction:g}" for fraction, policy in self.phases)


def phase_starts(fractions, epochs: int) -> list[int]:
    """The first epoch of each phase of a schedule whose phases take these ``fractions`` of ``epochs``: phase
    ``i`` starts at ``round(epochs · Σ_{j<i} fraction_j)``."""
    starts, cumulative = [], 0.0
    for fraction in fractions:
        starts.append(round(cumulative * epochs))
        cumulative += fraction
    return starts


#: Escalation after repeated non-finite steps: each mode's next safer mode.
SAFER = {"half": "mixed", "mixed": "full", "amp": "full", "full": None}
_ORDER = {"half": 0, "mixed": 1, "amp": 2, "full": 3}


def at_least(policy: Precision, floor: str | None) -> Precision:
    """``policy``, raised to mode ``floor`` if it is less precise."""
    if floor is None or _ORDER[policy.mode] >= _ORDER[floor]:
        return policy
    return policy.replace(mode=floor)
