"""PDE data: generators with verified solvers, loaders for common formats, datasets and splits."""

from .dataset import OperatorDataset, split_indices
from .files import DataError, open_pairs
from .generate import EQUATIONS, coarse_path, generate

__all__ = ["DataError", "EQUATIONS", "OperatorDataset", "coarse_path", "generate", "open_pairs", "split_indices"]
