import pytest
import torch

import mpno
from mpno import Precision


def test_half_defaults_to_tanh_and_other_modes_to_no_stabilizer():
    assert Precision("half").stabilizer == "tanh"
    assert Precision("half", stabilizer=None).stabilizer is None
    assert Precision("half", stabilizer="none").stabilizer is None
    for mode in ("full", "amp", "mixed"):
        assert Precision(mode).stabilizer is None


@pytest.mark.parametrize(
    "mode, real, forward, spectral, scaled",
    [
        ("full", None, None, None, False),
        ("amp", torch.float16, None, None, True),
        ("mixed", torch.float16, None, torch.float16, True),
        ("half", torch.float16, torch.float16, torch.float16, True),
    ],
)
def test_mode_table(mode, real, forward, spectral, scaled):
    p = Precision(mode)
    assert (p.real_dtype, p.forward_dtype, p.contraction_dtype, p.inverse_dtype) == (real, forward, spectral, spectral)
    assert p.stage_dtypes == dict(zip(mpno.precision.STAGES, (real, forward, spectral, spectral)))
    assert p.uses_grad_scaler == scaled and p.low_precision == scaled
    assert not Precision(mode, "bfloat16").uses_grad_scaler  # bfloat16 has float32's range: no loss scaling


def test_bfloat16_is_the_half_dtype_when_asked():
    assert Precision("half", dtype="bfloat16").half_dtype == torch.bfloat16


def test_parse_accepts_strings_dicts_and_policies():
    assert Precision.parse("mixed") == Precision("mixed")
    assert Precision.parse({"mode": "half", "dtype": "bfloat16"}) == Precision("half", "bfloat16")
    p = Precision("amp")
    assert Precision.parse(p) is p
    assert Precision.parse(None) == Precision("full")


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"mode": "quarter"}, ["mode", "'quarter'", "'full'", "'half'"]),
        ({"mode": "half", "dtype": "float8"}, ["dtype", "'float8'", "'bfloat16'"]),
        ({"mode": "half", "stabilizer": "sigmoid"}, ["stabilizer", "'sigmoid'", "'tanh'"]),
        ({"mode": "half", "fft_backend": "fftw"}, ["fft_backend", "'fftw'", "'dft'"]),
    ],
)
def test_bad_arguments_name_the_argument_value_and_choices(kwargs, names):
    with pytest.raises(ValueError) as err:
        Precision(**kwargs)
    for name in names:
        assert name in str(err.value)


def test_parse_rejects_unknown_fields_and_types():
    with pytest.raises(ValueError, match="unknown precision fields"):
        Precision.parse({"mode": "half", "speed": "fast"})
    with pytest.raises(ValueError, match="precision=3"):
        Precision.parse(3)


def test_a_stabilizer_in_higher_precision_is_a_reference_for_half():
    assert Precision("full", stabilizer="tanh").stabilizer == "tanh"
    assert str(Precision("full", stabilizer="tanh")) == "full/tanh"


def test_replace_re_defaults_the_stabilizer_with_the_mode():
    half = Precision("half")
    assert half.replace(mode="mixed").stabilizer is None
    assert Precision("mixed").replace(mode="half").stabilizer == "tanh"
    assert half.replace(stabilizer="clip_hard").stabilizer == "clip_hard"


def test_set_precision_reaches_every_layer_and_can_change_between_steps():
    model = mpno.FNO(1, 1, (4, 4), hidden_channels=4, n_layers=2)
    x = torch.randn(1, 1, 8, 8)
    model(x)
    model.set_precision("mixed")
    policies = {m.precision for m in model.modules() if hasattr(m, "precision")}
    assert policies == {Precision("mixed")}
    model(x)
    model.set_precision(Precision("half", dtype="bfloat16"))
    assert model.blocks[0].conv.precision == Precision("half", dtype="bfloat16")


def test_inference_policy_keeps_the_trained_stabilizer_unless_one_is_named():
    from mpno.precision import inference_policy

    mixed, tanh = Precision("mixed"), Precision("half", stabilizer="tanh")
    assert inference_policy("half", mixed) == (Precision("half", stabilizer=None), None)
    assert inference_policy("half/bfloat16", mixed) == (Precision("half", "bfloat16", stabilizer=None), None)
    assert inference_policy("mixed", tanh) == (Precision("mixed", stabilizer="tanh"), None)  # the same function
    assert inference_policy("half/float16/tanh", tanh) == (tanh, None)  # named, and as trained: no warning
    policy, warning = inference_policy("half/clip_hard", mixed)
    assert policy.stabilizer == "clip_hard"
    assert "applies the clip_hard stabilizer, but the model was trained with no stabilizer" in warning
    policy, warning = inference_policy("full/none", tanh)
    assert policy == Precision("full") and "trained with the tanh stabilizer" in warning
