"""mpno: mixed-precision neural operators with tested numerics and error budgets."""

from .models import FNO, TFNO
from .precision import Precision
from .spectral import SpectralConv

__all__ = ["FNO", "TFNO", "Precision", "SpectralConv"]
__version__ = "0.1.0"
