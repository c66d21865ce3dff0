"""scene/map_panel.panel_state: what each Brain maps control shows, read back against
what the model and scene hold (no Qt)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_factortopy.data.surfaces import SurfaceError
from napari_factortopy.scene.brain import BrainScene, available_maps
from napari_factortopy.scene.map_panel import (
    FLAT_TIP,
    NO_FLAT_TIP,
    panel_state,
    stepped,
)

from ..napari.conftest import make_model, synthetic_loader


@pytest.fixture(scope="module")
def model():
    return make_model(n_vertices=300, n_layers=5, seed=3)


def _no_flat(loader):
    """``loader`` without a flat patch (as on a machine without ?h.*.patch.flat)."""

    def load(name: str, kind: str):
        if kind == "flat":
            raise SurfaceError("no flat patch here")
        return loader(name, kind)

    return load


def test_panel_state_reads_the_scene(model):
    scene = BrainScene(model, loader=synthetic_loader(10242))
    scene.map_name, scene.layer_index, scene.outlines = "layer weights", 3, True
    scene.score_key = "r_test"
    state = panel_state(scene)
    assert state.maps == tuple(available_maps(model))
    assert state.maps[:3] == ("layer", "layer weights", "space")
    assert "score" in state.maps and "roi" in state.maps
    assert state.scores == ("r2_test", "r_test")
    assert state.n_layers == 5 == model.layer.shape[1]
    assert (state.map_name, state.kind, state.layer) == ("layer weights", "inflated", 4)
    assert state.score_key == "r_test" and state.outlines is True
    assert state.layer_visible and not state.score_visible
    assert state.hemispheres == "L | R"  # lateral: left hemisphere on the left
    assert state.flat and state.flat_tooltip == FLAT_TIP
    assert state.unfinished is None and state.banner == "" and state.method is None


def test_panel_state_follows_map_view_and_missing_pieces(model):
    scene = BrainScene(model, loader=_no_flat(synthetic_loader(10242)))
    scene.map_name, scene.score_key = "score", "not a score of this model"
    scene.set_view("ventral")  # from below the left hemisphere is on the right
    state = panel_state(scene)
    assert state.score_visible and not state.layer_visible
    assert state.score_key is None  # the drop-down keeps its value
    assert state.hemispheres == "R | L"
    assert not state.flat and state.flat_tooltip == NO_FLAT_TIP
    assert state.layer == scene.layer_index + 1 == 1


def test_panel_state_of_an_unfinished_custom_baseline(model):
    line = "stopped by the time budget at epoch 2 of 20 (val r 0.12)"
    unfinished = replace(
        model,
        summary={"convergence": {"state": "not_converged", "line": line}},
        kind="baseline",
        extra={"baseline": {"method": "patchComp"}},
    )
    scene = BrainScene(unfinished, loader=synthetic_loader(10242))
    scene.custom["prediction"] = (scene.colors(), scene.model.scale)
    state = panel_state(scene)
    assert state.unfinished == line
    assert state.banner == f"⚠ unfinished model: {line}"
    assert state.method == "patchComp"
    assert state.maps[-1] == "prediction"  # custom maps after the model's own


def test_stepped_wraps_both_ways():
    choices = ["a", "b", "c"]
    assert stepped(choices, "c", +1) == "a"
    assert stepped(choices, "a", -1) == "c"
    assert stepped(choices, "missing", +1) == "b"
