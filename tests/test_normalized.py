"""Normalisation, and models rebuilt from what they record: ``NormalizedOperator`` and ``mpno.load_model``."""

import pytest
import torch

import mpno
from mpno import NormalizedOperator, Precision, UnitGaussianNormalizer
from mpno.nn import losses
from mpno.run import checkpoint
from mpno.run.evaluation import evaluate_checkpoint
from mpno.run.experiment import train
from reference import quiet, tiny_config


def test_normaliser_is_per_channel_invertible_and_resolution_independent():
    fields = [torch.randn(2, 16, 16) * torch.tensor([3.0, 0.5])[:, None, None] + 7 for _ in range(20)]
    norm = UnitGaussianNormalizer.fit(fields)
    stacked = torch.stack(fields)
    assert torch.allclose(norm.mean, stacked.transpose(0, 1).reshape(2, -1).mean(1))
    assert torch.allclose(norm.std, stacked.transpose(0, 1).reshape(2, -1).std(1, unbiased=False), rtol=1e-5)
    encoded = norm.encode(stacked)
    assert encoded.mean().abs() < 1e-5 and torch.allclose(norm.decode(encoded), stacked, atol=1e-5)
    coarse = stacked[..., ::2, ::2]
    assert norm.encode(coarse).shape == coarse.shape
    assert set(norm.state_dict()) == {"mean", "std", "scale"}


def test_normaliser_standardises_channels_in_small_units_and_leaves_constant_ones_finite():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([400.0, 1.3e-5, 1.8e-6, 0.0, 0.0], dtype=torch.float64)
    means = torch.tensor([3000.0, 0.0, 0.0, 5.0, 0.0], dtype=torch.float64)
    fields = [torch.randn(5, 8, 16, generator=gen, dtype=torch.float64) * scales[:, None, None]
              + means[:, None, None] for _ in range(10)]
    norm = UnitGaussianNormalizer.fit(fields)
    encoded = norm.encode(torch.stack(fields))
    spread = encoded.transpose(0, 1).reshape(5, -1).std(1, unbiased=False)
    assert torch.allclose(spread[:3], torch.ones(3, dtype=torch.float64), atol=1e-9)  # every varying channel
    assert torch.equal(encoded[:, 3:], torch.zeros_like(encoded[:, 3:]))  # constant channels: centred only
    assert torch.allclose(norm.scale[3:], torch.tensor([5e-6, 1.0]))


def test_normaliser_saved_without_a_scale_standardises_as_it_was_trained():
    """Checkpoints written before ``scale`` existed divided by ``std + eps``; they load to the same numbers."""
    old = {"mean": torch.tensor([1.0, 0.0]), "std": torch.tensor([2.0, 1.8e-6])}
    norm = UnitGaussianNormalizer(2)
    norm.load_state_dict(old)
    x = torch.ones(1, 2, 3)
    expected = (x - old["mean"].view(1, 2, 1)) / (old["std"].view(1, 2, 1) + 1e-6)
    assert torch.allclose(norm.encode(x), expected)



@pytest.mark.parametrize("operator", [
    lambda: mpno.FNO(2, 1, (6, 4), hidden_channels=5, n_layers=2, skip="soft-gating", domain_padding=0.25),
    lambda: mpno.TFNO(1, 3, (4,), hidden_channels=6, factorization="cp", rank=3, channel_mlp=False),
])
def test_a_model_rebuilds_itself_from_its_spec(operator):
    model = NormalizedOperator(operator())
    rebuilt = NormalizedOperator.from_spec(model.spec())
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, model.operator.in_channels, *([12] * len(model.operator.n_modes)))
    assert torch.equal(rebuilt(x), model(x))
    assert rebuilt.spec() == model.spec()


def test_load_model_gives_the_numbers_evaluate_gives(files, tmp_path):
    train(tiny_config(files, tmp_path / "run", epochs=2, precision="half:0.5,mixed:0.5"), log=quiet)
    path = tmp_path / "run" / "best.pt"
    model = mpno.load_model(path)
    assert not model.training and model.precision == Precision("mixed")
    data = torch.load(files / "test32.pt")
    with torch.no_grad():
        prediction = model(data["x"])
    expected = evaluate_checkpoint(str(path), [str(files / "test32.pt")], device="cpu")["test"]["test32.pt"]
    for name, value in expected.items():
        assert losses.build(name)(prediction, data["y"]).item() == pytest.approx(value, rel=1e-6)


def test_load_model_refuses_weights_that_do_not_fit_the_recorded_architecture(files, tmp_path):
    train(tiny_config(files, tmp_path / "run", epochs=1), log=quiet)
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    state["operator"]["arguments"]["hidden_channels"] = 7
    checkpoint.save(state, tmp_path / "edited.pt")  # with a matching digest: the architecture check behind it
    with pytest.raises(checkpoint.CheckpointError, match="edited.pt: the weights do not fit the architecture"):
        mpno.load_model(tmp_path / "edited.pt")
