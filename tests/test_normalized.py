"""Normalisation, and models rebuilt from what they record: ``NormalizedOperator`` and ``mpno.load_model``."""

import pytest
import torch

import mpno
from mpno import NormalizedOperator, Precision, UnitGaussianNormalizer
from mpno.nn import losses
from mpno.run import checkpoint
from mpno.run.experiment import evaluate_checkpoint, train
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
    assert set(norm.state_dict()) == {"mean", "std"}



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
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(checkpoint.CheckpointError, match="edited.pt: the weights do not fit the architecture"):
        mpno.load_model(tmp_path / "edited.pt")
