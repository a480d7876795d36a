"""GINO on point clouds: exact potential-flow data, the GNO kernel integral against a dense float64
reference, chunking, half precision within its derived tolerance, gradients, batches, errors, memory."""

import copy
import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch
from scipy.integrate import quad

import mpno
from mpno.data import generate, potential_flow
from mpno.data.pointclouds import PointCloudBatches, PointCloudDataset, PointClouds
from mpno.nn.normalized import NormalizedOperator, UnitGaussianNormalizer
from mpno.nn.point_losses import PointL2Loss
from mpno.ops.neighbors import nearest_distance, radius_search
from mpno.run.checkpoint import CheckpointError, model_from_state
from mpno.run.profiling import operator_costs, saved_tensor_bytes
from mpno.run.trainer import Trainer
from reference import quiet, relative_error, tolerance


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny kernels: one thread avoids OpenMP synchronisation costs on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the exact solution ---------------------------------------------------------------------------------

def test_sphere_pressure_is_exact():
    radius = 0.7
    s = potential_flow.sample(seed=3, index=5, points=400, min_axis=radius, max_axis=radius)
    assert np.allclose(np.linalg.norm(s["points"], axis=1), radius, atol=1e-12)
    cos = s["normals"] @ s["flow"]
    assert np.abs(s["cp"] - (1 - 9 / 4 * (1 - cos**2))).max() < 1e-12
    assert s["cp"].min() > -1.25 - 1e-12 and s["cp"].max() <= 1 + 1e-12


@pytest.mark.parametrize("axes", [(1.0, 1.0, 1.0), (1.0, 0.5, 0.3), (0.3, 0.9, 0.6), (2.0, 0.1, 0.1)])
def test_shape_constants_match_quadrature_and_sum_to_two(axes):
    a, b, c = axes
    delta = lambda lam: math.sqrt((a * a + lam) * (b * b + lam) * (c * c + lam))  # noqa: E731
    by_quadrature = [a * b * c * quad(lambda lam, s=s: 1 / ((s * s + lam) * delta(lam)), 0, math.inf,
                                      epsabs=0, epsrel=1e-12, limit=200)[0] for s in axes]
    alphas = potential_flow.shape_constants(np.array(axes))
    assert np.allclose(alphas, by_quadrature, rtol=1e-9, atol=0)
    assert abs(alphas.sum() - 2) < 1e-12


def test_prolate_spheroid_matches_lambs_closed_form():
    """Lamb §115: a prolate spheroid (a > b = c, eccentricity e) has
    α_a = 2(1 − e²)/e³ · (½ log((1 + e)/(1 − e)) − e)."""
    a, b = 1.0, 0.4
    e = math.sqrt(1 - b * b / (a * a))
    alpha = 2 * (1 - e * e) / e**3 * (0.5 * math.log((1 + e) / (1 - e)) - e)
    alphas = potential_flow.shape_constants(np.array([a, b, b]))
    assert np.allclose(alphas, [alpha, 1 - alpha / 2, 1 - alpha / 2], rtol=1e-12)


def test_ellipsoid_surface_geometry_and_stagnation():
    s = potential_flow.sample(seed=0, index=2, points=300, min_axis=0.3, max_axis=1.0)
    rotation, axes = s["rotation"], s["semi_axes"]
    assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rotation), 1)
    body = s["points"] @ rotation  # x_body = Rᵀ x_world
    assert np.allclose((body**2 / axes**2).sum(1), 1, atol=1e-12)
    gradient = body / axes**2
    normals = (gradient / np.linalg.norm(gradient, axis=1, keepdims=True)) @ rotation.T
    assert np.allclose(s["normals"], normals, atol=1e-12)
    # a stream along a body axis stops at the nose (Cp = 1) and is fastest on the rim: Cp = 1 − C²
    nose = np.array([[1.0, 0.0, 0.0]])
    rim = np.array([[0.0, 1.0, 0.0]])
    speed = 2 / (2 - potential_flow.shape_constants(axes)[0])
    assert np.isclose(potential_flow.pressure_coefficient(nose, axes, np.array([1.0, 0, 0]))[0], 1.0)
    assert np.isclose(potential_flow.pressure_coefficient(rim, axes, np.array([1.0, 0, 0]))[0], 1 - speed**2)


