"""Defaults sized to the data: the batch size from the number of samples, the SFNO's modes from the grid."""

import json

import pytest
import torch

from mpno.run import defaults, domains
from mpno.run.resolve import open_run
from mpno.run.config import RunConfig


@pytest.mark.parametrize("samples, processes, batch", [
    (200, 1, 4), (300, 1, 8), (959, 1, 16), (960, 1, 32), (100_000, 1, 32), (59, 1, 1), (10, 1, 1), (400, 2, 4),
])
def test_the_batch_size_gives_every_epoch_at_least_30_steps(samples, processes, batch):
    assert defaults.batch_size(samples, processes) == batch
    assert samples / (batch * processes) >= defaults.STEPS_PER_EPOCH or batch == 1  # full batches per epoch
    assert batch == defaults.MAX_BATCH or samples / (2 * batch * processes) < defaults.STEPS_PER_EPOCH  # largest


def test_the_sfno_keeps_every_degree_of_the_training_grid_the_gino_8_modes_and_the_rest_12():
    assert domains.of("sfno").default_modes((32, 64)) == [32, 32]
    assert domains.of("sfno").default_modes((33, 40)) == [33, 21]  # orders up to nlon / 2
    assert domains.of("fno").default_modes((32, 64)) == [12] and domains.of("gino").default_modes([]) == [8]


def test_unset_options_are_filled_from_the_training_data_once_and_given_ones_kept(tmp_path):
    torch.save({"x": torch.randn(40, 3, 8, 16), "y": torch.randn(40, 3, 8, 16)}, tmp_path / "s.pt")
    lines = []
    config = RunConfig(model="sfno", data_train=str(tmp_path / "s.pt"), test_fraction=0.25).validate()
    resolved = open_run(config, lines.append).config
    assert (config.batch_size, config.n_modes) == (None, None)  # what was given stays as it was
    assert (resolved.batch_size, resolved.n_modes) == (1, [8, 8])  # 30 training samples
    assert lines == ["defaults sized to the data: batch size 1 (30 steps per epoch for 30 training samples), "
                     "n_modes 8 8 (the training grid 8×16)"]
    assert open_run(resolved, lines.append).config == resolved
    assert len(lines) == 1  # nothing left to choose
    given = RunConfig(model="sfno", data_train=str(tmp_path / "s.pt"), batch_size=5, n_modes=[4, 3]).validate()
    resolved_given = open_run(given, lines.append).config
    assert (resolved_given.batch_size, resolved_given.n_modes) == (5, [4, 3]) and len(lines) == 1
    assert json.loads(json.dumps(resolved.to_dict()))["n_modes"] == [8, 8]
