"""Forecasting: trajectories cut into windows, the unrolled loss, rollouts, their errors per lead time, the
precision gap over a rollout and its bound, and the commands."""

import json

import h5py
import numpy as np
import pytest
import torch

from mpno import FNO, Precision
from mpno.data import DataError, generate
from mpno.data.trajectories import TrajectoryWindows
from mpno.run import cli, forecast
from mpno.run.config import RunConfig
from mpno.run.experiment import train
from reference import interrupted, quiet

N, T, C, GRID = 3, 7, 2, (4, 4)


@pytest.fixture
def hand_made(tmp_path):
    """u[n, t, c] is the constant field 100 n + 10 t + c: every value says where it came from."""
    n, t, c = np.meshgrid(np.arange(N), np.arange(T), np.arange(C), indexing="ij")
    u = (100 * n + 10 * t + c)[..., None, None] * np.ones(GRID)
    torch.save({"u": torch.tensor(u, dtype=torch.float32)}, tmp_path / "hand.pt")
    return tmp_path / "hand.pt"


def values(field: torch.Tensor) -> list[int]:
    """The constant of each snapshot (or channel) of a field."""
    return [int(v) for v in field.flatten(1)[:, 0]]


def test_windows_are_cut_from_the_trajectories_as_the_indices_say(hand_made):
    windows = TrajectoryWindows(hand_made, history=2, unroll=3, spatial_dims=2)
    assert len(windows) == N * (T - 2 - 3 + 1) and windows.units == N
    assert windows.shapes == ((2 * C, *GRID), (C, *GRID))
    x, y = windows[0]
    assert values(x) == [0, 1, 10, 11] and y.shape == (3, C, *GRID)
    assert [values(step) for step in y] == [[20, 21], [30, 31], [40, 41]]
    x, y = windows[2 * 3 + 1]  # trajectory 2, second window
    assert values(x) == [210, 211, 220, 221] and values(y[0]) == [230, 231]
    one_step = TrajectoryWindows(hand_made, history=1, unroll=1, spatial_dims=2)
    assert one_step[T - 2][1].shape == (C, *GRID) and values(one_step[T - 2][1]) == [60, 61]
    held = windows.subset([1])
    assert len(held) == 3 and values(held[0][0])[:1] == [100]
    assert values(windows.with_unroll(1)[0][1]) == [20, 21]


def test_bad_trajectories_are_refused_naming_the_file_or_option(hand_made, tmp_path):
    with pytest.raises(DataError, match="too short for --history 4 and --unroll 4"):
        TrajectoryWindows(hand_made, history=4, unroll=4, spatial_dims=2)
    with pytest.raises(DataError, match="the file does not say which; pass --spatial-dims"):
        TrajectoryWindows(hand_made)
    u = torch.zeros(2, 5, 1, 8, 8)
    u[1, 3, 0, 2, 2] = float("nan")
    torch.save({"u": u}, tmp_path / "nan.pt")
    windows = TrajectoryWindows(tmp_path / "nan.pt", spatial_dims=2)
    with pytest.raises(DataError, match="nan.pt: trajectory 1 holds NaN or inf values at snapshot 3;"):
        [windows[i] for i in range(len(windows))]
    torch.save({"u": torch.zeros(2, 5, 1, 8)}, tmp_path / "flat.pt")
    with pytest.raises(DataError, match=r"shape \(2, 5, 1, 8\); trajectories with 3 spatial dims"):
        TrajectoryWindows(tmp_path / "flat.pt", spatial_dims=3)


def test_the_unrolled_loss_has_the_gradient_of_a_hand_computation():
    """A linear one-step model ``a · x``: two unrolled steps predict ``a x`` and ``a² x``; with the squared
    error, dL/da = 2·mean((a x − y1) x) + 2·mean((a² x − y2) · 2 a x)."""
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 1, 5, dtype=torch.float64)
    y = torch.randn(3, 2, 1, 5, dtype=torch.float64)
    mse = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
    loss = forecast.unrolled(mse, 2)(lambda window: a * window, x, y)
    loss.backward()
    value = a.detach()
    expected = 2 * ((value * x - y[:, 0]) * x).mean() + 2 * ((value**2 * x - y[:, 1]) * 2 * value * x).mean()
    assert loss.item() == pytest.approx((mse(value * x, y[:, 0]) + mse(value**2 * x, y[:, 1])).item(), rel=1e-15)
    assert a.grad.item() == pytest.approx(expected.item(), rel=1e-12)
    one = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    forecast.unrolled(mse, 1)(lambda window: one * window, x, y).backward()  # the first target only
    assert one.grad.item() == pytest.approx((2 * ((value * x - y[:, 0]) * x).mean()).item(), rel=1e-12)


