"""What a run draws: the samples of every operator (grid, sphere, point clouds), the curves and the bounds."""

import pytest
import torch

import mpno
from mpno.data import potential_flow
from mpno.data.pointclouds import PointCloudBatches
from mpno.run import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, instead of files."""
    made = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: made.append(fig))
    yield made
    for fig in made:
        plots._pyplot().close(fig)


def test_an_sfno_sample_is_drawn_as_maps_of_every_channel(figures):
    model = mpno.SFNO(3, 3, (4, 4), hidden_channels=4, n_layers=1, grid="legendre-gauss")
    x = torch.randn(2, 3, 8, 16)
    plots.plot_sphere_samples(model, x, 2 * x, "s.png", "legendre-gauss", channels=["h", "u", "v"])
    fig, = figures
    maps = [axis for axis in fig.axes if axis.get_title()]
    assert len(maps) == 12  # input, truth, prediction, error for each of 3 channels
    assert [axis.get_title() for axis in maps[:4]][1:3] == ["truth: h", "prediction: h"]
    assert {axis.get_xlabel() for axis in maps[-4:]} == {"longitude (°)"} and maps[0].get_ylabel() == "latitude (°)"
    truth, prediction, error = (maps[i].collections[0] for i in (1, 2, 3))
    assert truth.get_clim() == prediction.get_clim()  # one colour scale
    low, high = error.get_clim()
    assert high == -low > 0  # symmetric about zero
    assert fig._suptitle.get_text() == "legendre-gauss grid 8×16"
    latitudes = maps[1].collections[0].get_coordinates()[:, 0, 1]
    assert -90 < latitudes.min() and latitudes.max() < 90  # Gauss latitudes: no poles


def test_a_gino_sample_is_drawn_as_3d_scatter_plots(figures):
    model = mpno.GINO(6, 1, n_modes=(4, 4, 4), hidden_channels=4, n_layers=1, latent_grid=6, radius=0.4)
    batches = PointCloudBatches(potential_flow.dataset(2, points=32), 2, neighborhoods=model.neighborhoods)
    x, y, _ = next(batches.iterate())
    wrapped = mpno.NormalizedOperator(model, mpno.UnitGaussianNormalizer.fit([x.features.T]),
                                      mpno.UnitGaussianNormalizer.fit([y.values.T]))
    plots.plot_point_samples(wrapped, x, y, "g.png", title="clouds")
    fig, = figures
    panels = [axis for axis in fig.axes if axis.name == "3d"]
    assert [axis.get_title() for axis in panels] == ["truth", "prediction", "error (prediction − truth)"]
    truth, prediction, error = (axis.collections[0] for axis in panels)
    assert truth.get_clim() == prediction.get_clim() and error.get_clim()[0] == -error.get_clim()[1]
    assert fig._suptitle.get_text().startswith("clouds: sample 0, 32 points, relative L2 ")


def test_curves_name_each_line_by_test_set_and_grid_and_keep_the_legend_outside(figures):
    rows = [{"epoch": str(e), "precision": "mixed/float16", "train_loss": str(0.30 - 0.01 * e),
             "a.h5/l2": str(0.25 - 0.01 * e), "b.h5/l2": str(0.27 - 0.01 * e)} for e in range(1, 6)]
    plots.plot_curves(rows, "c.png", loss_name="l2", grids={"a.h5": [32, 32], "b.h5": [64, 64]})
    ax, = figures[0].axes
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "train: relative L2", "a.h5 at 32×32: relative L2", "b.h5 at 64×64: relative L2"]
    assert legend.get_bbox_to_anchor().bounds[0] >= ax.get_window_extent().x1  # right of the axes
    figures[0].canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in label and "times" not in label for label in labels)  # 0.2, not 2×10⁻¹
    assert len(labels) >= 2


def test_bounds_plots_label_grid_sizes_as_numbers(figures):
    report = {"levels": [16, 32, 64], "curves": {"discretization": [1e-1, 5e-2, 2.5e-2], "float16": [1e-3] * 3,
                                                  "bfloat16": [1e-2] * 3, "float32": [1e-7] * 3}}
    plots.plot_bounds(report, "b.png", title="errors of the inputs of d.h5")
    ax, = figures[0].axes
    figures[0].canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64"]
    assert ax.get_title() == "errors of the inputs of d.h5"
