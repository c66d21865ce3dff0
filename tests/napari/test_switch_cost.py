"""Issue #22, item 6: what a map, view or mesh switch costs the canvas, driven through
the shown viewer (reader, Plugins menu, the panel's own controls).

- A map switch sends only the new colours, a view or mesh switch only the moved
  vertices and the colours: the mesh visual keeps its mesh, and the picture is the one
  the plain path (napari re-sending the whole mesh) draws.
- A view switch is drawn in one frame, not two (the ROI names layer used to ask for a
  second frame when the camera's zoom changed).
- No switch formats a scene (arrays and all) into napari's task descriptions.
"""

from __future__ import annotations

import numpy as np

from napari_factortopy._napari._background import NamedJob
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._mesh_update import mesh_visual, recolour

from ._drive import canvas_shot, dock, open_model, settle


def _frames(viewer):
    """A counter of the canvas's drawn frames."""
    count = [0]
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.draw.connect(lambda _e=None: count.__setitem__(0, count[0] + 1))
    return count


def test_map_switch_sends_only_the_colours(make_napari_viewer, model_path, qtbot):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    viewer.add_points(np.zeros((1, 3)), size=1)  # the user selected another layer
    settle(50)
    node = mesh_visual(viewer, layer)
    mesh_before = node.mesh_data
    bound = node.shared_program.vert["base_color"]
    first = canvas_shot(viewer)

    for name in ("scale", "score", "space"):  # several switches refill one buffer
        brain.map_choice.value = name
        settle(50)
    fast = canvas_shot(viewer)
    assert node.mesh_data is mesh_before, "the switch re-sent the whole mesh"
    assert node.shared_program.vert["base_color"] is bound, "a new colour buffer"
    changed = np.abs(fast[..., :3].astype(int) - first[..., :3]).sum(-1) > 30
    assert changed.sum() > 100, "the map switch did not change the picture"
    np.testing.assert_array_equal(layer.vertex_colors, scene_for_layer(layer).colors())

    # the plain path (napari hands vispy the whole mesh again) draws the same picture
    layer.vertex_colors = np.array(layer.vertex_colors)
    settle(50)
    assert node.mesh_data is not mesh_before
    plain = canvas_shot(viewer)
    np.testing.assert_array_equal(fast, plain)


def test_recolour_falls_back_to_the_plain_path(make_napari_viewer, model_path):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    settle(50)
    n = len(layer.data[0])
    red = np.tile(np.array([[1.0, 0.0, 0.0, 1.0]], np.float32), (n, 1))
    # no viewer: the plain path, which still colours the layer
    assert recolour(layer, red) is False
    np.testing.assert_array_equal(layer.vertex_colors, red)
    settle(50)
    shot = canvas_shot(viewer)
    on = shot[..., :3].astype(int).sum(-1) > 60
    assert (shot[on][:, 0] > 2 * shot[on][:, 2].astype(int) + 20).mean() > 0.9
    # a mesh update still pending (new vertices not drawn yet): the plain path too
    layer.data = (layer.data[0] + 1.0, layer.data[1])
    assert recolour(layer, red[:, [2, 1, 0, 3]], viewer) is False
    settle(50)
    # with everything drawn, the fast path; and the colours reach the canvas
    assert recolour(layer, red, viewer) is True
    settle(50)
    again = canvas_shot(viewer)
    on = again[..., :3].astype(int).sum(-1) > 60
    assert (again[on][:, 0] > 2 * again[on][:, 2].astype(int) + 20).mean() > 0.9


def test_view_switch_is_drawn_once(make_napari_viewer, model_path, monkeypatch):
    from napari_factortopy.scene.brain import BrainScene

    viewer = make_napari_viewer(show=True)
    open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    viewer.add_points(np.zeros((1, 3)), size=1, name="a selected points layer")
    settle(100)
    frames = _frames(viewer)
    formatted = []
    monkeypatch.setattr(BrainScene, "__repr__", lambda self: formatted.append(1) or "scene")
    buttons = {b.text: b for b in brain.view_buttons}
    for view in ("ventral", "lateral", "posterior"):
        frames[0] = 0
        buttons[view].native.click()
        settle(150)
        assert frames[0] == 1, f"{view}: {frames[0]} frames drawn"
    assert not formatted, "a switch printed the scene into a task description"


def test_view_switch_does_not_resend_the_colours(make_napari_viewer, model_path, monkeypatch):
    """A view keeps the map: only the positions are unrolled and sent (the colours were
    sent again before, ≈ 25 ms at fsaverage7); a mesh kind has its own colours."""
    from napari_factortopy._napari import _mesh_update

    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    settle(50)
    sent = []
    send = _mesh_update._send_unrolled
    monkeypatch.setattr(
        _mesh_update,
        "_send_unrolled",
        lambda node, name, values: sent.append(values.shape) or send(node, name, values),
    )
    buttons = {b.text: b for b in brain.view_buttons}
    colours = layer.vertex_colors
    buttons["ventral"].native.click()
    settle(100)
    assert sent == [(len(layer.data[0]), 3)], sent  # the positions only
    assert layer.vertex_colors is colours
    sent.clear()
    brain.mesh_choice.value = "sphere"
    settle(100)
    assert sorted(sent) == [(len(layer.data[0]), 3), (len(layer.data[0]), 4)], sent
    np.testing.assert_array_equal(layer.vertex_colors, scene_for_layer(layer).colors())


