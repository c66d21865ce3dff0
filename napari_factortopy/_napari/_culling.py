"""The faces a closed brain turns away from the camera are not drawn (issue 22, item 6).

A hemisphere's far side is hidden behind its near side, yet a renderer that draws every
face shades both: at fsaverage7 that is 655,360 faces per frame, and on a software
renderer (llvmpipe) the frame, not this plugin's work, was most of a map switch.
OpenGL can skip the faces that turn away (back-face culling); for a closed surface seen
from outside the picture is the same, and a frame costs ≈ 45 ms less at fsaverage7
(BENCHMARKS.md).

That holds only when nothing of the inside can show, so each frame checks, before the
mesh is drawn:

- the scene's mesh kind is closed and consistently oriented, all pieces turned the same
  way (:meth:`BrainScene.orientation`, measured on a worker after a switch: until then,
  nothing is culled);
- the layer hides what lies behind it (``opaque`` blending, full opacity, every vertex
  colour opaque) and no clipping plane cuts it open;
- the drawn mesh is the scene's (same vertex and face counts).

Which side is the back follows from the mesh's orientation, from how napari hands the
mesh to vispy (axes and face corners reversed) and from the sign of the Jacobian of
vispy's map from the mesh to normalised device coordinates (a mirrored layer scale or
camera flips it), so it is right for every camera. Any miss draws every face, as napari does.
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_factortopy._napari._layers import META_KEY
from napari_factortopy._napari._mesh_update import mesh_visual
from napari_factortopy.scene.brain import BrainScene

__all__ = ["cull_side", "hide_back_faces"]

#: Marks the per-frame check (vispy's visuals take no new attributes).
_MARK = "_factortopy_culls_back_faces"


def hide_back_faces(layer, viewer) -> bool:
    """Let the canvas skip the faces ``layer``'s closed brain turns away from the camera.

    Installs, once per mesh visual, a check that runs before every draw of the layer and
    sets OpenGL's face culling from :func:`cull_side`.

    Parameters
    ----------
    layer : napari.layers.Surface
        A brain layer made by this plugin.
    viewer : napari.Viewer
        The viewer that draws it.

    Returns
    -------
    bool
        Whether the check is in place (False when the layer is not drawn yet or vispy's
        visual is not what this expects: then every face is drawn).
    """
    node = mesh_visual(viewer, layer)
    if node is None:
        return False
    configure = getattr(node, "_configure_gl_state", None)
    if getattr(configure, _MARK, False):
        return True
    state = getattr(getattr(node, "_vshare", None), "gl_state", None)
    if configure is None or not isinstance(state, dict):
        return False
    real = weakref.ref(getattr(layer, "__wrapped__", layer))

    def configure_with_culling() -> None:
        live = real()
        node._vshare.gl_state["cull_face"] = False if live is None else cull_side(live, node)
        configure()

    setattr(configure_with_culling, _MARK, True)
    node._configure_gl_state = configure_with_culling
    return True


def cull_side(layer, node) -> str | bool:
    """The faces to skip when drawing ``layer`` with vispy ``node``: ``"front"`` or
    ``"back"`` (OpenGL's names: counter-clockwise on the screen is front), or False to
    draw them all."""
    try:
        scene = layer.metadata.get(META_KEY, {}).get("scene")
        if not isinstance(scene, BrainScene) or layer.blending != "opaque":
            return False
        # napari blends the first layer with the canvas whatever its blending: a face
        # that is not opaque would let the inside show
        colours = layer.vertex_colors
        if layer.opacity < 1 or colours is None or len(colours) == 0:
            return False
        if colours.shape[1:] == (4,) and colours[:, 3].min() < 1:
            return False
        if any(plane.enabled for plane in layer.experimental_clipping_planes):
            return False
        turn = scene.orientation(measure=False)  # never measured inside a frame
        vertices, faces = layer.data[0], layer.data[1]
        drawn, drawn_faces = node.mesh_data.get_vertices(), node.mesh_data.get_faces()
        if not turn or drawn is None or len(drawn) != len(vertices) or len(vertices) == 0:
            return False
        if drawn_faces is None or len(faces) != len(drawn_faces):
            return False
        kind_vertices, kind_faces = scene.layer_data()
        if len(kind_vertices) != len(vertices) or len(kind_faces) != len(faces):
            return False
        handed = _drawn_parity(vertices[0], drawn[0], faces[0], drawn_faces[0])
        screen = _screen_parity(node)
        if not handed or not screen:
            return False
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return False
    # outward faces (turn · handed · screen > 0 in device coordinates) seen from outside
    # run clockwise on the screen: OpenGL's back faces are the visible ones
    return "front" if turn * handed * screen > 0 else "back"


def _drawn_parity(vertex, drawn_vertex, face, drawn_face) -> int:
    """How vispy's mesh mirrors the layer's: the product of the axis order (−1 when
    the vertex's axes are reversed, napari's 3D convention) and the winding (−1 when a
    face's corners are reversed, napari's correction of it); 0 when either is neither."""
    vertex = np.asarray(vertex, np.float64)
    drawn_vertex = np.asarray(drawn_vertex, np.float64)
    if vertex.shape != (3,) or drawn_vertex.shape != (3,):
        return 0
    tol = 1e-4 * (1.0 + np.abs(vertex).max())
    if np.allclose(drawn_vertex, vertex[::-1], atol=tol):
        axes = -1
    elif np.allclose(drawn_vertex, vertex, atol=tol):
        axes = 1
    else:
        return 0
    face, drawn_face = [int(i) for i in face], [int(i) for i in drawn_face]
    turns = [face[k:] + face[:k] for k in range(3)]  # the same winding, any first corner
    if drawn_face in turns:
        return axes
    if drawn_face[::-1] in turns:
        return -axes
    return 0


def _screen_parity(node) -> int:
    """Sign of the Jacobian determinant of vispy's map from the node's coordinates to
    normalised device coordinates, at the mesh's centre (0 when degenerate, e.g. a 2D
    view)."""
    bounds = [node._compute_bounds(axis, node) for axis in range(3)]
    if any(b is None for b in bounds):
        return 0
    lo, hi = np.array(bounds, np.float64).T
    centre = (lo + hi) / 2
    step = 1e-3 * max(float((hi - lo).max()), 1e-6)
    points = np.vstack([centre, centre + step * np.eye(3)])
    mapped = np.asarray(node.transforms.get_transform("visual", "render").map(points), float)
    w = mapped[:, 3:4]
    if (w <= 0).any():  # behind the camera
        return 0
    ndc = mapped[:, :3] / w
    det = np.linalg.det(ndc[1:] - ndc[0])
    scale = np.abs(ndc[1:] - ndc[0]).max() ** 3
    if not np.isfinite(det) or abs(det) <= 1e-6 * scale:
        return 0
    return 1 if det > 0 else -1
