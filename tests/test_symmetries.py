"""Symmetries of grid fields and --augment: exact transformation laws on hand-built fields, seeded draws, exact
resume, and bad input refused."""

import dataclasses
import itertools
import json
import math
import re

import h5py
import numpy as np
import pytest
import torch

import mpno
from mpno.data import OperatorDataset, darcy, grf, navier_stokes
from mpno.data.files import declared_channel_types
from mpno.data.symmetries import (Augmentation, ChannelTypes, GridSymmetry, PointAugmentation, draw,
                                  draw_orthogonal, point_representatives, representatives)
from mpno.run import checkpoint, cli, domains
from mpno.run.config import RunConfig
from mpno.run.evaluation import evaluate_checkpoint, symmetry_errors
from mpno.run.experiment import train
from reference import interrupted, quiet, tiny_config


def centres(n: int, dims: int) -> list[torch.Tensor]:
    """Cell centres of an n^dims grid on [-1, 1]^dims (reversing an axis negates its coordinate exactly)."""
    line = -1 + (2 * torch.arange(n, dtype=torch.float64) + 1) / n
    return list(torch.meshgrid(*[line] * dims, indexing="ij"))


def matrix(symmetry: GridSymmetry) -> torch.Tensor:
    """R with x'_k = signs[k] · x_order[k]."""
    dims = len(symmetry.order)
    r = torch.zeros(dims, dims, dtype=torch.float64)
    for k, (j, s) in enumerate(zip(symmetry.order, symmetry.signs)):
        r[k, j] = s
    return r


def every_symmetry(dims: int):
    for order in itertools.permutations(range(dims)):
        for signs in itertools.product((1, -1), repeat=dims):
            yield GridSymmetry(order, signs, (0,) * dims)


def velocity(x0, x1):
    """A smooth 2D vector field with no symmetry of its own, and its vorticity ∂v1/∂x0 − ∂v0/∂x1."""
    v = torch.stack([torch.sin(1.3 * x0 + 0.7 * x1) + x1 ** 2, torch.cos(0.4 * x0 - 1.1 * x1) * x0])
    vorticity = (-0.4 * torch.sin(0.4 * x0 - 1.1 * x1) * x0 + torch.cos(0.4 * x0 - 1.1 * x1)
                 - 0.7 * torch.cos(1.3 * x0 + 0.7 * x1) - 2 * x1)
    return v, vorticity


def test_a_quarter_turn_of_a_vector_field_is_the_analytically_rotated_field():
    x0, x1 = centres(8, 2)
    v, _ = velocity(x0, x1)
    turn = GridSymmetry((1, 0), (-1, 1), (0, 0))  # x' = (-x1, x0): a quarter turn anticlockwise
    assert turn.det == 1
    # v'(x') = R v(R^T x'), R^T x' = (x1', -x0')
    u, _ = velocity(x1, -x0)
    expected = torch.stack([-u[1], u[0]])
    assert torch.allclose(turn.apply(v, ["vector"]), expected, atol=1e-14)


@pytest.mark.parametrize("symmetry", list(every_symmetry(2)), ids=str)
def test_every_square_symmetry_moves_vectors_and_vorticity_as_the_laws_say(symmetry):
    """The transformed velocity is R v(R^T x), and the transformed vorticity (a pseudo-scalar) is the vorticity
    of the transformed velocity, computed in closed form: det R · ω(R^T x)."""
    x0, x1 = centres(6, 2)
    r = matrix(symmetry)
    back = [r[0, i] * x0 + r[1, i] * x1 for i in range(2)]  # R^T x
    v, vorticity = velocity(x0, x1)
    u, w = velocity(*back)
    fields = torch.cat([v, vorticity[None], x0[None] ** 2])  # vector, pseudo-scalar, scalar
    moved = symmetry.apply(fields, ["vector", "pseudoscalar", "scalar"])
    assert torch.allclose(moved[:2], torch.einsum("ij,j...->i...", r, u), atol=1e-14)
    assert torch.allclose(moved[2], symmetry.det * w, atol=1e-14)
    assert torch.allclose(moved[3], back[0] ** 2, atol=1e-14)


