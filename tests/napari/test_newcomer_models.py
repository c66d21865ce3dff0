"""Issue 22: several models at once (item 3) and Compare's blank model B ("also seen").

A second model, a training result (opened through the reader as well) or a comparison
opens beside the models already shown, never over them."""

from __future__ import annotations

import numpy as np

from ._drive import canvas_shot, colour_centroid, dock, open_model, paint_hemispheres
from .conftest import make_model

#: The gap the plugin leaves between models (world units).
GAP = 20.0


def x_span(layer) -> tuple[float, float]:
    """A layer's world extent along screen-right (the last axis)."""
    x = np.asarray(layer.data[0])[:, -1] * layer.scale[-1] + layer.translate[-1]
    return float(x.min()), float(x.max())


def _apart(left, right) -> float:
    """The gap between two layers along screen-right (negative: they overlap)."""
    return x_span(right)[0] - x_span(left)[1]


def test_second_model_opens_beside_the_first(make_napari_viewer, qtbot, tmp_path, model_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 800)
    first = open_model(viewer, model_path)
    second = open_model(viewer, make_model(seed=3).save(tmp_path / "second.ftopy"))
    assert abs(_apart(first, second) - GAP) < 1e-3, (x_span(first), x_span(second))
    # on the canvas: both, the first on the left
    n_lh = 100
    paint_hemispheres(first, n_lh, lh=(1, 0, 0), rh=(1, 0, 0))
    paint_hemispheres(second, n_lh, lh=(0, 0, 1), rh=(0, 0, 1))
    qtbot.wait(50)
    shot = canvas_shot(viewer)
    red, blue = colour_centroid(shot, (255, 0, 0)), colour_centroid(shot, (0, 0, 255))
    assert red[1] < blue[1], (red, blue)


def test_comparison_opens_beside_the_models(make_napari_viewer, tmp_path, model_path):
    viewer = make_napari_viewer()
    model = open_model(viewer, model_path)
    compare = dock(viewer, "Clusters and compare")
    compare.file_a.value = str(model_path)
    compare.file_b.value = str(make_model(seed=9).save(tmp_path / "other.ftopy"))
    compare.compare_button.native.click()
    a, b, d = (viewer.layers[n] for n in ("A: tiny", "B: other", "A − B differences"))
    assert _apart(model, a) > GAP - 1e-3 and _apart(a, b) > 0 and _apart(b, d) > 0
    # a view switch in Brain maps re-places the comparison where it was
    before = x_span(a)
    brain = dock(viewer, "Brain maps")
    brain.model_choice.value = "A: tiny"
    brain._on_view("lateral")
    assert brain.layer is a or getattr(brain.layer, "__wrapped__", None) is a
    assert abs(x_span(a)[0] - before[0]) < 1e-3 and _apart(model, a) > 0


def test_compare_with_model_b_blank_says_so(make_napari_viewer, model_path):
    viewer = make_napari_viewer()
    compare = dock(viewer, "Clusters and compare")
    compare.file_a.value = str(model_path)
    compare.compare_button.native.click()
    text = compare.status.value
    assert "choose model B" in text and "not a file" not in text, text
    assert len(viewer.layers) == 0


def test_side_by_side_models_carry_their_names(make_napari_viewer, qtbot, tmp_path, model_path):
    """Item 3: with two models shown, each one's name is drawn above its own brain; it
    moves with the brain (a view change) and goes when the other model is closed."""
    from napari_factortopy._napari._names import NAME_KEY

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 800)
    first = open_model(viewer, model_path)
    qtbot.wait(50)
    assert not [ly for ly in viewer.layers if NAME_KEY in ly.metadata]  # one model: no names
    second = open_model(viewer, make_model(seed=3).save(tmp_path / "second.ftopy"))
    qtbot.waitUntil(lambda: len([ly for ly in viewer.layers if NAME_KEY in ly.metadata]) == 2)
    viewer.layers.selection.active = first  # another layer selected than the names
    paint_hemispheres(first, 100, lh=(1, 0, 0), rh=(1, 0, 0))
    paint_hemispheres(second, 100, lh=(0, 0, 1), rh=(0, 0, 1))
    qtbot.wait(50)
    shot = canvas_shot(viewer)[..., :3].astype(int)
    white = np.all(shot >= 230, axis=-1)
    for layer, rgb in ((first, (255, 0, 0)), (second, (0, 0, 255))):
        brain = np.all(np.abs(shot - np.array(rgb)) <= 40, axis=-1)
        rows, cols = np.nonzero(brain)
        top, left, right = rows.min(), cols.min(), cols.max()
        text_rows, text_cols = np.nonzero(white[:top, left : right + 1])
        assert len(text_rows) > 20, f"no name drawn above {layer.name}"
        # the name is centred over its own brain
        centre = left + text_cols.mean()
        assert abs(centre - (left + right) / 2) < 0.25 * (right - left), (centre, left, right)
    names = {ly.metadata[NAME_KEY]: ly for ly in viewer.layers if NAME_KEY in ly.metadata}
    assert set(names) == {first.name, second.name}
    assert list(names[second.name].features["name"]) == [second.name]
    # a view change moves the brain: its name follows it
    brain = dock(viewer, "Brain maps")
    brain.model_choice.value = second.name
    brain._on_view("ventral")
    qtbot.wait(50)
    pos = names[second.name].data[0] + names[second.name].translate
    verts = np.asarray(second.data[0]) + second.translate
    assert verts[:, 2].min() < pos[2] < verts[:, 2].max() and pos[1] < verts[:, 1].min()
    viewer.layers.remove(second)
    qtbot.waitUntil(lambda: not [ly for ly in viewer.layers if NAME_KEY in ly.metadata])
