"""The dtype table (mpno.dtypes): its facts against torch's, the names derived from it, and consumers that read it."""

import dataclasses

import pytest
import torch

from mpno import Precision, SpectralConv, dtypes, precision
from mpno.bounds import theory
from mpno.ops import products, transforms

RECORDS = list(dtypes.DTYPE_TABLE.values())


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_each_record_agrees_with_torch(record):
    finfo = torch.finfo(record.torch_dtype)
    assert record.name == str(record.torch_dtype).removeprefix("torch.")
    assert record.unit_roundoff == finfo.eps / 2
    assert record.largest == finfo.max
    assert record.complex_part_dtype.is_floating_point
    assert torch.finfo(record.complex_part_dtype).eps <= finfo.eps  # the parts hold the dtype's values exactly
    for per_device in (record.torch_fft, record.matrix_products):
        assert dtypes.OTHER_DEVICES in per_device  # every device type has an answer


def test_the_table_holds_the_half_dtypes_and_the_master_and_reference_dtypes():
    assert dtypes.half_names() == ("float16", "bfloat16")
    assert {"float32", "float64"} <= set(dtypes.DTYPE_TABLE)
    assert dtypes.info("float16").needs_loss_scaling and not dtypes.info("bfloat16").needs_loss_scaling
    assert [r.complex_kernels for r in RECORDS] == [not r.half for r in RECORDS]


def test_the_names_other_code_imports_are_derived_from_the_table():
    assert precision.DTYPES == {r.name: r.torch_dtype for r in RECORDS if r.half}
    assert precision.HALF_DTYPES == tuple(precision.DTYPES.values())
    assert precision.UNIT_ROUNDOFF == {r.torch_dtype: r.unit_roundoff for r in RECORDS}


def test_info_takes_a_name_or_a_torch_dtype():
    for record in RECORDS:
        assert dtypes.info(record.name) is record
        assert dtypes.info(record.torch_dtype) is record


@pytest.mark.parametrize("unknown", ["float8", torch.int32, torch.complex64])
def test_an_unknown_dtype_is_refused_naming_the_known_ones(unknown):
    with pytest.raises(ValueError) as err:
        dtypes.info(unknown)
    assert repr(unknown) in str(err.value)
    for name in dtypes.DTYPE_TABLE:
        assert name in str(err.value)


def test_torch_fft_support_by_device_and_size():
    float16, bfloat16, float32 = (dtypes.info(name) for name in ("float16", "bfloat16", "float32"))
    assert float16.torch_fft_runs("cuda", (64, 32)) and not float16.torch_fft_runs("cuda", (64, 48))
    assert not float16.torch_fft_runs("cpu", (64,)) and not bfloat16.torch_fft_runs("cuda", (64,))
    assert float32.torch_fft_runs("cpu", (48, 7)) and float32.torch_fft_runs("cuda", (48, 7))
    assert transforms.implementation(torch.device("meta"), torch.float16, (64, 32)) == "fft"  # meta traces cuda
    assert transforms.implementation(torch.device("meta"), torch.float16, (64, 48)) == "dft"
    assert transforms.implementation(torch.device("cpu"), torch.float16, (64,)) == "dft"
    assert transforms.implementation(torch.device("cpu"), torch.float32, (48,)) == "fft"


def _replace(monkeypatch, name, **changes):
    monkeypatch.setitem(dtypes.DTYPE_TABLE, name, dataclasses.replace(dtypes.DTYPE_TABLE[name], **changes))


def test_consumers_read_the_table(monkeypatch):
    """Changing a fact in the float16 record changes what the policy, the transforms, the products and the
    bounds do: none of them keeps its own copy."""
    assert Precision("mixed", "float16").uses_grad_scaler
    assert transforms.implementation(torch.device("cpu"), torch.float16, (16,)) == "dft"
    a = torch.ones(2, 2, dtype=torch.float16)
    assert products.emulated(a, a)
    bound = theory.rounding_bound(1.0, torch.float16)

    _replace(monkeypatch, "float16", needs_loss_scaling=False, torch_fft={dtypes.OTHER_DEVICES: dtypes.FFT_ANY},
             matrix_products={dtypes.OTHER_DEVICES: dtypes.NATIVE}, unit_roundoff=2.0**-10)
    assert not Precision("mixed", "float16").uses_grad_scaler
    assert transforms.implementation(torch.device("cpu"), torch.float16, (16,)) == "fft"
    assert not products.emulated(a, a)
    assert theory.rounding_bound(1.0, torch.float16) == 2 * bound


def test_the_torch_backend_names_where_torch_fft_runs_the_dtype():
    with pytest.raises(ValueError, match="torch.fft runs bfloat16 nowhere"):
        transforms.implementation(torch.device("cpu"), torch.bfloat16, (16,), backend="torch")
    with pytest.raises(ValueError, match="torch.fft runs float16 on cuda at power-of-two sizes"):
        transforms.implementation(torch.device("meta"), torch.float16, (12,), backend="torch")


def test_a_new_dtype_is_one_record(monkeypatch):
    """A record added to the table (here bfloat16's facts under another name, with loss scaling) is a dtype
    policies may name: parsed, printed, scaled as its record says, and computed in its torch dtype."""
    toy = dataclasses.replace(dtypes.info("bfloat16"), name="toy16", needs_loss_scaling=True)
    monkeypatch.setitem(dtypes.DTYPE_TABLE, "toy16", toy)
    policy = Precision.from_string("mixed/toy16")
    assert policy == Precision("mixed", "toy16") and str(policy) == "mixed/toy16"
    assert policy.half_dtype == torch.bfloat16 and policy.contraction_dtype == torch.bfloat16
    assert policy.uses_grad_scaler and not Precision("mixed", "bfloat16").uses_grad_scaler

    torch.manual_seed(0)
    conv = SpectralConv(4, 4, (8, 8), precision=policy)
    x = torch.randn(2, 4, 16, 16)
    y = conv(x)
    conv.precision = Precision("mixed", "bfloat16")
    assert torch.equal(y, conv(x))


def test_an_unregistered_dtype_is_not_a_policy():
    with pytest.raises(ValueError, match="'toy16'.*'float16', 'bfloat16'"):
        Precision("mixed", "toy16")