def test_samples_are_reproducible_and_written_by_generate(tmp_path):
    first = potential_flow.sample(seed=7, index=3, points=64, min_axis=0.3, max_axis=1.0)
    again = potential_flow.sample(seed=7, index=3, points=64, min_axis=0.3, max_axis=1.0)
    other = potential_flow.sample(seed=8, index=3, points=64, min_axis=0.3, max_axis=1.0)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.allclose(first["semi_axes"], other["semi_axes"])
    (path,) = generate("potential-flow", tmp_path / "pf.h5", n=4, seed=7, points=64)
    with h5py.File(path, "r") as f:
        assert f["points"].shape == (4, 64, 3) and f["rotation"].shape == (4, 3, 3) and f["cp"].shape == (4, 64)
        assert np.allclose(f["cp"][3], first["cp"], atol=1e-6) and np.allclose(f["flow"][3], first["flow"])
    with pytest.raises(FileExistsError):
        generate("potential-flow", path, n=4, seed=7, points=64)
    with pytest.raises(ValueError, match="point clouds"):
        generate("potential-flow", tmp_path / "x.h5", n=2, resolution=32)
    with pytest.raises(ValueError, match="unknown potential-flow parameters"):
        generate("potential-flow", tmp_path / "x.h5", n=2, viscosity=0.1)


# -- neighbourhoods -------------------------------------------------------------------------------------

def test_torch_search_matches_the_kdtree_and_transposes():
    g = torch.Generator().manual_seed(1)
    queries, points = torch.rand(70, 3, generator=g), torch.rand(90, 3, generator=g)
    tree = radius_search(queries, points, 0.3, method="kdtree")
    brute = radius_search(queries, points, 0.3, method="torch", pairs_per_chunk=500)  # 5 queries per chunk
    assert torch.equal(tree.indices, brute.indices) and torch.equal(tree.offsets, brute.offsets)
    distance = torch.cdist(queries.double(), points.double())
    assert torch.equal(tree.counts(), (distance <= 0.3).sum(1))
    back = tree.transpose(len(points))
    assert torch.equal(back.counts(), (distance <= 0.3).sum(0))
    assert torch.equal(back.indices, (distance.T <= 0.3).nonzero()[:, 1])


# -- the GNO kernel integral against a dense float64 reference ------------------------------------------

def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def dense_gno(block, queries, points, features, radius, weights=None):
    """∫ over |y − x| ≤ r of κ(x, y[, f]) ⊙ (W f)(y), summing every pair (float64)."""
    q, p, f = queries.double(), points.double(), features.double()
    w1, b1 = block.kernel.fc1.weight.double(), block.kernel.fc1.bias.double()
    w2, b2 = block.kernel.fc2.weight.double(), block.kernel.fc2.bias.double()
    w = block.transform.weight.double()
    pairs = [(p[None] - q[:, None, :]) / radius]  # the displacement to each source, in radii
    if block.kernel_kind == "nonlinear":
        pairs.append(f[None].expand(len(q), -1, -1))
    z = torch.cat(pairs, -1)
    terms = (_gelu(z @ w1.T + b1) @ w2.T + b2) * (f @ w.T)[None]
    near = (torch.cdist(q, p) <= radius).double()
    if weights is not None:
        return torch.einsum("mn,n,mnc->mc", near, weights.double(), terms)
    return torch.einsum("mn,mnc->mc", near, terms) / near.sum(1, keepdim=True).clamp(min=1)


def _cloud(seed, queries=40, points=60, channels=3):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(queries, 3, generator=g) * 2 - 1
    q[0] = 5.0  # far from every point: an empty neighbourhood
    return q, torch.rand(points, 3, generator=g) * 2 - 1, torch.randn(points, channels, generator=g), \
        torch.rand(points, generator=g) * 0.05


