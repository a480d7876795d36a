"""PDE data: generators with verified solvers, loaders for common formats, datasets and splits."""

from .dataset import OperatorDataset, split_indices
from .files import DataError, available_keys, open_pairs
from .generate import GENERATORS, coarse_path, generate
from .pointclouds import PointCloudBatches, PointCloudDataset, PointClouds, PointValues

__all__ = ["DataError", "GENERATORS", "available_keys", "OperatorDataset", "PointCloudBatches", "PointCloudDataset", "PointClouds",
           "PointValues", "coarse_path", "generate", "open_pairs", "split_indices"]