@pytest.mark.parametrize("symmetry", list(every_symmetry(3)), ids=str)
def test_the_curl_of_a_transformed_3d_field_is_a_pseudovector(symmetry):
    """For v = A x, curl v = c; the transformed field R A R^T x has curl det R · R c: what a pseudo-vector
    channel does."""
    a = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def curl(b):
        return torch.stack([b[2, 1] - b[1, 2], b[0, 2] - b[2, 0], b[1, 0] - b[0, 1]])

    r = matrix(symmetry)
    assert symmetry.det == round(torch.linalg.det(r).item())
    field = curl(a)[:, None, None, None].expand(3, 4, 4, 4)
    moved = symmetry.apply(field, ["pseudovector"])
    assert torch.allclose(moved, curl(r @ a @ r.T)[:, None, None, None].expand(3, 4, 4, 4), atol=1e-14)


@pytest.mark.parametrize("symmetry", list(every_symmetry(2)), ids=str)
def test_flips_and_quarter_turns_of_darcy_data_are_darcy_data(symmetry):
    """The square's symmetries map Darcy solutions to Darcy solutions: solving for the moved coefficient (moved
    on all (n+1)² nodes, about the centre) gives the moved solution. mpno's files store the nodes j/n, j < n
    (the boundary at j = 0), where the same move is a reflection about the first point: exact for the
    solution; the coefficient's boundary nodes j = 0 move to j = n, which the files do not hold."""
    n = 12
    a = np.where(np.random.default_rng(0).standard_normal((n + 1, n + 1)) > 0, 12.0, 3.0)
    u = torch.tensor(darcy.solve(a, 1.0))
    moved_a = symmetry.apply(torch.tensor(a)[None], ["scalar"])[0]
    solved = torch.tensor(darcy.solve(moved_a.numpy(), 1.0))
    on_files = GridSymmetry(symmetry.order, symmetry.signs, symmetry.shifts, about_first_point=True)
    assert torch.allclose(on_files.apply(u[None, :n, :n], ["scalar"])[0], solved[:n, :n], rtol=0, atol=1e-12)
    interior = (slice(1, n), slice(1, n))
    assert torch.equal(on_files.apply(torch.tensor(a)[None, :n, :n], ["scalar"])[0][interior], moved_a[interior])


@pytest.mark.parametrize("symmetry", list(every_symmetry(2)), ids=str)
def test_shifts_flips_and_quarter_turns_of_decaying_flow_on_the_torus_are_decaying_flow(symmetry):
    """Unforced Navier–Stokes on the torus: solving for the moved initial vorticity (a pseudoscalar: its sign
    flips under a reflection) gives the moved solution; with the standard forcing it does not."""
    moved = GridSymmetry(symmetry.order, symmetry.signs, (3, 4), about_first_point=True)
    w0 = torch.stack([grf.periodic(16, 2, 2.5, 7.0, 7.0**1.5, grf.sample_generator(0, i)) for i in range(2)])
    w = navier_stokes.solve(w0, 1e-3, 0.5, 0.01)[:, 0]
    solved = navier_stokes.solve(moved.apply(w0[:, None], ["pseudoscalar"])[:, 0], 1e-3, 0.5, 0.01)[:, 0]
    expected = moved.apply(w[:, None], ["pseudoscalar"])[:, 0]
    assert torch.allclose(solved, expected, rtol=0, atol=1e-12 * w.abs().max())
    force = navier_stokes.forcing(16)
    forced = navier_stokes.solve(moved.apply(w0[:, None], ["pseudoscalar"])[:, 0], 1e-3, 0.5, 0.01, force=force)
    unmoved = moved.apply(navier_stokes.solve(w0, 1e-3, 0.5, 0.01, force=force), ["pseudoscalar"])[:, 0]
    assert (forced[:, 0] - unmoved).abs().max() > 1e-3 * w.abs().max()


def test_a_reflection_about_the_first_point_is_x_to_minus_x_on_a_periodic_grid():
    n = 10
    x = torch.arange(n, dtype=torch.float64) / n
    field = (torch.sin(2 * math.pi * x) + 0.3 * torch.cos(4 * math.pi * x) + x * (1 - x))[None, :, None].expand(1, n, 3)
    moved = GridSymmetry((0, 1), (-1, 1), (0, 0), about_first_point=True).apply(field, ["scalar"])
    back = (-x) % 1
    assert torch.allclose(moved[0, :, 0], torch.sin(2 * math.pi * back) + 0.3 * torch.cos(4 * math.pi * back)
                          + back * (1 - back), atol=1e-14)


