"""The main panel: map/mesh/view switches and clicks, checked against core numbers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari._brain_widget import BrainWidget
from napari_factortopy._napari._layers import META_KEY, model_layers
from napari_factortopy.core import colours

from .conftest import make_model


@pytest.fixture
def shown(make_napari_viewer, model_path):
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(model_path)
    layer = viewer.add_surface(data, **kwargs)
    widget = BrainWidget(viewer)
    return viewer, layer, widget


def _modelled(layer):
    meta = layer.metadata[META_KEY]
    from napari_factortopy._napari._layers import SCENES

    scene = SCENES[meta["scene_id"]]
    return scene, scene.mesh_index()


def test_map_switch_paints_core_colours(shown, tiny_model):
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
    labels = scene.clusters
    assert labels.shape == (tiny_model.n_vertices,)
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
