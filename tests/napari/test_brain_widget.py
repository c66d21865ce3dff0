"""The main panel: map/mesh/view switches and clicks, checked against core numbers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari._brain_widget import BrainWidget
from napari_factortopy._napari._layers import META_KEY, model_layers
from napari_factortopy.core import colours
from napari_factortopy.core.analyses import channel_clusters

from .conftest import make_model


@pytest.fixture
def shown(make_napari_viewer, model_path):
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(model_path)
    layer = viewer.add_surface(data, **kwargs)
    widget = BrainWidget(viewer)
    return viewer, layer, widget


def _modelled(layer):
    from napari_factortopy._napari._layers import scene_for_layer

    scene = scene_for_layer(layer)
    assert scene is layer.metadata[META_KEY]["scene"]
    return scene, scene.mesh_index()


def test_map_switch_paints_core_colours(shown, tiny_model, qtbot):
    _viewer, layer, widget = shown
    scene, idx = _modelled(layer)
    assert widget.model_choice.value == layer.name
    for name, want in (
        ("space", colours.space_rgba(tiny_model.space)),
        ("scale", colours.scale_rgba(tiny_model.scale)),
        ("score", colours.score_rgba(tiny_model.scores["r2_test"])),
    ):
        widget.map_choice.value = name
        np.testing.assert_allclose(layer.vertex_colors[idx], want, atol=1e-6)
        assert layer.metadata[META_KEY]["map"] == name
    widget.map_choice.value = "layer weights"
    widget.layer_slider.value = 3
    np.testing.assert_allclose(
        layer.vertex_colors[idx], colours.weight_rgba(tiny_model.layer[:, 2]), atol=1e-6
    )
    np.testing.assert_allclose(layer.metadata[META_KEY]["values"][idx], tiny_model.layer[:, 2])
    widget.map_choice.value = "clusters"
    # the clusters are computed off the UI thread: the switch returns at once with a
    # busy line, the brain keeps its map, then the clusters arrive and are drawn
    assert scene.clusters is None and not widget.busy.native.isHidden()
    assert "channel clusters" in widget.busy.value
    assert layer.metadata[META_KEY]["map"] == "layer weights"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.busy.native.isHidden() and layer.metadata[META_KEY]["map"] == "clusters"
    labels = scene.clusters
    want = channel_clusters(tiny_model.beta, 20, n_kmeans=min(1000, tiny_model.n_vertices))
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_allclose(layer.vertex_colors[idx], colours.cluster_rgba(labels), atol=1e-6)
    assert widget.legend.value is not None


def test_mesh_and_view_switch_change_geometry(shown):
    _viewer, layer, widget = shown
    before = np.array(layer.data[0])
    widget.mesh_choice.value = "sphere"
    assert not np.allclose(layer.data[0], before)
    assert len(layer.data[0]) == len(before)
    sphere = np.array(layer.data[0])
    widget._on_view("ventral")
    assert not np.allclose(layer.data[0], sphere)
    widget._on_outlines(True)
    _scene, idx = _modelled(layer)
    black = np.all(layer.vertex_colors[:, :3] == 0, axis=1)
    assert black.any() and np.all(np.isin(np.flatnonzero(black), idx))


def test_click_reports_the_vertex(shown, tiny_model):
    _viewer, layer, widget = shown
    _scene, idx = _modelled(layer)
    verts = np.asarray(layer.data[0])
    # the frontmost modelled vertex of the lh: cast a ray from the camera onto it
    row = int(np.argmax(verts[idx[: tiny_model.n_lh], 0]))
    target = verts[idx[row]]
    pick = widget._on_click(np.r_[500.0, target[1:]], np.array([-1.0, 0.0, 0.0]))
    assert pick is not None and pick.hemi == "lh"
    assert np.linalg.norm(verts[pick.mesh_index, 1:] - target[1:]) < 5
    if pick.row is not None:
        r = pick.row
        assert f"vertex {tiny_model.vertex_ids[r]}" in widget.info.value
        assert f"{tiny_model.scale[r]:.2f}" in widget.info.value
    assert widget.timings["click"] < 0.5


def test_widget_ignores_viewer_without_models(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_points(np.zeros((1, 2)))
    widget = BrainWidget(viewer)
    widget._on_map("space")
    widget._on_view("lateral")
    assert widget._on_click(np.zeros(3), np.ones(3)) is None
    assert make_model(n_vertices=20).n_vertices == 20


def test_roi_names_follow_outlines_mesh_and_view(shown, tiny_model):
    viewer, layer, widget = shown
    name = f"{layer.name} ROI names"
    assert name not in viewer.layers
    _scene, idx = _modelled(layer)
    roi = np.asarray(tiny_model.roi)
    present = {
        hemi: {tiny_model.roi_names[k - 1] for k in np.unique(roi[rows]) if k > 0}
        for hemi, rows in (
            ("lh", np.arange(tiny_model.n_lh)),
            ("rh", np.arange(tiny_model.n_lh, tiny_model.n_vertices)),
        )
    }
    assert present["lh"] and present["rh"]

    def check():
        points = viewer.layers[name]
        verts = np.asarray(layer.data[0])
        pos = np.asarray(points.data)
        names = list(points.features["roi"])
        assert len(pos) == len(names) == len(present["lh"]) + len(present["rh"])
        assert sorted(points.text.values) == sorted(names)
        n_lh_shown = len(present["lh"])
        assert set(names[:n_lh_shown]) == present["lh"]
        assert set(names[n_lh_shown:]) == present["rh"]
        lift = 0.01 * np.ptp(verts[:, 2])
        for j, (p, roi_name) in enumerate(zip(pos, names, strict=True)):
            k = tiny_model.roi_names.index(roi_name) + 1
            hemi_rows = np.arange(tiny_model.n_vertices) < tiny_model.n_lh
            if j >= n_lh_shown:
                hemi_rows = ~hemi_rows
            roi_verts = verts[idx[(roi == k) & hemi_rows]]
            nearest = np.linalg.norm(roi_verts - p, axis=1).min()
            assert nearest <= lift + 1e-3, (roi_name, nearest)

    widget.outlines.value = True
    check()
    lateral = np.array(viewer.layers[name].data)
    widget.mesh_choice.value = "sphere"
    check()
    widget._on_view("ventral")
    check()
    assert not np.allclose(viewer.layers[name].data, lateral)
    widget.map_choice.value = "space"  # a map switch keeps the names where they are
    check()
    widget.outlines.value = False
    assert name not in viewer.layers


def test_roi_names_leave_with_their_model(shown):
    viewer, layer, widget = shown
    widget.outlines.value = True
    name = f"{layer.name} ROI names"
    assert name in viewer.layers
    viewer.layers.remove(layer)
    assert name not in viewer.layers
