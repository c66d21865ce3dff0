"""Clusters/compare panel and the export panel."""

from __future__ import annotations

import numpy as np
from PIL import Image

from napari_factortopy._napari._compare_widget import CompareWidget
from napari_factortopy._napari._export_widget import ExportWidget
from napari_factortopy._napari._layers import model_layers, scene_for_layer
from napari_factortopy.core import colours
from napari_factortopy.core.analyses import channel_clusters
from napari_factortopy.core.compare import score_difference

from .conftest import make_model


def test_score_difference_matches_by_vertex():
    a = make_model(vertex_ids=np.array([5, 6, 7, 5]), n_lh=3, seed=1)
    b = make_model(vertex_ids=np.array([7, 5, 5, 9]), n_lh=2, seed=2)
    diff, matched = score_difference(a, b)
    np.testing.assert_array_equal(matched, [1, -1, 0, 2])
    want = a.scores["r2_test"][[0, 2, 3]] - b.scores["r2_test"][[1, 0, 2]]
    np.testing.assert_allclose(diff[[0, 2, 3]], want, rtol=1e-6)
    assert np.isnan(diff[1])


def test_clusters_and_compare(make_napari_viewer, tmp_path, model_path, tiny_model, qtbot):
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(model_path)
    viewer.add_surface(data, **kwargs)
    widget = CompareWidget(viewer)
    widget.n_clusters.value = 5
    widget._on_clusters()  # on a worker thread
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    labels = scene_for_layer(widget.model_choice.layer).clusters
    want = channel_clusters(tiny_model.beta, 5, n_kmeans=min(1000, tiny_model.n_vertices)).labels
    np.testing.assert_array_equal(labels, want)
    assert labels.max() == 4 and "5 clusters" in widget.status.value
    other = make_model(seed=9).save(tmp_path / "other.ftopy")
    widget.file_a.value, widget.file_b.value = str(model_path), str(other)
    a, b, d = widget._on_compare()
    assert a.translate[2] < b.translate[2] < d.translate[2]
    diff, _ = score_difference(tiny_model, make_model(seed=9))
    lim = np.nanmax(np.abs(diff))
    widget.difference.value = "r2_test A − B"
    idx = scene_for_layer(d).mesh_index()
    np.testing.assert_allclose(
        d.vertex_colors[idx], colours.weight_rgba(diff, -lim, lim, "RdBu_r"), atol=1e-6
    )
    assert len(viewer.layers) == 4
    widget.file_b.value = str(tmp_path / "missing.ftopy")
    assert widget._on_compare() is None and "cannot compare" in widget.status.value


def test_export_figure_and_screenshot(make_napari_viewer, tmp_path, model_path, tiny_model):
    viewer = make_napari_viewer(ndisplay=3, show=True)
    ((data, kwargs, _),) = model_layers(model_path)
    viewer.add_surface(data, **kwargs)
    widget = ExportWidget(viewer)
    widget.out.value = str(tmp_path / "fig.png")
    widget.maps.value = ["space"]
    widget.views.value = ["lateral"]
    image = widget._on_export()
    saved = np.asarray(Image.open(tmp_path / "fig.png"))
    assert saved.shape == image.shape and saved.shape[1] == 3000
    shot = widget._on_screenshot()
    assert abs(shot.shape[1] - 3000) <= 2
    assert (tmp_path / "fig-canvas.png").is_file()
