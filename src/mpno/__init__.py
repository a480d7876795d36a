"""mpno: mixed-precision neural operators with tested numerics and error budgets."""

from .nn.models import FNO, TFNO
from .nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from .nn.spectral import SpectralConv
from .precision import Precision, PrecisionSchedule
from .run.checkpoint import load_model

__all__ = ["FNO", "TFNO", "NormalizedOperator", "Precision", "PrecisionSchedule", "SpectralConv",
           "UnitGaussianNormalizer", "load_model"]
__version__ = "0.1.0"