@pytest.mark.parametrize("kernel", ["linear", "nonlinear"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gno_equals_dense_kernel_integral(kernel, weighted):
    q, p, f, w = _cloud(0)
    block = mpno.GNOBlock(3, 5, coord_dim=3, radius=0.6, kernel=kernel, kernel_hidden=16, chunk_size=None).double()
    weights = w.double() if weighted else None
    out = block(q.double(), p.double(), f.double(), weights=weights)
    ref = dense_gno(block, q, p, f, 0.6, weights)
    assert out.dtype == torch.float64
    assert ((out - ref).norm() / ref.norm()).item() < 1e-13
    assert torch.equal(out[0], torch.zeros(5, dtype=torch.float64))  # the documented 0 of an empty neighbourhood


def test_chunked_equals_unchunked_with_gradients():
    q, p, f, w = _cloud(1)
    q, p, f, w = (t.double().requires_grad_() for t in (q, p, f, w))
    whole = mpno.GNOBlock(3, 4, radius=0.7, kernel="nonlinear", kernel_hidden=8, chunk_size=None).double()
    results = []
    for chunk in (None, 64, 7):
        block = copy.deepcopy(whole)
        block.chunk_size = chunk
        out = block(q, p, f, weights=w)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                    [q, p, f, w, *block.parameters()])
        results.append((out, grads))
    assert block.neighborhood(q, p).n_edges > 64 * 3  # several chunks
    for out, grads in results[1:]:
        assert torch.allclose(out, results[0][0], rtol=1e-12, atol=1e-14)
        for g, g0 in zip(grads, results[0][1]):
            assert torch.allclose(g, g0, rtol=1e-10, atol=1e-13)


def test_gradcheck_in_float64():
    q, p, f, w = _cloud(2, queries=6, points=9, channels=2)
    block = mpno.GNOBlock(2, 2, radius=1.0, kernel="nonlinear", kernel_hidden=4, chunk_size=5).double()
    neighborhood = block.neighborhood(q, p)
    inputs = tuple(t.double().requires_grad_() for t in (q, p, f, w))
    assert torch.autograd.gradcheck(lambda *a: block(*a[:3], neighborhood, a[3]), inputs)


#: Roundings of GNOBlock in half: kernel MLP input, fc1 weight, product, bias, sum (5), GELU (1), fc2 weight,
#: product, bias, sum (4); W f: input, weight, product (3); κ ⊙ W f (1); the mean, rounded to half (1).
GNO_HALF_STAGES = 15


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_half_gno_within_derived_tolerance(dtype, seed):
    q, p, f, w = _cloud(seed, queries=80, points=120, channels=4)
    block = mpno.GNOBlock(4, 6, radius=0.5, kernel_hidden=16, chunk_size=500,
                          precision=mpno.Precision("half", dtype=dtype))
    out = block(q, p, f)
    assert out.dtype == getattr(torch, dtype)
    error = relative_error(out, dense_gno(block, q, p, f, 0.5))
    assert error < tolerance(getattr(torch, dtype), GNO_HALF_STAGES), error  # measured: at most 0.4 of it


def test_half_sums_accumulate_in_float32():
    """A neighbourhood of 3000 messages of 30 sums to 90 000, beyond float16's 65 504: the float32
    accumulator holds it and the mean, 30, comes out exact (a float16 running sum would overflow)."""
    block = mpno.GNOBlock(1, 1, radius=0.1, kernel_hidden=2, chunk_size=1000, precision="half")
    with torch.no_grad():
        for layer in (block.kernel.fc1, block.kernel.fc2):
            layer.weight.zero_()
            layer.bias.fill_(1.0)  # κ = 1
        block.transform.weight.fill_(30.0)
    out = block(torch.zeros(1, 3), torch.zeros(3000, 3), torch.ones(3000, 1))
    assert out.dtype == torch.float16 and out.item() == 30.0


# -- GINO -----------------------------------------------------------------------------------------------

def _tiny_gino(operator=mpno.GINO, **options):
    """A small GINO (or another operator between point clouds through a latent grid: ``operator``)."""
    values = dict(n_modes=(4, 4, 4), hidden_channels=6, n_layers=2, latent_grid=6, radius=0.5, kernel_hidden=8,
                  chunk_size=2000)
    values.update(options)
    return operator(6, 1, **values)


def _potential_flow_clouds(sizes, seed=0):
    clouds = []
    for i, size in enumerate(sizes):
        s = potential_flow.sample(seed, i, size, 0.3, 0.9)
        features = np.concatenate([s["normals"], np.broadcast_to(s["flow"], (size, 3))], axis=1)
        clouds.append(PointClouds(torch.tensor(s["points"]), torch.tensor(features), (size,)))
    return clouds


#: The operators between point clouds through a latent grid.
POINT_OPERATORS = [mpno.GINO, mpno.FNOGNO]


@pytest.mark.parametrize("operator", POINT_OPERATORS)
def test_gino_batches_clouds_of_different_sizes(operator):
    model = _tiny_gino(operator).double()
    clouds = _potential_flow_clouds([40, 25, 60])
    batch = PointClouds.cat(clouds)
    out = model(batch)
    assert out.shape == (125, 1) and out.dtype == torch.float64
    for alone, part in zip(clouds, batch.split(out)):
        assert torch.allclose(model(alone), part, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("operator", POINT_OPERATORS)
def test_gino_gradcheck_in_float64(operator):
    model = _tiny_gino(operator, hidden_channels=3, n_layers=1, kernel_hidden=3, latent_grid=4, radius=0.7).double()
    cloud = _potential_flow_clouds([12])[0]
    cloud.neighbors = model.neighborhoods(cloud.points)
    features = cloud.features.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: model(PointClouds(cloud.points, f, cloud.sizes, None, cloud.neighbors)),
                                    (features,))


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="radius"):
        mpno.GNOBlock(2, 2, radius=0.0)
    with pytest.raises(ValueError, match="radius"):
        radius_search(torch.rand(3, 3), torch.rand(4, 3), -1.0)
    with pytest.raises(ValueError, match="half a latent cell"):
        _tiny_gino(radius=0.1)
    points = torch.rand(5, 3)
    points[2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        radius_search(torch.rand(3, 3), points, 0.5)
    model = _tiny_gino()
    cloud = _potential_flow_clouds([20])[0]
    with pytest.raises(ValueError, match="NaN"):
        model(PointClouds(points, torch.rand(5, 6), (5,)))
    stale = PointClouds(cloud.points.float(), cloud.features.float(), (20,),
                        neighbors=_tiny_gino(latent_grid=5).neighborhoods(cloud.points.float()))
    with pytest.raises(ValueError, match="another model"):
        model(stale)
    with pytest.raises(ValueError, match="fit_positions"):
        model.fit_positions([torch.rand(4, 2)])
    with pytest.raises(ValueError, match="features"):
        model(PointClouds(cloud.points.float(), cloud.features[:, :4].float(), (20,)))
    with pytest.raises(ValueError, match="sizes"):
        PointClouds(cloud.points, cloud.features, (19,))
    with pytest.raises(ValueError, match="point clouds"):
        model(torch.rand(2, 6, 8))


def test_position_map_makes_the_gino_blind_to_the_datas_scale_and_place():
    """Fitted on the training clouds, the position map sends a scaled, shifted copy of the data to
    the same latent coordinates: the same weights give the same outputs; a point the map puts
    outside the latent box is moved onto the box."""
    torch.manual_seed(0)
    clouds = _potential_flow_clouds([30, 40])
    model = _tiny_gino().double().fit_positions(c.points for c in clouds)
    moved = [dataclasses.replace(c, points=3.5 * c.points + torch.tensor([10.0, -4.0, 2.0], dtype=torch.float64))
             for c in clouds]
    twin = copy.deepcopy(model).fit_positions(c.points for c in moved)
    low = torch.stack([c.points.min(0).values for c in clouds]).min(0).values
    high = torch.stack([c.points.max(0).values for c in clouds]).max(0).values
    mapped = model.latent_coordinates(torch.stack([low, high]))
    assert torch.allclose((mapped[1] - mapped[0]).max(), torch.tensor(2.0, dtype=torch.float64))  # fills [-1, 1]
    assert torch.allclose(mapped.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)  # centred
    for cloud, copy_ in zip(clouds, moved):
        assert torch.allclose(twin.latent_coordinates(copy_.points), model.latent_coordinates(cloud.points),
                              rtol=1e-12, atol=1e-12)
        assert torch.allclose(twin(copy_), model(cloud), rtol=1e-10, atol=1e-12)
    far = dataclasses.replace(clouds[0], points=clouds[0].points * 3)  # beyond the box: clamped onto it
    assert model.latent_coordinates(far.points).abs().max() == 1.0
    clamped = dataclasses.replace(far, points=(model.latent_coordinates(far.points) - model.position_shift)
                                  / model.position_scale)
    assert torch.allclose(model(far), model(clamped), rtol=1e-10, atol=1e-12)


def test_nearest_distance_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    queries, points = torch.rand(50, 3, generator=g), torch.rand(80, 3, generator=g)
    neighborhood = radius_search(queries, points, 0.2)
    distance = torch.cdist(queries.double(), points.double())
    expected = distance.masked_fill(distance > 0.2, 0.2).min(1).values
    for chunk in (None, 7):
        found = nearest_distance(queries, points, neighborhood, 0.2, chunk)
        assert found.dtype == torch.float32 and torch.allclose(found.double(), expected, rtol=1e-6, atol=1e-7)
    assert (neighborhood.counts() == 0).any() and (found[neighborhood.counts() == 0] == 0.2).all()


def test_an_old_gino_checkpoint_is_refused_clearly(tmp_path):
    model = NormalizedOperator(_tiny_gino())
    state = {key: value for key, value in model.state_dict().items() if "position" not in key}
    with pytest.raises(CheckpointError, match="earlier mpno"):
        model_from_state({"operator": model.spec(), "model": state,
                          "precision": {"mode": "full"}}, tmp_path / "old.pt")


def test_peak_memory_follows_the_chunk_not_the_edges():
    """The largest tensor any operator makes (forward and backward) and the bytes autograd keeps
    for backward are set by the chunk size; without chunks they grow with the edges."""
    g = torch.Generator().manual_seed(0)
    hidden = 32
    rows = {}
    for n in (600, 1200):
        q, p, f = torch.rand(60, 3, generator=g), torch.rand(n, 3, generator=g), torch.randn(n, 4, generator=g)
        neighborhood = radius_search(q, p, 0.6)
        for chunk in (500, 2000, None):
            block = mpno.GNOBlock(4, 8, radius=0.6, kernel_hidden=hidden, chunk_size=chunk)
            fr = f.clone().requires_grad_()
            _, largest = operator_costs(lambda: block(q, p, fr, neighborhood).sum().backward())
            saved = saved_tensor_bytes(lambda: block(q, p, fr, neighborhood))
            rows[n, chunk] = (neighborhood.n_edges, largest, saved)
    for n in (600, 1200):
        edges = rows[n, None][0]
        assert edges > 4 * 2000
        assert rows[n, 500][1] == 500 * hidden * 4 and rows[n, 2000][1] == 2000 * hidden * 4  # the kernel's hidden layer
        assert rows[n, None][1] >= edges * hidden * 4
        assert rows[n, 500][2] <= n * 4 * 4 + 60 * 8 * 4 + 1024  # the inputs and the output, nothing per edge
    assert rows[600, 500][1] == rows[1200, 500][1]  # twice the edges, the same largest tensor
    assert rows[1200, None][2] > 1.8 * rows[600, None][2]  # unchunked: saved bytes grow with the edges


def test_pipeline_caches_neighborhoods_and_tiny_gino_learns(tmp_path):
    (path,) = generate("potential-flow", tmp_path / "train.h5", n=4, seed=0, points=150, min_axis=0.4,
                       max_axis=0.9)
    with h5py.File(path, "a") as f:  # clouds of different sizes in one file
        f["sizes"] = np.array([150, 120, 90, 150])
    dataset = PointCloudDataset(path)
    assert dataset.channels == (6, 1) and len(dataset[2][0].points) == 90
    torch.manual_seed(0)
    operator = _tiny_gino(hidden_channels=8, kernel_hidden=16, latent_grid=8, radius=0.35)
    batches = PointCloudBatches(dataset, batch_size=4, neighborhoods=operator.neighborhoods)
    cached = batches.samples[1][0].neighbors
    fresh = operator.neighborhoods(dataset[1][0].points)
    assert torch.equal(cached[0].indices, fresh[0].indices) and torch.equal(cached[1].offsets, fresh[1].offsets)
    inputs = UnitGaussianNormalizer.fit(x.features.T for x, _ in batches.samples)
    outputs = UnitGaussianNormalizer.fit(y.values.T for _, y in batches.samples)
    model = NormalizedOperator(operator, inputs, outputs)
    rebuilt = NormalizedOperator.from_spec(model.spec())  # what a checkpoint records rebuilds the model
    rebuilt.load_state_dict(model.state_dict())
    loss = PointL2Loss()
    x, y, _ = next(batches.iterate())
    assert torch.equal(rebuilt(x), model(x))
    before = loss(model(x), y).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    trainer = Trainer(model, optimizer, batches, epochs=40, loss=loss, schedule="mixed", log=quiet)
    trainer.fit()  # 40 steps on one batch of four clouds, in mixed precision
    with torch.no_grad():
        after = loss(model(x), y).item()
    assert math.isfinite(after) and after < 0.6 * before, (before, after)


# -- files ----------------------------------------------------------------------------------------------

OCTAHEDRON = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def _subdivided_octahedron():
    """Each face split into four (outward winding kept): 18 vertices, 32 faces, the octahedron's surface."""
    vertices, middle, faces = list(OCTAHEDRON), {}, []

    def midpoint(i, j):
        key = (min(i, j), max(i, j))
        if key not in middle:
            middle[key] = len(vertices)
            vertices.append((vertices[i] + vertices[j]) / 2)
        return middle[key]

    for a, b, c in FACES:
        ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
        faces += [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]]
    return np.array(vertices), np.array(faces)


