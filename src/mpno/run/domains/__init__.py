"""The domains of data a run knows, one module each, and the registry that finds an operator's.

Every operator declares its domain (:mod:`mpno.nn.operator`); a run asks the domain (:func:`of`) what depends
on the data rather than on the operator's name (:class:`mpno.run.domains.base.Domain`). A new domain is a
subclass of :class:`Domain` in its own module and one :func:`register` line below.
"""

from __future__ import annotations

from ...data.files import identify
from ...nn.registry import operator_class
from .base import CAPABILITIES, Domain
from .grid import GridDomain
from .points import PointsDomain
from .sphere import SphereDomain

#: The domain of each name an operator may declare.
DOMAINS: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    """Make ``domain`` the one of operators that declare its name (its options join ``mpno train``'s)."""
    DOMAINS[domain.name] = domain
    return domain


register(GridDomain())
register(SphereDomain())
register(PointsDomain())


def of(model: str) -> Domain:
    """The domain the operator registered as ``model`` declares."""
    name = operator_class(model).domain
    if name not in DOMAINS:
        raise ValueError(f"--model {model} maps data of the domain {name!r}, which no domain module registers; "
                         f"known domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def of_data(path: str) -> Domain:
    """The domain ``mpno bounds`` audits a file with when no model is given: the one whose files ``path``'s
    content is like (:func:`mpno.data.files.identify`), else the grid's (which names what else a file holds)."""
    kind = identify(path)
    return next((d for d in DOMAINS.values() if d.file_kind == kind and d.has("audit")), DOMAINS["grid"])


def options() -> dict:
    """Every domain's declared options, ``{name: option}``, for ``mpno train`` and config files."""
    merged = {}
    for domain in DOMAINS.values():
        for name, declared in domain.declared_options.items():
            if merged.setdefault(name, declared) is not declared:
                raise ValueError(f"the option {name!r} is declared by two domains; declare it once")
    return merged


__all__ = ["CAPABILITIES", "DOMAINS", "Domain", "of", "of_data", "options", "register"]
