"""Parameters cast to half once per forward pass: the same numbers as casting each where it is used."""

import pytest
import torch

import mpno
from mpno.nn import casting
from mpno.precision import UNIT_ROUNDOFF
from reference import relative_error


def _output_and_gradients(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["amp/bfloat16", "mixed/float16", "half/bfloat16"])
@pytest.mark.parametrize("factorization", [None, "cp"])
def test_casting_once_gives_the_per_parameter_casts_bit_for_bit(monkeypatch, precision, factorization):
    model = mpno.FNO(2, 1, (6, 6), hidden_channels=6, n_layers=2, factorization=factorization, rank=0.5,
                     precision=mpno.Precision.from_string(precision))
    x = torch.randn(3, 2, 12, 12)
    once = _output_and_gradients(model, x)
    monkeypatch.setattr(casting, "begin", lambda module: [])  # every layer casts its own parameters
    each = _output_and_gradients(model, x)
    assert torch.equal(once[0], each[0])
    assert once[1].keys() == each[1].keys()
    for name in once[1]:
        assert torch.equal(once[1][name], each[1][name]), name
        assert once[1][name].dtype == torch.float32


def test_inference_reuses_the_copies_until_a_parameter_changes(monkeypatch):
    model = mpno.FNO(1, 1, (6, 6), hidden_channels=4, n_layers=1, precision="mixed").eval()
    x = torch.randn(2, 1, 12, 12)
    calls = []
    apply = casting._HalfCopies.apply
    monkeypatch.setattr(casting._HalfCopies, "apply", lambda *args: calls.append(1) or apply(*args))
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first) and len(calls) == 1  # cast once for both batches
        model.blocks[0].conv.weight.mul_(2)  # a change: its version moves
        changed = model(x)
    assert len(calls) == 2 and not torch.equal(changed, first)
    fresh = mpno.FNO(1, 1, (6, 6), hidden_channels=4, n_layers=1, precision="mixed").eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), changed)  # the kept copies are those of the changed weights
    model(x).sum().backward()  # with gradients the copies are made for each forward pass
    model(x).sum().backward()
    assert len(calls) == 5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_blocks_are_the_rounded_weights_2x2_blocks_with_their_gradient(dtype):
    """The block of all layers' weights at once equals each weight rounded, then expanded to [[re, im], [-im, re]]
    (mpno.ops.contraction.complex_block), in values and in the gradient it passes back."""
    from mpno.nn.spectral import _modes_outermost
    from mpno.ops.contraction import complex_block

    weights = [torch.nn.Parameter(_modes_outermost(torch.randn(3, 4, 5, 3, 2))) for _ in range(2)]
    blocks = casting._HalfCopies.apply(dtype, 0, ((3, 4, 5, 3, 2),) * 2, *weights)
    probes = [torch.randn(b.shape).to(dtype) for b in blocks]
    sum(((b.double() * p.double()).sum() for b, p in zip(blocks, probes))).backward()
    for w, b, probe in zip(weights, blocks, probes):
        half = w.detach().to(dtype).requires_grad_()
        expected = complex_block(half)
        assert b.dtype == dtype and torch.equal(b, expected)
        (expected.double() * probe.double()).sum().backward()
        assert relative_error(w.grad, half.grad) <= UNIT_ROUNDOFF[dtype]  # theirs rounded once more, to half
        assert w.grad.stride() == w.stride()  # in the weight's own (modes first) layout