def _write_ply(path, vertices, faces, binary):
    header = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\ncomment Created by Open3D\n"
              f"element vertex {len(vertices)}\nproperty double x\nproperty double y\nproperty double z\n"
              f"element face {len(faces)}\nproperty list uchar uint vertex_indices\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode())
        if binary:
            f.write(vertices.astype("<f8").tobytes())
            rows = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<u4", 3)])
            rows["n"], rows["i"] = 3, faces
            f.write(rows.tobytes())
        else:
            f.write("".join(" ".join(map(repr, v)) + "\n" for v in vertices.tolist()).encode())
            f.write("".join("3 " + " ".join(map(str, t)) + "\n" for t in faces.tolist()).encode())


def test_car_cfd_layout_is_read(tmp_path):
    """neuraloperator's car-pressure layout: train.txt/test.txt, data/<name>/tri_mesh.ply and press.npy."""
    from mpno.data.pointclouds import car_cfd, read_ply

    mesh, faces = _subdivided_octahedron()
    for name, scale, binary in (("001", 1.0, True), ("002", 2.0, False)):
        (tmp_path / "data" / name).mkdir(parents=True)
        _write_ply(tmp_path / "data" / name / "tri_mesh.ply", mesh * scale, faces, binary)
        vertices, triangles = read_ply(tmp_path / "data" / name / "tri_mesh.ply")
        assert np.array_equal(vertices, mesh * scale) and np.array_equal(triangles, faces)
        values = np.arange(18.0)  # 96 more values than vertices: entries 16 to 111 are not per vertex
        np.save(tmp_path / "data" / name / "press.npy", np.concatenate([values[:16], np.full(96, -1.0), values[16:]]))
    (tmp_path / "train.txt").write_text("001")
    (tmp_path / "test.txt").write_text("002,\n")
    x, y = car_cfd(tmp_path, "train")[0]
    assert torch.allclose(x.points.double(), torch.tensor(mesh / 2))  # scaled by the box of both meshes
    assert torch.allclose(x.features[:6].double(), torch.tensor(OCTAHEDRON), atol=1e-7)  # outward vertex normals
    assert torch.equal(y.values[:, 0], torch.arange(18.0))
    side = math.sqrt(2) / 2  # the scaled octahedron's edge
    assert math.isclose(x.weights.sum().item(), 8 * math.sqrt(3) / 4 * side**2, rel_tol=1e-6)


def test_point_cloud_files_broadcast_per_sample_arrays(tmp_path):
    g = np.random.default_rng(0)
    np.savez(tmp_path / "clouds.npz", points=g.random((3, 10, 2)), temperature=g.random((3, 10)),
             inflow=g.random((3, 2)), pressure=g.random((3, 10, 1)), sizes=np.array([10, 7, 4]))
    dataset = PointCloudDataset(tmp_path / "clouds.npz", inputs=["temperature", "inflow"], outputs=["pressure"])
    x, y = dataset[1]
    assert x.features.shape == (7, 3) and y.values.shape == (7, 1) and x.sizes == (7,)
    assert torch.equal(x.features[:, 1:], torch.from_numpy(np.load(tmp_path / "clouds.npz")["inflow"][1]).float()
                       .expand(7, 2))
    with pytest.raises(mpno.data.DataError, match="no array 'speed'"):
        PointCloudDataset(tmp_path / "clouds.npz", inputs=["speed"], outputs=["pressure"])
