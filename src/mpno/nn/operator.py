"""The operator skeleton: what every mpno operator shares, and how it registers itself.

A new operator subclasses :class:`Operator` with a name and a domain::

    class UNO(Operator, kind="uno", domain="grid"):
        def __init__(self, in_channels, out_channels, n_modes=(16, 16), ..., precision="full"):
            super().__init__()
            ...                              # build the layers; no set_precision, no arguments dict

        def forward(self, x):
            return self._in_own_policy(x, x.device.type)

        def _forward(self, x):
            ...                              # compute, each layer in the policy's dtypes

and the skeleton does the rest:

* **registration**: ``kind`` is the name ``mpno train --model`` and checkpoints use
  (:mod:`mpno.nn.registry`); ``domain`` (``"grid"``, ``"sphere"``, ``"points"`` or
  any other that :mod:`mpno.run.domains` registers) names the kind of data it maps,
  which decides how a run reads, batches, tests and audits it. A subclass without ``kind`` (a shared
  body) is not registered; a subclass inherits its parent's domain.
* **arguments**: the constructor's arguments are recorded in :attr:`Operator.arguments`
  (all but ``precision``; defaults filled in; ``**options`` spread out), so that
  :func:`mpno.nn.registry.build_operator` rebuilds the operator from a checkpoint.
  An argument the operator keeps as an attribute of the same name (``self.n_modes``,
  ``self.radius``) is recorded as kept, after the constructor checked and resolved it.
* **precision**: when the outermost constructor returns, every layer gets the
  ``precision`` argument's policy, whatever order the layers were built in.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn

from .. import precision as precision_module
from . import casting, registry
from .layers import FixedModes


class OutdatedArchitecture(ValueError):
    """Saved weights of an operator whose design has since changed (they cannot be loaded into the new one)."""


def _plain(value):
    """``value`` as plain, saveable data: tuples (and other sequences of values) as lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _kept(operator: nn.Module, name: str, given):
    """The value the operator kept for its argument ``name`` (an attribute of that name holding plain data,
    such as a resolved radius), else ``given``."""
    value = getattr(operator, name, given)
    if isinstance(value, (nn.Module,)) or callable(value) or hasattr(value, "shape"):
        return given
    return value


def _recording(init):
    """``init`` wrapped so that its arguments are recorded and the policy is applied when the outermost
    constructor of the operator returns."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def constructor(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = {}
        for name, value in list(bound.arguments.items())[1:]:  # not self
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"{type(self).__name__}: operators take no *args (they could not be recorded)")
            given.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
        outermost = "_recorded" not in self.__dict__
        recorded = self.__dict__.setdefault("_recorded", {})
        for name, value in given.items():  # the outer constructor's values first; inner ones add their defaults
            recorded.setdefault(name, value)
        init(self, *args, **kwargs)
        if outermost:
            del self.__dict__["_recorded"]
            policy = recorded.pop("precision", "full")
            self.arguments = {name: _plain(_kept(self, name, value)) for name, value in recorded.items()}
            self.set_precision(policy)

    return constructor


class Operator(FixedModes, nn.Module):
    """What mpno's operators share: registration by name and domain, recorded constructor arguments, one
    policy for every layer (kept inside ``torch.autocast``), and :class:`~mpno.nn.layers.FixedModes`.

    Subclasses compute in ``_forward`` and call :meth:`_in_own_policy` from ``forward``.
    """

    #: The name ``mpno train --model`` and checkpoints use (``None``: a shared body, not registered).
    kind: str | None = None
    #: The kind of data the operator maps: the name of a domain of :mod:`mpno.run.domains` (``"grid"``,
    #: ``"sphere"``, ``"points"``, ...).
    domain: str | None = None
    #: The constructor's arguments (all but ``precision``), recorded when it was built.
    arguments: dict

    def __init_subclass__(cls, kind: str | None = None, domain: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if domain is not None:
            if not isinstance(domain, str) or not domain:
                raise ValueError(f"{cls.__name__}: domain={domain!r} is not the name of a domain")
            cls.domain = domain
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__init__)
        cls.kind = kind
        if kind is not None:
            if cls.domain is None:
                raise ValueError(f"{cls.__name__}: an operator declares its domain (grid, sphere, points, ...)")
            registry.register(kind, cls)

    @property
    def exports_any_grid(self) -> bool:
        """Whether a program ``torch.export`` traces of this operator can take every grid size (``mpno export``):
        not where a size it computes rounds ``n · fraction`` (U-NO's levels, domain padding), which a
        program cannot hold symbolically, nor where its transforms are tables built for one grid (SFNO)."""
        return False

    def set_precision(self, precision: precision_module.Precision | str) -> precision_module.Precision:
        """Switch every layer to ``precision`` (takes effect at the next forward pass)."""
        self.precision = precision_module.set_precision(self, precision)
        return self.precision

    def _in_own_policy(self, x, device_type: str):
        """``_forward(x)`` with autocast off, in :func:`mpno.precision.inside_autocast`'s policy, the parameters
        used in half cast once (:mod:`mpno.nn.casting`)."""
        policy = precision_module.inside_autocast(self.precision, device_type)
        with precision_module.autocast_off(device_type):
            own = self.precision
            if policy is not own:
                self.set_precision(policy)
            started = casting.begin(self)
            try:
                return self._forward(x)
            finally:
                casting.end(started)
                if policy is not own:
                    self.set_precision(own)
