import math

import pytest
import torch

from mpno.nn import losses


def wave(n, k=1, dtype=torch.float64):
    x = torch.arange(n, dtype=dtype) / n
    return torch.sin(2 * math.pi * k * x)


def test_relative_l2_is_per_sample_then_averaged():
    y = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    scale = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).view(3, 1, 1, 1)
    assert losses.LpLoss(2)(y * (1 + scale), y).item() == pytest.approx(0.2, rel=1e-12)


def test_losses_run_in_float32_for_half_predictions():
    y = torch.randn(2, 1, 8, 8)
    for loss in (losses.LpLoss(2), losses.H1Loss(), losses.MSELoss()):
        assert loss(y.half(), y).dtype == torch.float32


def test_h1_norm_of_a_sine_matches_the_integral():
    """‖sin 2πx‖²_{H¹} = ½ + ½(2π)² on [0, 1); spectral derivatives are exact, finite differences second order."""
    exact = math.sqrt(0.5 + 0.5 * (2 * math.pi) ** 2)
    field = wave(64).view(1, 1, 64)
    zero = torch.zeros_like(field)
    spectral = losses.H1Loss(relative=False, method="spectral")(field, zero).item()
    assert spectral == pytest.approx(exact, rel=1e-12)
    errors = []
    for n in (32, 64, 128):
        f = wave(n).view(1, 1, n)
        errors.append(abs(losses.H1Loss(relative=False)(f, torch.zeros_like(f)).item() - exact))
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5


def test_non_periodic_differences_are_exact_for_quadratics():
    n = 20
    x = torch.arange(n, dtype=torch.float64) / n
    field = (3 * x**2 - x).view(1, 1, n)
    (derivative,) = losses.gradient(field, periodic=False)
    assert torch.allclose(derivative[0, 0], 6 * x - 1, atol=1e-12)


def test_relative_h1_in_2d_and_mse():
    y = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    assert losses.H1Loss()(y, y).item() == 0.0
    assert losses.H1Loss()(2 * y, y).item() == pytest.approx(1.0)
    assert losses.MSELoss()(y + 0.5, y).item() == pytest.approx(0.25)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss='l3'"):
        losses.build("l3")
    with pytest.raises(ValueError, match="periodic=True"):
        losses.H1Loss(periodic=False, method="spectral")
    with pytest.raises(ValueError, match="differs from target"):
        losses.LpLoss()(torch.zeros(1, 1, 4), torch.zeros(1, 1, 5))
