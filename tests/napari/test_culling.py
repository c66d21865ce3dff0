"""Issue #22, item 6: the canvas skips the faces a closed brain turns away from the
camera (back-face culling), and the picture stays the one every face draws.

Driven through the shown viewer (reader, Plugins menu, the panel's controls, another
layer selected). Each picture drawn with the plugin's choice of faces is compared pixel
for pixel with the picture of every face; the opposite choice must erase the brain,
which shows that the choice reaches the draw at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari import _culling
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._mesh_update import mesh_visual

from ._drive import canvas_shot, dock, open_model, settle


def _on_brain(shot: np.ndarray) -> np.ndarray:
    return shot[..., :3].astype(int).sum(-1) > 60


def _redraw(viewer, layer) -> np.ndarray:
    mesh_visual(viewer, layer).update()
    settle(80)
    return canvas_shot(viewer)


def _pictures(viewer, layer, monkeypatch):
    """(the plugin's picture, every face's, the opposite faces' culled) and the side."""
    node = mesh_visual(viewer, layer)
    side = _culling.cull_side(layer, node)
    ours = _redraw(viewer, layer)
    assert node._vshare.gl_state["cull_face"] == side
    rule = _culling.cull_side
    with monkeypatch.context() as m:
        m.setattr(_culling, "cull_side", lambda *_: False)
        every = _redraw(viewer, layer)
        opposite = {"front": "back", "back": "front"}.get(side, False)
        m.setattr(_culling, "cull_side", lambda *_: opposite)
        wrong = _redraw(viewer, layer)
    assert _culling.cull_side is rule
    _redraw(viewer, layer)
    return ours, every, wrong, side


def _same_but_for_edges(ours, every) -> None:
    """Pixel-identical, but for at most a few silhouette pixels where the far side
    peeked through a gap between two near faces."""
    differ = (ours != every).any(-1)
    assert differ.sum() <= max(5, 1e-4 * _on_brain(every).sum()), differ.sum()


def _opened(make_napari_viewer, model_path, qtbot):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    viewer.add_points(np.zeros((1, 3)), size=1)  # the user selected another layer
    scene = scene_for_layer(layer)
    # measured on a worker a moment after the model opened
    qtbot.waitUntil(lambda: scene.orientation(measure=False) is not None, timeout=20_000)
    brain.map_choice.value = "space"
    settle(80)
    return viewer, layer, brain, scene


def test_back_faces_skipped_with_the_same_picture(make_napari_viewer, model_path, qtbot,
                                                  monkeypatch):  # fmt: skip
    viewer, layer, brain, scene = _opened(make_napari_viewer, model_path, qtbot)
    assert scene.orientation() == 1  # fsaverage's inflated hemispheres: closed, outward
    texts = [b.text for b in brain.view_buttons]
    for view in ("lateral", "medial", "posterior", "ventral"):
        brain.view_buttons[texts.index(view)].native.click()
        settle(80)
        ours, every, wrong, side = _pictures(viewer, layer, monkeypatch)
        assert side in ("front", "back"), view
        _same_but_for_edges(ours, every)
        brain_px = _on_brain(every).sum()
        assert brain_px > 1000
        # the other side culled: the near faces vanish
        assert (wrong != every).any(-1).sum() > 0.3 * brain_px, view

    # the user turns the camera round to the far side, then mirrors the layer
    viewer.camera.angles = tuple(np.add(viewer.camera.angles, (0.0, 180.0, 0.0)))
    settle(80)
    ours, every, wrong, side = _pictures(viewer, layer, monkeypatch)
    _same_but_for_edges(ours, every)
    assert (wrong != every).any(-1).sum() > 0.3 * _on_brain(every).sum()
    before = side
    layer.scale = (1.0, 1.0, -1.0)
    settle(80)
    ours, every, wrong, side = _pictures(viewer, layer, monkeypatch)
    assert side != before  # a mirror turns the faces' winding on the screen
    _same_but_for_edges(ours, every)
    assert (wrong != every).any(-1).sum() > 0.3 * _on_brain(every).sum()


def test_nothing_culled_when_the_inside_could_show(make_napari_viewer, model_path, qtbot):
    viewer, layer, brain, scene = _opened(make_napari_viewer, model_path, qtbot)
    node = mesh_visual(viewer, layer)
    assert _culling.cull_side(layer, node) in ("front", "back")

    layer.opacity = 0.5  # see-through: the far side shows
    settle(50)
    assert _culling.cull_side(layer, node) is False
    layer.opacity = 1.0
    layer.blending = "translucent"
    assert _culling.cull_side(layer, node) is False
    layer.blending = "opaque"
    colours = np.array(layer.vertex_colors)
    colours[0, 3] = 0.5  # one see-through vertex
    layer.vertex_colors = colours
    assert _culling.cull_side(layer, node) is False
    layer.vertex_colors = scene.colors()
    settle(50)
    assert _culling.cull_side(layer, node) in ("front", "back")

    # the 2D view draws the mesh flattened: nothing to skip
    viewer.dims.ndisplay = 2
    settle(50)
    assert _culling.cull_side(layer, node) is False
    viewer.dims.ndisplay = 3
    settle(50)
    assert _culling.cull_side(layer, node) in ("front", "back")

    # a mesh kind not measured yet: every face is drawn until the worker has measured it
    brain.mesh_choice.value = "sphere"
    assert scene.orientation(measure=False) is None
    assert _culling.cull_side(layer, node) is False
    qtbot.waitUntil(lambda: scene.orientation(measure=False) is not None, timeout=20_000)
    assert _culling.cull_side(layer, node) in ("front", "back")

    # a mesh that is not closed: the inside shows through the hole
    scene._cache[("orientation", scene.kind)] = 0
    assert _culling.cull_side(layer, node) is False


@pytest.mark.parametrize("kind", ["pial"])
def test_other_closed_kinds(make_napari_viewer, model_path, qtbot, monkeypatch, kind):
    viewer, layer, brain, scene = _opened(make_napari_viewer, model_path, qtbot)
    brain.mesh_choice.value = kind
    qtbot.waitUntil(lambda: scene.orientation(measure=False) is not None, timeout=20_000)
    assert scene.orientation() == 1
    settle(80)
    ours, every, wrong, side = _pictures(viewer, layer, monkeypatch)
    assert side in ("front", "back")
    _same_but_for_edges(ours, every)
    assert (wrong != every).any(-1).sum() > 0.3 * _on_brain(every).sum()


@pytest.mark.parametrize("dock_first", [True, False])
def test_a_turned_camera_is_culled_before_any_switch(make_napari_viewer, model_path, qtbot,
                                                     monkeypatch, dock_first):  # fmt: skip
    """The user opens a model and drags the camera round before touching the panel: those
    frames skip the far faces too, whether Brain maps was docked before or after."""
    viewer = make_napari_viewer(show=True)
    if dock_first:
        dock(viewer, "Brain maps")
    layer = open_model(viewer, model_path)
    if not dock_first:
        dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    qtbot.waitUntil(lambda: scene.orientation(measure=False) is not None, timeout=20_000)
    viewer.camera.angles = tuple(np.add(viewer.camera.angles, (0.0, 40.0, 0.0)))
    settle(80)
    ours, every, wrong, side = _pictures(viewer, layer, monkeypatch)
    assert side in ("front", "back")
    _same_but_for_edges(ours, every)
    assert (wrong != every).any(-1).sum() > 0.3 * _on_brain(every).sum()
