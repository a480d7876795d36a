"""The operator skeleton: registration by name and domain, recorded arguments, the policy applied last."""

import pytest
import torch

import mpno
from mpno.nn import registry
from mpno.nn.layers import PointwiseLinear
from mpno.nn.normalized import NormalizedOperator
from mpno.nn.operator import Operator


class _LateLayers(Operator):
    """An operator that builds one layer after the others, and keeps a resolved argument."""

    def __init__(self, in_channels, out_channels, n_modes=(4,), width=None, precision="full", **options):
        super().__init__()
        self.in_channels, self.out_channels, self.n_modes = in_channels, out_channels, tuple(n_modes)
        self.width = width or 2 * in_channels  # kept: recorded resolved
        self.first = PointwiseLinear(in_channels, self.width)
        self.last = PointwiseLinear(self.width, out_channels)  # built after everything else


def test_every_layer_gets_the_policy_whatever_order_it_was_built_in():
    model = _LateLayers(2, 3, precision="half/bfloat16")
    assert model.precision == mpno.Precision("half", "bfloat16")
    assert [m.precision for m in (model.first, model.last)] == [model.precision] * 2


def test_arguments_are_recorded_with_defaults_resolved_values_and_options_spread():
    model = _LateLayers(2, 3, (4, 2), extra=1)
    assert model.arguments == {"in_channels": 2, "out_channels": 3, "n_modes": [4, 2], "width": 4, "extra": 1}
    tfno = mpno.TFNO(1, 2, (4, 4), hidden_channels=3, rank=0.5)  # TFNO's own defaults, then the FNO's
    assert tfno.arguments["factorization"] == "tucker" and tfno.arguments["rank"] == 0.5
    assert tfno.arguments["n_layers"] == 4 and "precision" not in tfno.arguments
    sfno = mpno.SFNO(1, 1, (4, 3), grid="legendre-gauss", hidden_channels=3)
    assert sfno.arguments["grid"] == "legendre-gauss" and sfno.arguments["n_modes"] == [4, 3]


def test_operators_register_by_name_with_their_domain():
    models = registry.models()
    assert {kind: cls.domain for kind, cls in models.items()}.items() >= {
        "fno": "grid", "tfno": "grid", "sfno": "sphere", "gino": "points"}.items()
    assert registry.model_kind(mpno.SFNO(1, 1, (4, 4), hidden_channels=2, n_layers=1)) == "sfno"
    with pytest.raises(ValueError, match="model='nope' is not supported; allowed: 'fno'"):
        registry.operator_class("nope")
    with pytest.raises(ValueError, match="two operators are named 'fno'"):
        type("Impostor", (Operator,), {}, kind="fno", domain="grid")
    with pytest.raises(ValueError, match="declares its domain"):
        type("Homeless", (Operator,), {}, kind="homeless")
    with pytest.raises(ValueError, match="domain='' is not the name of a domain"):
        type("Lost", (Operator,), {}, domain="")


def test_an_unregistered_subclass_is_refused_by_name():
    class Custom(mpno.FNO):
        pass

    with pytest.raises(ValueError, match="Custom is not one of mpno's operators"):
        registry.model_kind(Custom(1, 1, (4, 4), hidden_channels=2, n_layers=1))


#: Specs as checkpoints written before the skeleton recorded them (kept by hand in each constructor).
EARLIER_SPECS = [
    {"kind": "fno", "arguments": {"in_channels": 2, "out_channels": 1, "n_modes": [6, 4], "hidden_channels": 5,
                                  "n_layers": 2, "lifting_channels": None, "projection_channels": None,
                                  "skip": "linear", "channel_mlp": True, "channel_mlp_expansion": 0.5,
                                  "positional_embedding": True, "domain_padding": 0.25, "factorization": "dense",
                                  "rank": 0.05, "implementation": "factorized"}},
    {"kind": "tfno", "arguments": {"in_channels": 1, "out_channels": 1, "n_modes": [4], "hidden_channels": 3,
                                   "n_layers": 1, "lifting_channels": None, "projection_channels": None,
                                   "skip": "linear", "channel_mlp": True, "channel_mlp_expansion": 0.5,
                                   "positional_embedding": True, "domain_padding": 0.0, "factorization": "tucker",
                                   "rank": 0.5, "implementation": "factorized"}},
    {"kind": "sfno", "arguments": {"in_channels": 2, "out_channels": 3, "n_modes": [6, 4], "hidden_channels": 5,
                                   "n_layers": 2, "grid": "legendre-gauss", "lifting_channels": None,
                                   "projection_channels": None, "skip": "linear", "channel_mlp": True,
                                   "channel_mlp_expansion": 0.5, "positional_embedding": True,
                                   "factorization": "cp", "rank": 0.5, "implementation": "factorized"}},
    {"kind": "gino", "arguments": {"in_channels": 2, "out_channels": 1, "n_modes": [4, 4], "hidden_channels": 4,
                                   "n_layers": 1, "latent_grid": [6, 6], "radius": 0.6000000000000001,
                                   "bounds": [[-1.0, 1.0], [-1.0, 1.0]], "gno_channels": None,
                                   "kernel": "nonlinear", "kernel_hidden": 64, "chunk_size": 65536,
                                   "projection_channels": None, "factorization": "tucker", "rank": 0.5,
                                   "domain_padding": 0.1}},
]


@pytest.mark.parametrize("spec", EARLIER_SPECS, ids=[s["kind"] for s in EARLIER_SPECS])
def test_specs_of_earlier_checkpoints_rebuild_the_same_model(spec):
    rebuilt = NormalizedOperator.from_spec(spec).spec()
    assert rebuilt["kind"] == spec["kind"]
    assert {k: rebuilt["arguments"][k] for k in spec["arguments"]} == spec["arguments"]
    assert {k: v for k, v in rebuilt["arguments"].items() if k not in spec["arguments"]} in (
        {}, {"domain_padding": 0.0})  # recorded now with its default


def test_fno_and_sfno_share_one_body_and_their_kernel_layers_one_forward():
    from mpno.nn.models import FieldOperator
    from mpno.nn.spectral import KernelLayer

    assert issubclass(mpno.FNO, FieldOperator) and issubclass(mpno.SFNO, FieldOperator)
    assert "_forward" not in vars(mpno.FNO) and "_forward" not in vars(mpno.SFNO)
    for layer in (mpno.SpectralConv, mpno.SphericalConv):
        assert issubclass(layer, KernelLayer) and "forward" not in vars(layer) and "_forward" not in vars(layer)
    with pytest.raises(ValueError, match="domain_padding=0.25 does not apply to an SFNO"):
        mpno.SFNO(1, 1, (4, 4), domain_padding=0.25)
    x = torch.randn(2, 1, 8, 16)
    sfno = mpno.SFNO(1, 1, (4, 4), hidden_channels=3, n_layers=1)
    assert sfno(x).shape == x.shape
