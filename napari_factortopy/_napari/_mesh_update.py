"""A map or view switch sends only what changed to the canvas (issue 22, item 6).

napari's Surface layer answers any change of ``vertex_colors`` or ``data`` by handing
the whole mesh to vispy again: vispy unrolls the vertices and the colours per face,
rebuilds the wireframe filter's per-face barycentric buffer and uploads all three. At
fsaverage7 (2 × 327,680 faces) that is ≈ 85–115 ms of numpy per switch, where a map
switch changes one (n, 4) colour array and a view switch one (n, 3) vertex array.

:func:`recolour` and :func:`reposition` set the layer as napari does (the layer's own
state, its colours, data, extent and slice, stay napari's), hold back the one event
that would resend the mesh, and refill just that buffer of the layer's mesh visual in
place, unrolled over the faces exactly as vispy unrolls it. When the visual is not what this
expects (another napari or vispy, a layer not shown in 3D, a different vertex count or
other faces, shading, normals or a bounding box that follow the vertices, a mesh update
still pending), they fall back to the plain assignment.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mesh_visual", "recolour", "reposition"]


def mesh_visual(viewer, layer):
    """The vispy mesh visual that draws ``layer`` in ``viewer``, or None.

    Reaches into napari's canvas (``layer_to_visual``, not public API; napari hands
    panels proxies that warn on such access, so the real objects are asked, as
    ``fit_window`` does); every miss (an attribute renamed or gone, a layer not drawn
    yet) answers None.
    """
    if viewer is None:
        return None
    viewer = getattr(viewer, "__wrapped__", viewer)
    try:
        canvas = viewer.window._qt_viewer.canvas
        visual = canvas.layer_to_visual.get(getattr(layer, "__wrapped__", layer))
    except (AttributeError, RuntimeError):
        return None
    node = getattr(visual, "node", None)
    from vispy.visuals import MeshVisual

    return node if isinstance(node, MeshVisual) else None


def _drawn_per_vertex(node, layer, viewer) -> bool:
    """Whether the node shows this 3D layer's mesh with per-vertex colours, drawn (no
    full update pending, which would carry the change anyway)."""
    if node is None or getattr(node, "_data_changed", True):
        return False
    md = node.mesh_data
    return (
        layer.ndim == 3
        and viewer.dims.ndisplay == 3
        and not md.is_empty()
        and md._vertex_colors is not None
        and layer.vertex_colors is not None
        and md.n_vertices == len(layer.vertex_colors)
    )


def _corners(md) -> np.ndarray:
    """(3·faces,) vertex index of every face corner in the order vispy draws them.

    napari hands vispy its faces with the corners reversed, a strided view that numpy
    would copy (≈ 7 ms at fsaverage7) on every flattening; the flat copy is kept on the
    mesh data, for as long as it holds the same faces array.
    """
    faces = md.get_faces()
    kept = md.__dict__.get("_factortopy_corners")
    if kept is None or kept[0] is not faces:
        kept = (faces, np.ascontiguousarray(faces, dtype=np.intp).ravel())
        md.__dict__["_factortopy_corners"] = kept
    return kept[1]


def _send_unrolled(node, attribute: str, values: np.ndarray) -> None:
    """Send ``values`` (n, k), float32, to the node's per-corner vertex ``attribute``
    (``base_color`` or ``position``), unrolled over the faces in the order vispy draws
    them: (3·faces, k).

    The buffer already bound there is refilled in place when it has the same size and
    layout (OpenGL's ``glBufferSubData`` into the storage it has); a new buffer would
    allocate ≈ 31 MB of storage at fsaverage7 on every switch, which a software
    renderer pays for by touching fresh memory (≈ 90 ms on the first switch).
    """
    from vispy.gloo import VertexBuffer

    unrolled = np.take(values, _corners(node.mesh_data), axis=0)
    try:
        bound = node.shared_program.vert[attribute]
    except KeyError:
        bound = None
    if (
        isinstance(bound, VertexBuffer)
        and bound.nbytes == unrolled.nbytes
        and bound.dtype == np.dtype([("f0", unrolled.dtype, unrolled.shape[1:])])
    ):
        bound.set_data(unrolled)
    else:
        node.shared_program.vert[attribute] = VertexBuffer(unrolled)


def _only_moved(node, layer, data) -> bool:
    """Whether ``data`` moves the drawn mesh's vertices and nothing else depends on
    them: the same faces, no lighting (it needs the new vertices' normals), no texture,
    no normals or bounding box drawn."""
    vertices, faces = data
    try:
        return (
            len(vertices) == node.mesh_data.n_vertices
            and np.shape(vertices)[1:] == (3,)
            and layer.shading == "none"
            and layer.texture is None
            and not layer.normals.face.visible
            and not layer.normals.vertex.visible
            and not layer.bounding_box.visible
            and np.array_equal(layer.data[1], faces)
        )
    except AttributeError:  # a napari without one of these: the plain path
        return False


def recolour(layer, colours: np.ndarray, viewer=None) -> bool:
    """Set a surface layer's vertex colours, sending only the colours to the canvas.

    Parameters
    ----------
    layer : napari.layers.Surface
        A 3D surface layer (vertices (n, 3)) already coloured per vertex.
    colours : array of shape (n, 4)
        The new RGBA colour of every vertex, float in [0, 1].
    viewer : napari.Viewer, optional
        The viewer that draws the layer; without it the plain path is taken.

    Returns
    -------
    bool
        True when only the colour buffer was replaced, or nothing at all because the
        layer already shows this very array (a view switch keeps the map's colours);
        False when the layer took the colours the plain way
        (``layer.vertex_colors = colours``). The picture is the same either way.
    """
    colours = np.ascontiguousarray(colours, dtype=np.float32)
    if getattr(layer, "__wrapped__", layer).vertex_colors is colours:
        # every path that sets the canvas's colours sets the layer's to the same array
        return True
    node = mesh_visual(viewer, layer)
    if not (
        _drawn_per_vertex(node, layer, viewer)
        and colours.shape == (node.mesh_data.n_vertices, 4)
        and layer.vertex_colors.shape == colours.shape
    ):
        layer.vertex_colors = colours
        return False
    real = getattr(layer, "__wrapped__", layer)
    with real.events.set_data.blocker():  # the event that would resend the mesh
        real.vertex_colors = colours
    md = node.mesh_data
    md.set_vertex_colors(colours)  # a later full update (a new mesh) starts from these
    _send_unrolled(node, "base_color", colours)
    node.update()
    return True


def reposition(layer, data: tuple[np.ndarray, np.ndarray], viewer=None) -> bool:
    """Set a surface layer's ``(vertices, faces)``, sending only the moved vertices to
    the canvas when the faces are the same (a view or a mesh kind of one mesh).

    Parameters
    ----------
    layer : napari.layers.Surface
    data : (vertices (n, 3), faces (m, 3))
        The layer's new data.
    viewer : napari.Viewer, optional

    Returns
    -------
    bool
        True when only the position buffer was replaced; False when the layer took the
        data the plain way (``layer.data = data``).
    """
    vertices = data[0]
    node = mesh_visual(viewer, layer)
    real = getattr(layer, "__wrapped__", layer)
    if not (_drawn_per_vertex(node, layer, viewer) and _only_moved(node, real, data)):
        layer.data = data
        return False
    with real.events.set_data.blocker():
        real.data = data
    # as napari hands them to vispy: zyx order, float32
    moved = np.ascontiguousarray(np.asarray(vertices)[:, ::-1], dtype=np.float32)
    md = node.mesh_data
    md.set_vertices(moved)
    node._bounds = md.get_bounds()  # what vispy's set_data computes
    _send_unrolled(node, "position", moved)
    node.update()
    return True