@pytest.mark.parametrize("policy", [Precision("full"), Precision("mixed", "bfloat16")])
def test_recomputing_the_unrolled_steps_gives_the_same_gradients(policy):
    torch.manual_seed(0)
    model = FNO(C, C, (3, 3), hidden_channels=6, n_layers=2, precision=policy)
    x, y = torch.randn(2, C, 8, 8), torch.randn(2, 3, C, 8, 8)
    mse = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        forecast.unrolled(mse, 3, recompute=recompute)(model, x, y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_a_float64_rollout_is_repeated_single_calls():
    torch.manual_seed(0)
    model = FNO(2 * C, C, (3, 3), hidden_channels=6, n_layers=2).double().eval()
    window = torch.randn(2, 2 * C, 8, 8, dtype=torch.float64)
    rolled = forecast.rollout(model, window, 3)
    state, expected = window, []
    with torch.no_grad():
        for _ in range(3):
            expected.append(model(state))
            state = torch.cat([state[:, C:], expected[-1]], 1)
    assert rolled.shape == (2, 3, C, 8, 8)
    assert torch.equal(rolled, torch.stack(expected, 1))


def test_unroll_stages_follow_the_epochs():
    assert forecast.unroll_stages("2") == ((1.0, 2),)
    assert [forecast.unrolled_at("1:0.5,2:0.25,4:0.25", e, 8) for e in range(8)] == [1, 1, 1, 1, 2, 2, 4, 4]
    assert forecast.most_unrolled("1:0.5,4:0.5") == 4
    with pytest.raises(ValueError, match="must sum to 1"):
        forecast.unroll_stages("1:0.5,2:0.6")
    with pytest.raises(ValueError, match="write K or stages"):
        forecast.unroll_stages("two")


def test_the_gap_bound_is_the_sum_of_the_growth_factors():
    assert forecast.gap_bound(0.1, 1.0, 3) == pytest.approx([0.1, 0.2, 0.3])
    assert forecast.gap_bound(0.1, 0.5, 3) == pytest.approx([0.1, 0.15, 0.175])
    assert forecast.gap_bound(0.1, 2.0, 3) == pytest.approx([0.1, 0.3, 0.7])


@pytest.fixture(scope="module")
def burgers_trajectories(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectories")
    generate("burgers", root / "b.h5", n=24, resolution=32, seed=0, steps=6, interval=0.1, progress=False)
    return root / "b.h5"


def test_generated_trajectories_record_their_times(burgers_trajectories):
    with h5py.File(burgers_trajectories) as f:
        assert f["u"].shape == (24, 6, 1, 32) and f.attrs["layout"] == "trajectories"
        assert f.attrs["interval"] == 0.1 and np.allclose(f["t"][:], 0.1 * np.arange(6))
    pairs_x = h5py.File(generate("burgers", burgers_trajectories.with_name("p.h5"), n=2, resolution=32, seed=0,
                                 time=0.1, progress=False)[0])["y"][:]
    with h5py.File(burgers_trajectories) as f:  # one step of a trajectory is the pair of the same flow
        assert np.allclose(f["u"][:2, 1], pairs_x, atol=1e-6)
    with pytest.raises(ValueError, match="darcy is not written as trajectories"):
        generate("darcy", burgers_trajectories.with_name("d.h5"), n=2, resolution=16, steps=3)


def _config(data, out, **options):
    values = dict(model="fno", data_train=str(data), n_modes=[8], hidden_channels=8, n_layers=2, epochs=4,
                  batch_size=8, device="cpu", out=str(out), tensorboard=False, spatial_dims=1)
    return RunConfig(**{**values, **options})


def test_resume_in_the_middle_of_an_unroll_stage_is_exact(burgers_trajectories, tmp_path, monkeypatch):
    stages = "1:0.25,2:0.75"  # epoch 1 single steps, then 2 unrolled
    whole = train(_config(burgers_trajectories, tmp_path / "whole", unroll=stages, history=2), log=quiet)
    interrupted(_config(burgers_trajectories, tmp_path / "parts", unroll=stages, history=2), 2, monkeypatch)
    resumed = train(RunConfig(device="cpu"), resume=str(tmp_path / "parts"), log=quiet)
    assert resumed["test"] == whole["test"]
    saved = json.loads((tmp_path / "parts" / "config.json").read_text())
    assert (saved["unroll"], saved["history"]) == (stages, 2)


def test_evaluate_and_bounds_roll_out_a_trained_model(burgers_trajectories, tmp_path, capsys):
    train(_config(burgers_trajectories, tmp_path / "run", unroll="2", epochs=2), log=quiet)
    assert (tmp_path / "run" / "rollout_b.png").stat().st_size > 0  # frames of a held-out trajectory rolled out
    best = str(tmp_path / "run" / "best.pt")
    assert cli.main(["evaluate", best, "--data", str(burgers_trajectories), "--rollout", "4", "--plot",
                     str(tmp_path / "r.png"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = report["rollout"]["b.h5"]
    assert result["lead_time"] == [1, 2, 3, 4] and result["trajectories"] == 24 and len(result["l2"]) == 4
    assert set(result["spectra"]) == {"1", "2", "4"} and (tmp_path / "r.png").stat().st_size > 0
    assert cli.main(["bounds", str(burgers_trajectories), "--checkpoint", best, "--rollout", "4", "--precisions",
                     "mixed/float16", "half/bfloat16", "--json"]) == 0
    gap = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mixed = gap["policies"]["mixed/float16"]
    assert len(mixed["precision_gap"]) == 4 and mixed["bound_holds"] is True
    assert 0 < mixed["precision_gap"][0] < 30 * 2.0**-11  # one step: rounding, far below a percent
    assert mixed["largest_gap"][0] <= mixed["one_step_gap"] * (1 + 1e-6)  # the first gap is a one-step gap
    assert gap["policies"]["half/bfloat16/no-stabilizer"]["precision_gap"][0] > mixed["precision_gap"][0]
    assert cli.main(["evaluate", best, "--data", str(burgers_trajectories), "--rollout", "9"]) == 2
    assert "roll out at most 5 steps" in capsys.readouterr().err
    assert cli.main(["predict", best, str(burgers_trajectories), "--out", str(tmp_path / "p.h5"), "--rollout", "4",
                     "--json"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["relative_l2"] == pytest.approx(result["relative_l2"], rel=1e-5)  # evaluate's rollout
    with h5py.File(tmp_path / "p.h5") as f:
        assert f["prediction"].shape == f["y"].shape == (24, 4, 1, 32) and f["relative_l2"].shape == (24, 4)
        assert np.allclose(f["error"][:], f["prediction"][:] - f["y"][:])
    assert cli.main(["predict", best, str(burgers_trajectories), "--out", str(tmp_path / "far.h5"), "--rollout",
                     "8"]) == 0  # beyond the truth: predictions only
    with h5py.File(tmp_path / "far.h5") as f:
        assert f["prediction"].shape == (24, 8, 1, 32) and "y" not in f


def test_rollout_on_pairs_is_refused_in_one_line(tmp_path, capsys):
    from reference import smooth_pairs

    x, y = smooth_pairs(24, 16, seed=1)
    torch.save({"x": x, "y": y}, tmp_path / "pairs.pt")
    config = RunConfig(data_train=str(tmp_path / "pairs.pt"), n_modes=[4], hidden_channels=4, n_layers=1,
                       epochs=1, device="cpu", out=str(tmp_path / "run"), tensorboard=False)
    train(config, log=quiet)
    assert cli.main(["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "pairs.pt"),
                     "--rollout", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (a line above may say how many threads are free)
    assert err.startswith("mpno evaluate: error: ") and "pairs.pt holds input-output pairs, and a rollout needs " \
        "trajectories" in err
    assert cli.main(["train", "--data-train", str(tmp_path / "pairs.pt"), "--unroll", "2"]) == 2
    assert "--history, --unroll and --residual apply to trajectories" in capsys.readouterr().err


def test_low_precision_keeps_a_rollout_close_to_full_on_the_same_weights():
    """Rounding only: a float16 rollout of an untrained FNO stays within a few unit roundoffs per step of the
    float32 one, and the float64 bound of the gap holds."""
    torch.manual_seed(0)
    model = FNO(1, 1, (4,), hidden_channels=8, n_layers=2)
    starts = torch.randn(4, 1, 32)
    truths = torch.randn(4, 3, 1, 32)
    report = forecast.precision_over_rollout(model, starts, truths, [Precision("mixed", "float16")], 4)
    row = report["policies"]["mixed/float16"]
    assert all(gap < 50 * 2.0**-11 for gap in row["precision_gap"])
    assert row["bound_holds"] and report["model_error"][0] > 0.5  # an untrained model is far from random truth


def test_a_residual_model_predicts_the_increment_from_the_newest_snapshot(hand_made):
    from mpno.nn.normalized import NormalizedOperator
    from mpno.run import domains

    windows = TrajectoryWindows(hand_made, history=2, unroll=2, spatial_dims=2)
    torch.manual_seed(0)
    model = domains.DOMAINS["grid"].fitted(FNO(2 * C, C, (2, 2), hidden_channels=4, n_layers=1), windows,
                                           residual=True)
    assert torch.allclose(model.outputs.mean, torch.full((C,), 10.0))  # every increment of u is 10
    x = windows[0][0].unsqueeze(0)
    plain = model.outputs.decode(model.operator(model.inputs.encode(x)))
    assert torch.equal(model(x), x[:, C:] + plain)
    rebuilt = NormalizedOperator.from_spec(model.spec())
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.residual and torch.equal(rebuilt(x), model(x))
    assert "residual" not in NormalizedOperator(FNO(C, C, (2, 2), hidden_channels=4, n_layers=1)).spec()
    with pytest.raises(ValueError, match="adds the input's newest 2 channels to the output"):
        NormalizedOperator(FNO(1, C, (2, 2), hidden_channels=4, n_layers=1), residual=True)


def test_a_residual_model_standardises_its_errors_with_the_states_statistics(hand_made):
    from mpno import SFNO
    from mpno.nn.normalized import NormalizedOperator, UnitGaussianNormalizer
    from mpno.nn.spherical import SphericalL2Loss
    from mpno.run import domains

    windows = TrajectoryWindows(hand_made, history=2, spatial_dims=2)
    model = domains.DOMAINS["grid"].fitted(FNO(2 * C, C, (2, 2), hidden_channels=4, n_layers=1), windows,
                                           residual=True)
    state = model.state_normalizer()  # the newest snapshot's slot: u[n, t + 1, c] for t = 0 … 4
    expected = [np.mean([100 * n + 10 * (t + 1) + c for n in range(N) for t in range(T - 2)]) for c in range(C)]
    assert torch.allclose(state.mean, torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(state.scale, model.inputs.scale[C:]) and torch.allclose(model.outputs.mean, torch.full((C,), 10.))
    plain = NormalizedOperator(FNO(C, C, (2, 2), hidden_channels=4, n_layers=1))
    assert plain.state_normalizer() is plain.outputs
    torch.manual_seed(0)
    inputs = UnitGaussianNormalizer(3)
    inputs.mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    inputs.scale.copy_(torch.tensor([1.0, 10.0, 0.1]))
    sphere = NormalizedOperator(SFNO(3, 3, (4, 4), hidden_channels=4, n_layers=1), inputs, residual=True)
    loss, _ = domains.of("sfno").losses(RunConfig(model="sfno"), sphere)
    prediction, truth = torch.randn(2, 3, 8, 16), torch.randn(2, 3, 8, 16)
    assert loss(prediction, truth) == SphericalL2Loss("equiangular", normalizer=inputs)(prediction, truth)
    assert loss(prediction, truth) != SphericalL2Loss("equiangular", normalizer=sphere.outputs)(prediction, truth)


def test_residual_prediction_is_the_default_on_trajectories_only(hand_made, burgers_trajectories, tmp_path):
    from mpno.run import domains

    grid = domains.DOMAINS["grid"]
    pairs = generate("burgers", tmp_path / "pairs.h5", n=2, resolution=16, seed=0, progress=False)[0]
    assert grid.settle(RunConfig(), [str(burgers_trajectories)]) == {"residual": True}  # the file says so
    assert grid.settle(RunConfig(trajectories=True), [str(hand_made)]) == {"residual": True}
    assert grid.settle(RunConfig(), [str(pairs)]) == {"residual": False}
    assert grid.settle(RunConfig(residual=False), [str(burgers_trajectories)]) == {}
    assert domains.of("sfno").settle(RunConfig(model="sfno", trajectories=True), [str(hand_made)]) == {
        "residual": True, "grid": "equiangular"}


@pytest.fixture
def forced(tmp_path):
    """u[n, t + 1] = u[n, t] + f[n], with a static forcing f (one channel) per trajectory."""
    torch.manual_seed(0)
    f = torch.randn(8, 1, 16)
    u = torch.randn(8, 1, 1, 16) + torch.arange(6.0)[None, :, None, None] * f[:, None]
    torch.save({"u": u, "forcing": f}, tmp_path / "forced.pt")
    return tmp_path / "forced.pt", u, f


def test_static_inputs_follow_the_snapshots_and_stay_fixed_through_a_rollout(forced):
    path, u, f = forced
    windows = TrajectoryWindows(path, history=2, unroll=2, spatial_dims=1, static_key="forcing")
    assert windows.shapes == ((3, 16), (1, 16)) and windows.static_channels == 1
    x, y = windows[3 + 1]  # trajectory 1 (3 windows each), second window
    assert torch.equal(x, torch.cat([u[1, 1], u[1, 2], f[1]])) and torch.equal(y, u[1, 3:5])
    step = lambda window: window[:, 1:2] + window[:, 2:3]  # noqa: E731  (newest snapshot + forcing)
    starts, truths = forecast.starts_and_truths(windows, 2, 4, torch.device("cpu"))
    assert torch.allclose(forecast.rollout(step, starts, 4, static=1), truths)
    mse = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
    assert forecast.unrolled(mse, 2, static=1)(step, *[v.unsqueeze(0) for v in windows[0]]).item() < 1e-12
    assert TrajectoryWindows(path, spatial_dims=1, static_key="none").static_channels == 0
    halving = lambda window: 0.5 * window[:, :1] + window[:, 1:2]  # noqa: E731  (u/2 + forcing)
    one_step = TrajectoryWindows(path, spatial_dims=1, static_key="forcing")
    windows = torch.stack([one_step[i][0] for i in range(len(one_step))]).double()
    assert forecast.lipschitz_estimate(halving, windows, 1, static=1) == pytest.approx(0.5)  # the forcing is fixed


def test_a_model_trained_with_static_inputs_rolls_out_with_them(forced, tmp_path, capsys):
    from mpno import load_model

    path, u, f = forced
    train(_config(path, tmp_path / "run", static_key="forcing", residual=True, unroll="2", epochs=2,
                  trajectories=True, n_modes=[4], batch_size=4), log=quiet)
    model = load_model(str(tmp_path / "run" / "best.pt")).double()
    assert model.static_channels == 1 and model.operator.in_channels == 2
    window = torch.cat([u[:, 0], f], 1).double()
    with torch.no_grad():  # the rollout is repeated calls with the forcing appended each time
        first = model(window)
        second = model(torch.cat([first, f.double()], 1))
    rolled = forecast.rollout(model, window, 2, static=1)
    assert torch.allclose(rolled[:, 0], first) and torch.allclose(rolled[:, 1], second)
    torch.save({"u": u}, tmp_path / "unforced.pt")
    assert cli.main(["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "unforced.pt"),
                     "--rollout", "3"]) == 2
    assert "unforced.pt: samples of shape (1, 16) do not fit the model" in capsys.readouterr().err


def test_static_inputs_of_the_wrong_shape_are_refused(tmp_path):
    u = torch.zeros(3, 5, 1, 8)
    for static, message in ((torch.zeros(2, 1, 8), r"must be \(3, S, 8\) or \(S, 8\)"),
                            (torch.zeros(3, 8), "one channel per trajectory"),
                            (torch.full((1, 8), float("nan")), "hold NaN or inf")):
        torch.save({"u": u, "static": static}, tmp_path / "s.pt")
        with pytest.raises(DataError, match=message):
            TrajectoryWindows(tmp_path / "s.pt", spatial_dims=1)


@pytest.mark.slow
def test_a_compiled_unrolled_run_trains_as_the_eager_one(burgers_trajectories, tmp_path):
    runs = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        train(_config(burgers_trajectories, out, unroll="2", epochs=1, precision="full", compile=compiled), log=quiet)
        runs[compiled] = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert max((runs[True][k] - runs[False][k]).abs().max().item() for k in runs[False]) < 1e-4
