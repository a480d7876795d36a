"""Error budget: closed-form bounds and empirical audits of data and models (``docs/bounds.md``)."""

from .audit import SAFE_RATIO, audit_data, audit_model, choose_precision
from .measure import bound_and_lipschitz, discretization, precision_error
from .theory import (discretization_bound, rounding_bound, spectral_layer_bound, transform_precision_bound,
                     variation_bound_1d)

__all__ = ["SAFE_RATIO", "audit_data", "audit_model", "bound_and_lipschitz", "choose_precision", "discretization",
           "discretization_bound", "precision_error", "rounding_bound", "spectral_layer_bound",
           "transform_precision_bound", "variation_bound_1d"]
