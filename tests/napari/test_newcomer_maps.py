"""Issue #22, the maps side: what a first-time user meets on the canvas and in Brain maps,
Stimuli and Export, driven through the shown viewer (reader, Plugins menu, clicks)."""

from __future__ import annotations

import warnings

import pytest

from napari_factortopy._napari._layers import scene_for_layer

from ._drive import (
    Toasts,
    canvas_shot,
    colourful,
    dock,
    open_model,
    settle,
    shown_items,
)


@pytest.fixture
def toasts():
    t = Toasts()
    yield t
    t.close()


def test_truth_offers_only_maps_it_has(make_napari_viewer, phantom_model_path, phantom_root):
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