def test_a_shift_rolls_a_periodic_field():
    n = 16
    x = torch.arange(n, dtype=torch.float64) / n
    field = torch.sin(2 * math.pi * x)[None, :, None].expand(1, n, 4)
    moved = GridSymmetry((0, 1), (1, 1), (3, 0)).apply(field, ["scalar"])
    assert torch.allclose(moved[0, :, 0], torch.sin(2 * math.pi * (x - 3 / n)), atol=1e-14)


def test_draws_cover_the_group_asked_for_and_repeat_with_the_seed():
    def elements(kinds, count=400, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return [draw(kinds, (8, 8), generator) for _ in range(count)]

    rotations = elements(["rotate"])
    assert {s.det for s in rotations} == {1} and len({(s.order, s.signs) for s in rotations}) == 4
    assert len({(s.order, s.signs) for s in elements(["rotate", "flip"])}) == 8
    flips = elements(["flip"])
    assert {s.order for s in flips} == {(0, 1)} and len({s.signs for s in flips}) == 4
    shifts = elements(["shift"])
    assert {s.signs for s in shifts} == {(1, 1)} and {v for s in shifts for v in s.shifts} == set(range(8))
    assert elements(["rotate", "shift"], seed=3) == elements(["rotate", "shift"], seed=3)


def test_an_augmented_batch_moves_input_and_target_alike():
    """An equivariant target (twice the input vector, and its squared length) stays that function of the input
    after augmentation: input and target share each sample's symmetry."""
    x = torch.randn(5, 2, 8, 8)
    y = torch.cat([2 * x, x[:, :1] ** 2 + x[:, 1:] ** 2], 1)
    augment = Augmentation(["rotate", "flip", "shift"], ChannelTypes(("vector",), ("vector", "scalar")))
    ax, ay = augment(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(ay[:, :2], 2 * ax)
    assert torch.equal(ay[:, 2:], ax[:, :1] ** 2 + ax[:, 1:] ** 2)
    assert not torch.equal(ax, x)


def test_resume_with_augmentation_equals_an_uninterrupted_run(files, tmp_path, monkeypatch):
    options = dict(augment=["shift", "flip", "rotate"], epochs=3)
    whole = train(tiny_config(files, tmp_path / "whole", **options), log=quiet)
    interrupted(tiny_config(files, tmp_path / "parts", **options), 1, monkeypatch)
    resumed = train(RunConfig(device="cpu"), resume=str(tmp_path / "parts"), log=quiet)
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "parts" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]
    plain = train(tiny_config(files, tmp_path / "plain", epochs=3), log=quiet)
    assert plain["test"] != whole["test"]  # the augmentation changed what was trained on


@pytest.fixture
def two_channel_files(tmp_path):
    torch.save({"x": torch.randn(8, 2, 16, 16), "y": torch.randn(8, 1, 16, 16)}, tmp_path / "square.pt")
    torch.save({"x": torch.randn(8, 1, 16, 12), "y": torch.randn(8, 1, 16, 12)}, tmp_path / "oblong.pt")
    return tmp_path


@pytest.mark.parametrize("data, options, message", [
    ("square.pt", ["--augment", "shift", "--no-periodic", "--channel-types", "v/s"], "--augment shift"),
    ("oblong.pt", ["--augment", "flip,rotate"], "--augment rotate .* 16×12"),
    ("square.pt", ["--augment", "flip", "--channel-types", "vector/vector"], "--channel-types 'vector/vector'"),
    ("square.pt", ["--augment", "flip", "--channel-types", "s,x/s"], "'x' is not a channel type"),
    ("square.pt", ["--augment", "rotate"], "declare them: --channel-types vector"),
    ("square.pt", ["--augment", "mirror"], "--augment mirror"),
])
def test_bad_augmentation_is_refused_with_the_option_named(two_channel_files, capsys, data, options, message):
    argv = ["train", "--data-train", str(two_channel_files / data), "--epochs", "1", "--n-modes", "4",
            "--device", "cpu", "--out", str(two_channel_files / "run"), *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (a line before it may advise on threads)
    assert err.startswith("mpno") and re.search(message, err), err
    assert not (two_channel_files / "run" / "checkpoint.pt").exists()


def test_generated_files_say_how_their_fields_transform_and_augmentation_reads_it(tmp_path):
    ns, coarse = mpno.data.generate("navier-stokes", tmp_path / "ns.h5", n=2, resolution=16, time=0.05,
                                    snapshots=2, coarsen=[8], progress=False)
    (burgers,) = mpno.data.generate("burgers", tmp_path / "burgers.h5", n=2, resolution=32, time=0.05,
                                    progress=False)
    (darcy_file,) = mpno.data.generate("darcy", tmp_path / "darcy.h5", n=2, resolution=16, progress=False)
    vorticity = {"x": "pseudoscalar", "y": "pseudoscalar,pseudoscalar"}  # one per snapshot
    assert declared_channel_types(ns) == declared_channel_types(coarse) == vorticity
    assert declared_channel_types(burgers) == {"x": "vector", "y": "vector"}  # x → −x takes u to −u
    assert declared_channel_types(darcy_file) == {"x": "scalar", "y": "scalar"}
    domain = domains.of("fno")
    config = RunConfig(data_train=str(ns), augment=["flip"])
    augmentation = domain.augmentation(config, OperatorDataset(ns))
    assert augmentation.types == ChannelTypes(("pseudoscalar",), ("pseudoscalar", "pseudoscalar"))
    assert "channel types from ns.h5" in augmentation.note
    x, y = OperatorDataset(ns)[0]
    flip = GridSymmetry((0, 1), (-1, 1), (0, 0), about_first_point=True)
    assert torch.equal(flip.apply(x, augmentation.types.inputs), -flip.apply(x, ("scalar",)))  # the sign flips
    declared = domain.augmentation(dataclasses.replace(config, channel_types="s/s,s"), OperatorDataset(ns))
    assert declared.types == ChannelTypes(("scalar",), ("scalar", "scalar")) and declared.note is None


def test_channel_type_attributes_that_do_not_fit_the_channels_are_refused_naming_the_file(tmp_path, capsys):
    for name, output_type in (("velocity.h5", "vector"), ("fits.h5", "scalar")):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("x", data=np.ones((4, 2, 8, 8))).attrs["channel_type"] = "vector"
            f.create_dataset("y", data=np.zeros((4, 1, 8, 8))).attrs["channel_type"] = output_type
    config = RunConfig(data_train=str(tmp_path / "fits.h5"), augment=["rotate"])
    _, types = domains.of("fno").symmetries(config, OperatorDataset(tmp_path / "fits.h5"), config.augment)
    assert types == ChannelTypes(("vector",), ("scalar",))  # declared: two channels on a 2D grid may turn
    argv = ["train", "--data-train", str(tmp_path / "velocity.h5"), "--epochs", "1", "--n-modes", "4",
            "--device", "cpu", "--out", str(tmp_path / "run"), "--augment", "rotate"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "velocity.h5: the channel_type attributes of its arrays (vector/vector)" in err
    assert "--channel-types" in err, err


def test_a_rotated_potential_flow_sample_is_the_closed_form_solution_for_the_turned_body_and_stream():
    """Points, normals and stream turned (or mirrored) together about the cloud's centroid, Cp kept: the
    points lie on the turned ellipsoid, the normals are its normals, and Cp is Lamb's solution for it."""
    from mpno.data import potential_flow
    from mpno.data.pointclouds import PointClouds

    s = potential_flow.sample(seed=3, index=0, points=200, min_axis=0.5, max_axis=2.0)
    points, normals, flow = (torch.tensor(s[k]) for k in ("points", "normals", "flow"))
    cloud = PointClouds(points, torch.cat([normals, flow.expand(len(points), 3)], 1), (len(points),))
    cp = torch.tensor(s["cp"])[:, None]
    generator = torch.Generator().manual_seed(0)
    dets = set()
    for _ in range(6):
        symmetry = draw_orthogonal(("rotate", "reflect"), 3, generator)
        q = symmetry.matrix
        dets.add(symmetry.det)
        moved = symmetry.apply(cloud, ("vector", "vector"))
        centre = points.mean(0)
        body = q @ torch.tensor(s["rotation"])  # the turned body's axes (a mirrored frame where det q = -1)
        x_body = (moved.points - (centre - q @ centre)) @ body
        assert torch.allclose((x_body.square() / torch.tensor(s["semi_axes"]).square()).sum(1),
                              torch.ones(len(points), dtype=torch.float64), atol=1e-12)
        n_body = moved.features[:, :3] @ body
        gradient = x_body / torch.tensor(s["semi_axes"]).square()
        assert torch.allclose(n_body, gradient / gradient.norm(dim=1, keepdim=True), atol=1e-12)
        stream = moved.features[0, 3:]
        assert torch.allclose(moved.features[:, 3:], stream.expand(len(points), 3))
        exact = potential_flow.pressure_coefficient(n_body.numpy(), s["semi_axes"], (body.T @ stream).numpy())
        assert np.allclose(symmetry.apply(cp, ("scalar",))[:, 0].numpy(), exact, atol=1e-12)
        assert moved.neighbors is None
    assert dets == {1, -1}


def test_orthogonal_draws_cover_their_groups():
    generator = torch.Generator().manual_seed(0)
    for kinds, dets in ((("rotate",), {1}), (("rotate", "reflect"), {1, -1}), (("reflect",), {1, -1})):
        draws = [draw_orthogonal(kinds, 3, generator) for _ in range(400)]
        for g in draws:
            assert torch.allclose(g.matrix @ g.matrix.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert {g.det for g in draws} == dets
        if "rotate" in kinds:  # Haar measure: every entry averages to zero
            assert torch.stack([g.matrix for g in draws]).mean(0).abs().max() < 0.1
        else:  # the identity or a reflection through a plane
            assert all(torch.allclose(g.matrix, g.matrix.T) for g in draws)


def test_point_augmentation_moves_each_cloud_alike_with_its_values():
    from mpno.data.pointclouds import PointClouds, PointValues

    torch.manual_seed(0)
    sizes = (5, 7)
    features = torch.randn(12, 4)  # a vector, then a pseudoscalar
    x = PointClouds(torch.randn(12, 3), features, sizes)
    y = PointValues(features[:, :3].clone(), sizes)  # the same vector as output
    augment = PointAugmentation(["rotate", "reflect"], ChannelTypes(("vector", "pseudoscalar"), ("vector",)))
    moved_x, moved_y = augment(x, y, torch.Generator().manual_seed(4))
    again_x, _ = augment(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(moved_x.points, again_x.points) and moved_x.sizes == sizes and moved_x.neighbors is None
    assert torch.equal(moved_y.values, moved_x.features[:, :3])  # input and output turned by the same map
    generator = torch.Generator().manual_seed(4)
    for a, b, part in ((0, 5, slice(0, 5)), (5, 12, slice(5, 12))):
        g = draw_orthogonal(["rotate", "reflect"], 3, generator)
        points = x.points[part].double()
        assert torch.allclose(moved_x.points[part].double(),
                              points.mean(0) + (points - points.mean(0)) @ g.matrix.T, atol=1e-6)
        assert torch.allclose(moved_x.features[part, 3], g.det * features[part, 3])
        assert torch.allclose(moved_x.points[part].mean(0), x.points[part].mean(0), atol=1e-6)


class _PointScalar(torch.nn.Module):
    """A per-point model of a cloud's features: the first component (not invariant) or the norm of the first
    three (invariant)."""

    def __init__(self, invariant: bool):
        super().__init__()
        self.invariant = invariant

    def forward(self, x):
        vector = x.features[:, :3]
        return vector.norm(dim=1, keepdim=True) if self.invariant else vector[:, :1]


class _Clouds:
    def __init__(self, x):
        self.x = x

    def iterate(self):
        yield self.x, None, len(self.x)


def test_the_point_symmetry_check_has_closed_forms():
    from mpno.data.pointclouds import PointClouds

    torch.manual_seed(0)
    x = PointClouds(torch.randn(30, 3).double(), torch.randn(30, 3).double(), (10, 20))
    types = ChannelTypes(("vector",), ("scalar",))
    chosen = point_representatives(["rotate", "reflect"], 3)
    assert len(chosen) == 6 and all(abs(g.det) == 1 for g in chosen.values())
    assert all(e < 1e-14 for e in symmetry_errors(_PointScalar(True), _Clouds(x), chosen, types).values())
    errors = symmetry_errors(_PointScalar(False), _Clouds(x), chosen, types)
    assert errors["reflection of axis 0"] == pytest.approx(2.0)  # f_x → −f_x against f_x
    assert errors["reflection of axis 1"] == 0.0
    turn = chosen["turn by 72° in the plane of axes 0,1"].matrix
    expected = [((x.features[a:b] @ turn.T)[:, 0] - x.features[a:b, 0]).norm() / x.features[a:b, 0].norm()
                for a, b in ((0, 10), (10, 30))]
    assert errors["turn by 72° in the plane of axes 0,1"] == pytest.approx(float(sum(expected) / 2))


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    from mpno.data import generate

    root = tmp_path_factory.mktemp("clouds")
    generate("potential-flow", root / "train.h5", n=12, points=64, seed=0, progress=False)
    generate("potential-flow", root / "test.h5", n=4, points=64, seed=1, progress=False)
    with h5py.File(root / "train.h5") as f:  # the same clouds without channel types
        np.savez(root / "untyped.npz", **{key: f[key][()] for key in ("points", "normals", "flow", "cp")})
    return root


def _gino_config(clouds, out, **overrides) -> RunConfig:
    values = dict(model="gino", data_train=str(clouds / "train.h5"), data_test=[str(clouds / "test.h5")],
                  n_modes=[4], latent_grid=6, radius=0.5, hidden_channels=4, n_layers=1, epochs=3, batch_size=4,
                  device="cpu", out=str(out), tensorboard=False)
    values.update(overrides)
    return RunConfig(**values)


def test_a_gino_trains_and_resumes_exactly_on_rotated_clouds(clouds, tmp_path, monkeypatch):
    lines = []
    whole = train(_gino_config(clouds, tmp_path / "whole", augment=["rotate,reflect"]), log=lines.append)
    assert any("channel types from train.h5: inputs vector,vector, outputs scalar" in line for line in lines)
    interrupted(_gino_config(clouds, tmp_path / "parts", augment=["rotate,reflect"]), 1, monkeypatch)
    resumed = train(RunConfig(device="cpu"), resume=str(tmp_path / "parts"), log=quiet)
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "parts" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed["test"] == whole["test"]
    plain = train(_gino_config(clouds, tmp_path / "plain"), log=quiet)
    assert plain["test"] != whole["test"]
    report = evaluate_checkpoint(str(tmp_path / "whole" / "checkpoint.pt"), [str(clouds / "test.h5")],
                                 device="cpu", symmetry_check=[])
    errors = report["symmetry"]["test.h5"]
    assert set(errors) == set(point_representatives(["rotate", "reflect"], 3))
    assert all(0 < e < 10 for e in errors.values())


@pytest.mark.parametrize("data, options, message", [
    ("train.h5", ["--augment", "shift"], r"--augment shift: not an augmentation of point clouds; use rotate, reflect"),
    ("untyped.npz", ["--augment", "rotate"], r"the arrays normals, flow, cp of .*untyped.npz do not say how they "
                                              r"transform .* --channel-types"),
    ("train.h5", ["--augment", "rotate", "--channel-types", "vector/scalar"], r"--channel-types 'vector/scalar': the "
                                                                             r"input types fill 3 channels"),
])
def test_bad_point_augmentation_is_refused_with_the_option_named(clouds, tmp_path, capsys, data, options, message):
    argv = ["train", "--model", "gino", "--data-train", str(clouds / data), "--epochs", "1", "--n-modes", "4",
            "--latent-grid", "6", "--radius", "0.5", "--device", "cpu", "--out", str(tmp_path / "run"), *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mpno") and re.search(message, err), err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_on_the_sphere_rotations_about_the_polar_axis_are_the_symmetry():
    """An SFNO without positional embedding commutes with rotations about the polar axis by whole longitude
    steps, to rounding (float64); only longitude is shifted."""
    torch.manual_seed(0)
    model = mpno.SFNO(1, 1, (6, 6), hidden_channels=4, n_layers=2, positional_embedding=False).double()
    x = torch.randn(2, 1, 8, 16, dtype=torch.float64)
    chosen = representatives(["shift"], (8, 16), shift_axes=(1,))
    assert list(chosen) == ["shift axis 1 by 5"]
    errors = symmetry_errors(model, _Batches(x), chosen, ChannelTypes(("scalar",), ("scalar",)))
    assert errors["shift axis 1 by 5"] < 1e-12
    draws = [draw(["shift"], (8, 16), torch.Generator().manual_seed(1), shift_axes=(1,)) for _ in range(20)]
    assert {s.shifts[0] for s in draws} == {0}


@pytest.mark.parametrize("options, message", [
    (["--augment", "flip"], "on the sphere only shift applies"),
    (["--augment", "shift", "--channel-types", "v"], "drop it"),
])
def test_the_sphere_refuses_what_does_not_map_its_grid_onto_itself(tmp_path, capsys, options, message):
    torch.save({"x": torch.randn(8, 2, 8, 16), "y": torch.randn(8, 2, 8, 16)}, tmp_path / "sphere.pt")
    argv = ["train", "--model", "sfno", "--data-train", str(tmp_path / "sphere.pt"), "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path / "run"), *options]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


class _Ramp(torch.nn.Module):
    """Multiplies the fields by x0 + 2: it commutes with shifts and flips of axis 1 only."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        ramp = 2 + torch.linspace(-1, 1, x.shape[2], dtype=x.dtype)[:, None]
        return self.scale * ramp * x


class _Batches:
    def __init__(self, x):
        self.x = x

    def iterate(self):
        yield self.x, self.x, len(self.x)


def test_the_symmetry_check_measures_how_far_a_model_is_from_commuting():
    """Against closed forms: a periodic FNO without positional embedding commutes with shifts to rounding
    (float64) and not with flips; multiplying by a ramp in x0 commutes with flipping x1, not x0, and the error
    of flipping x0 is ‖(r − r∘F) x∘F‖ / ‖(r∘F) x∘F‖ per sample."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    types = ChannelTypes(("scalar",), ("scalar",))
    fno = mpno.FNO(1, 1, (4, 4), hidden_channels=6, n_layers=2, positional_embedding=False).double()
    errors = symmetry_errors(fno, _Batches(x), representatives(["shift", "flip"], (12, 12)), types)
    assert errors["shift axis 0 by 4"] < 1e-13 and errors["shift axis 1 by 4"] < 1e-13
    assert errors["flip axis 0"] > 1e-3
    errors = symmetry_errors(_Ramp().double(), _Batches(x), representatives(["flip"], (12, 12)), types)
    assert errors["flip axis 1"] == 0
    ramp = 2 + torch.linspace(-1, 1, 12, dtype=torch.float64)[:, None]
    flipped = x.flip(2)
    expected = ((ramp - ramp.flip(0)) * flipped).flatten(1).norm(dim=1) / (ramp.flip(0) * flipped).flatten(1).norm(dim=1)
    assert errors["flip axis 0"] == pytest.approx(expected.mean().item(), rel=1e-12)


def test_evaluate_checks_the_symmetries_a_run_trained_with(files, tmp_path, capsys):
    train(tiny_config(files, tmp_path / "aug", epochs=1, augment=["flip,rotate"]), log=quiet)
    report = evaluate_checkpoint(str(tmp_path / "aug" / "best.pt"), [str(files / "test16.pt")], device="cpu",
                                 symmetry_check=[], log=quiet)
    assert list(report["symmetry"]["test16.pt"]) == ["flip axis 0", "flip axis 1", "quarter turn of axes 0,1"]
    assert all(0 < value < 10 for value in report["symmetry"]["test16.pt"].values())
    train(tiny_config(files, tmp_path / "plain", epochs=1), log=quiet)
    checked = tmp_path / "plain" / "best.pt"
    assert cli.main(["evaluate", str(checked), "--data-test", str(files / "test16.pt"), "--symmetry-check"]) == 2
    assert "was trained without --augment; name the symmetries" in capsys.readouterr().err
    assert cli.main(["evaluate", str(checked), "--data-test", str(files / "test16.pt"), "--symmetry-check", "shift",
                     "--json"]) == 0
    out = capsys.readouterr().out
    assert "how far the model is from commuting" in out
    assert set(json.loads(out.strip().splitlines()[-1])["symmetry"]["test16.pt"]) == {"shift axis 0 by 5",
                                                                                    "shift axis 1 by 5"}


@pytest.mark.parametrize("options, message", [
    (["--channel-types", "s"], "add --symmetry-check"),
    (["--symmetry-check", "--rollout", "3"], "--symmetry-check applies to pairs"),
])
def test_evaluate_refuses_symmetry_options_that_do_not_go_together(tmp_path, capsys, options, message):
    assert cli.main(["evaluate", str(tmp_path / "best.pt"), "--data-test", str(tmp_path / "x.pt"), *options]) == 2
    assert message in capsys.readouterr().err
