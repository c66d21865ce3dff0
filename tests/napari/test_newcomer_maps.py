"""Issue #22, the maps side: what a first-time user meets on the canvas and in Brain maps,
Stimuli and Export, driven through the shown viewer (reader, Plugins menu, clicks)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_factortopy._napari._layers import scene_for_layer

from ._drive import (
    Toasts,
    canvas_shot,
    click,
    colourful,
    dock,
    open_model,
    settle,
    shown,
    shown_items,
)


@pytest.fixture
def toasts():
    t = Toasts()
    yield t
    t.close()


def test_truth_offers_only_maps_it_has(
    make_napari_viewer, phantom_model_path, phantom_root, qtbot
):
    """#22.1: the phantom's truth.ftopy (no scores) offers no `score` map; every map it
    offers colours the brain, and none warns (no "identical low and high xlims")."""
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, phantom_root / "truth.ftopy")
    brain = dock(viewer, "Brain maps")
    brain._on_view("posterior")  # the phantom's vertices face the camera
    items = shown_items(brain.map_choice)
    assert "score" not in items and items[0] == "layer", items
    assert brain.score_choice.native.isHidden()
    scene = scene_for_layer(layer)
    for name in items:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            brain.map_choice.value = name
            # the clusters are computed on a worker thread first
            qtbot.waitUntil(lambda: brain.worker is None, timeout=60_000)
            settle()
        assert scene.map_name == name
        said = [str(w.message) for w in caught if not _deprecation(w.category)]
        assert not said, (name, said)
        assert colourful(canvas_shot(viewer)) > 200, f"map {name!r} leaves the brain grey"
    # the export panel offers the same maps
    export = dock(viewer, "Export figure")
    assert "score" not in shown_items_of_select(export.maps)


def _deprecation(category) -> bool:
    return issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning)


def shown_items_of_select(select) -> list[str]:
    native = select.native
    return [native.item(i).text() for i in range(native.count())]


def _inner(mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """(row, col) of a pixel of ``mask`` whose ``margin`` neighbourhood is all in it."""
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(mask, iterations=margin)
    rows, cols = np.nonzero(inner)
    assert len(rows), "no such place on the canvas"
    k = len(rows) // 2
    return np.array([rows[k], cols[k]])


def test_a_miss_clears_the_last_vertex(make_napari_viewer, phantom_model_path, phantom_root):
    """#22.2: after a modelled vertex, a click on empty space or on an unmodelled vertex
    leaves no layer-weight bars or "looks at" picture of the previous vertex on screen."""
    viewer = make_napari_viewer(show=True)
    open_model(viewer, phantom_model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("posterior")  # the phantom's vertices face the camera
    brain.map_choice.value = "roi"  # a bright colour on the modelled vertices
    for miss_kind, text in (("space", "no vertex there"), ("grey", "not modelled")):
        settle()
        shot = canvas_shot(viewer)  # again: a shown inspector may narrow the canvas
        rgb = shot[..., :3].astype(int)
        spread = rgb.max(-1) - rgb.min(-1)
        width = shot.shape[1]
        click(viewer, _inner(spread > 60))  # a map colour: a modelled vertex
        settle()
        # the inspector's text wraps: the dock does not grow over the canvas
        assert canvas_shot(viewer).shape[1] >= 0.9 * width
        assert brain.last_pick is not None and brain.last_pick.row is not None
        assert shown(brain.inspector.bars), "a modelled vertex shows its layer weights"
        assert shown(brain.inspector.where), "a modelled vertex shows where it looks"
        rgb = canvas_shot(viewer)[..., :3].astype(int)
        spread = rgb.max(-1) - rgb.min(-1)
        background, grey = rgb.max(-1) < 8, (spread < 6) & (rgb.min(-1) > 40)
        click(viewer, _inner(background if miss_kind == "space" else grey))
        settle()
        assert text in brain.inspector.info.value, brain.inspector.info.value
        assert not shown(brain.inspector.bars), f"{text}: the last vertex's bars stay"
        assert not shown(brain.inspector.where), f"{text}: the last 'looks at' stays"


def test_export_without_a_map_says_so(make_napari_viewer, model_path, tmp_path, toasts):
    """#22.5: Export with no map (or no view) selected: the status says what to choose,
    no longer "wrote …" of the last figure, and no empty-message error toast."""
    viewer = make_napari_viewer(show=True)
    open_model(viewer, model_path)
    export = dock(viewer, "Export figure")
    export.out.value = str(tmp_path / "fig.png")
    export.width_px.value = 500
    export.maps.value, export.views.value = ["layer"], ["lateral"]
    export.figure_button.native.click()
    settle()
    assert export.status.value.startswith("wrote"), export.status.value
    for maps, views in (([], ["lateral"]), (["layer"], [])):
        export.maps.value, export.views.value = maps, views
        export.figure_button.native.click()
        settle()
        said = export.status.value
        assert "wrote" not in said and "choose" in said, said
        errors = [m for s, m in toasts if s.lower() == "error"]
        assert not errors, errors
