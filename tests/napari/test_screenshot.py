"""Rendered pixels: dropping a model file shows the map's colours, not a blank canvas."""

from __future__ import annotations

import numpy as np

from napari_factortopy._napari._brain_widget import BrainWidget
from napari_factortopy.core import colours

from .conftest import make_model


def _count(image, rgb, tol=3):
    diff = np.abs(image[..., :3].astype(int) - np.round(np.asarray(rgb) * 255).astype(int))
    return int(np.sum(np.all(diff <= tol, axis=-1)))


def test_open_model_file_renders_its_colours(make_napari_viewer, tmp_path):
    model = make_model(n_vertices=2000, n_layers=6, seed=4)
    model.layer[:] = 0.0
    model.layer[:, 5] = 1.0  # every vertex: last layer, full confidence → one known colour
    path = model.save(tmp_path / "onehot.ftopy")
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-factortopy")
    assert len(layers) == 1 and layers[0]._type_string == "surface"
    widget = BrainWidget(viewer)
    widget._on_view("posterior")  # the occipital patch faces the camera
    image = viewer.screenshot(canvas_only=True)
    assert image.std() > 10  # not a blank canvas
    layer_colour = colours.layer_rgba(model.layer[:1])[0, :3]
    greys = colours.curvature_grey(np.array([-1.0, 1.0]))[:, :3]
    n_map = _count(image, layer_colour)
    n_grey = sum(_count(image, g) for g in greys)
    assert n_map > 500, n_map
    assert n_grey > 500, n_grey
    # switching the map changes the pixels to the new map's colours
    model_scale = np.full(model.n_vertices, 0.0)
    widget.scene.model.scale = model_scale
    widget._on_map("scale")
    image = viewer.screenshot(canvas_only=True)
    assert _count(image, colours.scale_rgba(model_scale[:1])[0, :3]) > 500
    assert _count(image, layer_colour) < n_map / 10
