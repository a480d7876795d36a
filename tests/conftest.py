import sys
from pathlib import Path

import pytest
import torch

from reference import smooth_pairs

# The benchmark baselines (one_shot) are tested too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny files of a smooth operator: 24 training pairs at 16², 8 test pairs at 16² and at 32²."""
    root = tmp_path_factory.mktemp("tiny")
    x, y = smooth_pairs(24, 16, seed=1)
    torch.save({"x": x, "y": y}, root / "train.pt")
    x, y = smooth_pairs(8, 32, seed=2)
    torch.save({"x": x[..., ::2, ::2].clone(), "y": y[..., ::2, ::2].clone()}, root / "test16.pt")
    torch.save({"x": x, "y": y}, root / "test32.pt")
    return root