def test_named_job_runs_and_prints_its_name():
    calls = []
    job = NamedJob(lambda: calls.append(1) or 7, "factortopy: preparing clicks")
    assert job() == 7 and calls == [1]
    assert repr(job) == str(job) == "factortopy: preparing clicks"


def test_view_and_mesh_switches_send_only_the_moved_vertices(make_napari_viewer, model_path):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    settle(50)
    node = mesh_visual(viewer, layer)
    mesh_before = node.mesh_data
    buttons = {b.text: b for b in brain.view_buttons}
    for action in (
        buttons["ventral"].native.click,
        lambda: setattr(brain.mesh_choice, "value", "sphere"),
        buttons["posterior"].native.click,
    ):
        shown = canvas_shot(viewer)
        action()
        settle(100)
        fast = canvas_shot(viewer)
        assert node.mesh_data is mesh_before, "the switch re-sent the whole mesh"
        moved = np.abs(fast[..., :3].astype(int) - shown[..., :3]).sum(-1) > 30
        assert moved.sum() > 1000, "the switch did not change the picture"
        scene = scene_for_layer(layer)
        np.testing.assert_array_equal(layer.data[0], scene.layer_data()[0])
        # the plain path (napari hands vispy the whole mesh again) draws the same picture
        layer.data = (np.array(layer.data[0]), layer.data[1])
        layer.vertex_colors = np.array(layer.vertex_colors)
        settle(100)
        assert node.mesh_data is not mesh_before
        np.testing.assert_array_equal(fast, canvas_shot(viewer))
        mesh_before = node.mesh_data


def test_reposition_falls_back_when_something_follows_the_vertices(make_napari_viewer, model_path):
    """Lighting needs the new vertices' normals: with shading on, the plain path; other
    faces, the plain path."""
    from napari_factortopy._napari._mesh_update import reposition

    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    settle(50)
    verts, faces = layer.data[0], layer.data[1]
    assert reposition(layer, (verts + 1.0, faces), viewer) is True
    settle(50)
    layer.shading = "smooth"
    settle(50)
    assert reposition(layer, (verts + 2.0, faces), viewer) is False
    np.testing.assert_array_equal(layer.data[0], verts + 2.0)
    layer.shading = "none"
    settle(50)
    other = faces[:, [1, 2, 0]]  # the same triangles, listed otherwise: other faces
    assert reposition(layer, (verts, other), viewer) is False


def test_warm_up_waits_for_the_last_switch(qtbot):
    """A burst of view switches builds one pick structure, the last view's, after the
    delay (the frames are drawn on cores the warm-up does not take)."""
    from qtpy.QtWidgets import QWidget

    from napari_factortopy._napari._background import DeferredWarmUp

    owner = QWidget()
    qtbot.addWidget(owner)
    ran = []
    warm = DeferredWarmUp(owner, delay_ms=200)
    for view in ("ventral", "posterior", "medial"):
        warm.request(lambda v=view: ran.append(v))
        qtbot.wait(50)
    assert ran == [] and warm.worker is None  # still waiting after the last request
    qtbot.waitUntil(lambda: ran == ["medial"], timeout=5000)
    qtbot.wait(300)
    assert ran == ["medial"]


def test_send_unrolled_refills_the_bound_buffer_or_binds_a_new_one():
    """The per-corner values sent equal a plain loop over the faces' corners; a buffer of
    the same layout is refilled in place, any other is replaced (no GL needed: the
    pending upload is read from the buffer's command queue)."""
    from vispy.gloo import VertexBuffer
    from vispy.visuals import MeshVisual

    from napari_factortopy._napari._mesh_update import _send_unrolled

    rng = np.random.default_rng(0)
    vertices = rng.random((6, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0], [1, 3, 5]])
    node = MeshVisual(vertices, faces, vertex_colors=rng.random((6, 4)))
    node._update_data()  # what the first draw does: vispy binds its own buffers
    bound = node.shared_program.vert["base_color"]
    bound._glir.clear()

    def pending(buffer):
        (data,) = [c[3] for c in buffer._glir.clear() if c[0] == "DATA"]
        return data.view(np.float32).reshape(len(data), -1)

    colours = rng.random((6, 4)).astype(np.float32)
    _send_unrolled(node, "base_color", colours)
    assert node.shared_program.vert["base_color"] is bound
    loop = np.array([colours[v] for face in node.mesh_data.get_faces() for v in face])
    np.testing.assert_array_equal(pending(bound), loop)

    # another layout (3 values per vertex where 4 were bound): a new buffer
    _send_unrolled(node, "base_color", colours[:, :3].copy())
    replaced = node.shared_program.vert["base_color"]
    assert isinstance(replaced, VertexBuffer) and replaced is not bound
    np.testing.assert_array_equal(pending(replaced), loop[:, :3])
