"""Keyboard shortcuts of Brain maps (issue #8) and saving / restoring a session."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding

from napari_factortopy._napari._brain_widget import KEYS
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.scene.brain import VIEWS
from napari_factortopy.scene.session import Camera, LayerState, Session

from ._drive import canvas_shot, dock, open_model


def press(viewer, key: str) -> None:
    """Run what napari's keymap binds to ``key`` (as a key press does)."""
    func = viewer.keymap[coerce_keybinding(key)]
    out = func(viewer)
    if hasattr(out, "__next__"):  # a press/release generator
        next(out, None)


def test_shortcuts_step_maps_and_views(make_napari_viewer, model_path):
    viewer = make_napari_viewer()
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    maps = list(brain.map_choice.choices)
    assert brain.map_choice.value == maps[0] == "layer"
    press(viewer, KEYS["next map"])
    assert brain.map_choice.value == maps[1] and scene.map_name == maps[1]
    press(viewer, KEYS["previous map"])
    press(viewer, KEYS["previous map"])  # wraps around
    assert scene.map_name == maps[-1]
    for view in VIEWS:
        if view == "flat" and not scene.has_mesh("flat"):
            continue
        before = np.array(layer.data[0])
        press(viewer, KEYS[f"view {view}"])
        assert scene.view == view
        if view != "lateral":
            assert not np.array_equal(before, layer.data[0])


def test_shortcuts_are_bound_on_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    brain = dock(viewer, "Brain maps")
    for key in KEYS.values():
        assert coerce_keybinding(key) in viewer.keymap
    brain._unhook(viewer)  # the panel's destroyed signal does this
    assert not any(coerce_keybinding(k) in viewer.keymap for k in KEYS.values())


def settle() -> None:
    """Let Qt lay out the window (a docked panel takes its width) before a screenshot."""
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()


def test_session_json_round_trip():
    s = Session(
        (LayerState("/m.ftopy", "m", "score", 2, "r_test", "sphere", "ventral", True),),
        "m",
        Camera((1, 2, 3), 2.5, (10, 20, 30), 0.0),
    )
    assert Session.from_json(s.to_json()) == s
    assert json.loads(s.to_json())["layers"][0]["map"] == "score"
    with pytest.raises(ValueError, match="newer"):
        Session.from_json(json.dumps({"layers": [], "version": 99}))
    with pytest.raises(ValueError, match="not a session"):
        Session.from_json("[]")


def test_save_change_restore_gives_the_same_picture(
    make_napari_viewer, model_path, tmp_path, shot_dir
):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    brain.map_choice.value = "layer weights"
    brain.layer_slider.value = 4
    brain.mesh_choice.value = "sphere"
    settle()  # the docked panel has taken its room: the view below is framed for it
    brain._on_view("posterior")  # the tiny model's vertices are at the occipital pole
    viewer.camera.zoom *= 1.3
    a = np.asarray(viewer.camera.angles)
    viewer.camera.angles = tuple(a + np.array([4.0, 8.0, 0.0]))
    want = (scene.map_name, scene.layer_index, scene.kind, scene.view)
    cam = (tuple(viewer.camera.center), viewer.camera.zoom, tuple(viewer.camera.angles))
    settle()
    shot = canvas_shot(viewer)
    rgb = shot[..., :3].astype(int)
    coloured = (rgb.max(-1) - rgb.min(-1)) > 30  # the map, not curvature grey
    assert coloured.mean() > 0.005
    path = tmp_path / "session.json"
    brain.session_file.value = str(path)
    brain.save_session_button.clicked.emit()
    saved = Session.load(path)
    assert saved.layers[0].map == "layer weights" and saved.layers[0].layer_index == 3
    # change everything
    brain.map_choice.value = "scale"
    brain.mesh_choice.value = "inflated"
    brain._on_view("lateral")
    viewer.camera.zoom = 0.3
    viewer.camera.angles = (0.0, 0.0, 0.0)
    assert not np.array_equal(canvas_shot(viewer), shot)
    brain.restore_session_button.clicked.emit()
    (restored,) = [ly for ly in viewer.layers if ly.name == "tiny"]
    rs = scene_for_layer(restored)
    assert (rs.map_name, rs.layer_index, rs.kind, rs.view) == want
    assert brain.map_choice.value == "layer weights" and brain.layer_slider.value == 4
    assert brain.mesh_choice.value == "sphere"
    np.testing.assert_allclose(viewer.camera.center, cam[0], atol=1e-6)
    np.testing.assert_allclose(viewer.camera.zoom, cam[1], rtol=1e-6)
    np.testing.assert_allclose(viewer.camera.angles, cam[2], atol=1e-6)
    settle()
    again = canvas_shot(viewer)
    from PIL import Image

    Image.fromarray(shot).save(shot_dir / "session_saved.png")
    Image.fromarray(again).save(shot_dir / "session_restored.png")
    assert again.shape == shot.shape
    differ = np.abs(again.astype(int) - shot.astype(int)).max(-1) > 2
    assert differ.mean() < 0.001, f"{differ.mean():.2%} of pixels differ"
