"""mpno: mixed-precision neural operators with tested numerics and error budgets."""

from .nn.fno_gno import FNOGNO
from .nn.models import FNO, TFNO
from .nn.gno import GINO, GNOBlock
from .nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from .nn.spectral import SpectralConv
from .nn.spherical import SFNO, SphericalConv
from .nn.uno import UNO
from .ops.sht import InverseRealSHT, RealSHT
from .precision import Precision, PrecisionSchedule, compiled
from .run.checkpoint import load_model

__all__ = ["FNO", "FNOGNO", "GINO", "GNOBlock", "TFNO", "InverseRealSHT", "NormalizedOperator", "Precision",
           "PrecisionSchedule", "RealSHT", "SFNO", "SpectralConv", "SphericalConv", "UNO", "UnitGaussianNormalizer",
           "compiled", "load_model"]
__version__ = "0.1.0"
