"""#9.7: every view preset puts each hemisphere, and anterior, where anatomy says —
in the napari canvas and in exported figures, read from rendered pixels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari._layers import load_scene, scene_for_layer
from napari_factortopy.scene.brain import CustomMap, hemisphere_caption
from napari_factortopy.scene.figure import figure_image

from ._drive import canvas_shot, dock, open_model
from .conftest import make_model

BRIGHT_RED, DARK_RED = (255, 0, 0), (102, 0, 0)
BRIGHT_BLUE, DARK_BLUE = (0, 0, 255), (0, 0, 102)

#: Anatomy of each preset: (left hemisphere on screen: "left"/"right",
#: anterior of lh / rh on screen: "left", "right", "up" or None when not seen).
EXPECTED = {
    "lateral": ("left", "left", "right"),
    "medial": ("left", "right", "left"),
    "ventral": ("right", "up", "up"),  # from below, anterior up: lh on the image's right
    "posterior": ("left", None, None),
    "anterior": ("right", None, None),
    "dorsal": ("left", "up", "up"),
}


def _anatomy_rgba(meshes) -> np.ndarray:
    """(n_lh + n_rh, 4): lh red, rh blue; anterior half bright, posterior half dark."""
    parts = []
    for hemi, rgb in (("lh", (1.0, 0.0, 0.0)), ("rh", (0.0, 0.0, 1.0))):
        y = np.asarray(meshes.vertices[hemi])[:, 1]  # RAS: y = anterior
        shade = np.where(y > np.median(y), 1.0, 0.4)
        col = np.ones((len(y), 4))
        col[:, :3] = np.asarray(rgb) * shade[:, None]
        parts.append(col)
    return np.concatenate(parts)


def _centroid(image, rgb, tol=30):
    d = np.abs(image[..., :3].astype(int) - np.asarray(rgb)).sum(-1)
    rows, cols = np.nonzero(d <= tol)
    assert len(rows) > 50, f"colour {rgb} hardly on screen ({len(rows)} px)"
    return rows.mean(), cols.mean()


def _check(image, view):
    side, ant_lh, ant_rh = EXPECTED[view]
    red = np.array(_centroid(image, BRIGHT_RED)) + _centroid(image, DARK_RED)
    blue = np.array(_centroid(image, BRIGHT_BLUE)) + _centroid(image, DARK_BLUE)
    assert (red[1] < blue[1]) == (side == "left"), f"{view}: lh on the wrong side"
    for want, bright, dark in ((ant_lh, BRIGHT_RED, DARK_RED), (ant_rh, BRIGHT_BLUE, DARK_BLUE)):
        if want is None:
            continue
        (r_a, c_a), (r_p, c_p) = _centroid(image, bright), _centroid(image, dark)
        if want == "up":
            assert r_a < r_p, f"{view}: anterior is not up"
        else:
            assert (c_a < c_p) == (want == "left"), f"{view}: anterior not on the {want}"


@pytest.mark.parametrize("view", ["lateral", "medial", "ventral", "posterior"])
def test_napari_presets_place_hemispheres_anatomically(
    make_napari_viewer, model_path, view, shot_dir
):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view(view)
    layer.vertex_colors = _anatomy_rgba(scene_for_layer(layer).meshes())
    image = canvas_shot(viewer)
    if view == "ventral":
        from PIL import Image

        Image.fromarray(image).save(shot_dir / "factortopy-ventral-canvas.png")
    _check(image, view)
    # the panel names the sides the pixels show
    assert brain.hemispheres.value == ("L | R" if EXPECTED[view][0] == "left" else "R | L")


@pytest.fixture(scope="module")
def whole_model():
    n = 10242  # every fsaverage5 vertex of both hemispheres
    return make_model(vertex_ids=np.r_[np.arange(n), np.arange(n)], n_lh=n, d=4, n_layers=2)


@pytest.mark.parametrize("view", list(EXPECTED))
def test_figure_presets_place_hemispheres_anatomically(whole_model, view, shot_dir):
    scene = load_scene(whole_model)
    rgba = _anatomy_rgba(scene.meshes())
    scene.custom["anatomy"] = CustomMap(rgba, np.zeros(len(rgba)), "Greys", 0.0, 1.0)
    image = figure_image(scene, ["anatomy"], [view], width_px=1200)
    plot = image[:, : int(0.8 * image.shape[1])]  # without the legend column
    if view == "ventral":
        from PIL import Image

        Image.fromarray(image).save(shot_dir / "factortopy-ventral-figure.png")
    _check(plot, view)
    # the panel title's "(L | R)" / "(R | L)" is the same rule the pixels were checked on
    want = "L | R" if EXPECTED[view][0] == "left" else "R | L"
    assert hemisphere_caption(view, scene.kind) == want
