"""PDE data: generators with verified solvers, loaders for common formats, normalisation."""

from .dataset import OperatorDataset, UnitGaussianNormalizer, split_indices
from .files import DataError, open_pairs
from .generate import EQUATIONS, coarse_path, generate

__all__ = ["DataError", "EQUATIONS", "OperatorDataset", "UnitGaussianNormalizer", "coarse_path",
           "generate", "open_pairs", "split_indices"]
