"""A map switch sends only the new colours to the canvas (issue 22, item 6).

napari's Surface layer answers any change of ``vertex_colors`` by handing the whole
mesh to vispy again: vispy unrolls the vertices and the colours per face, rebuilds
the wireframe filter's per-face barycentric buffer and uploads all three. At fsaverage7
(2 × 327,680 faces) that is ≈ 85–115 ms of numpy per map switch, where the only thing
that changed is one (n, 4) colour array.

:func:`recolour` sets the layer's colours as napari does (the layer's state, its
``vertex_colors`` and its slice, stay napari's own), holds back the one event that
would resend the mesh, and replaces just the colour buffer of the layer's mesh visual,
unrolled over the faces exactly as vispy unrolls it. When the visual is not what this
expects (another napari or vispy, a layer not shown in 3D, a different vertex count,
a mesh update still pending), it falls back to the plain ``layer.vertex_colors = …``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mesh_visual", "recolour"]


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


def _fast_path_holds(node, layer, colours: np.ndarray, viewer) -> bool:
    """Whether the node shows this layer's mesh with per-vertex colours, nothing pending."""
    if node is None or getattr(node, "_data_changed", True):
        return False  # a full mesh update is still to come: let it carry the colours
    md = node.mesh_data
    old = layer.vertex_colors
    return (
        layer.ndim == 3
        and viewer.dims.ndisplay == 3
        and not md.is_empty()
        and md._vertex_colors is not None
        and old is not None
        and old.shape == colours.shape
        and md.n_vertices == len(colours)
        and colours.ndim == 2
        and colours.shape[1] == 4
    )


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
        True when only the colour buffer was replaced; False when the layer took the
        colours the plain way (``layer.vertex_colors = colours``). The picture is the
        same either way.
    """
    colours = np.ascontiguousarray(colours, dtype=np.float32)
    node = mesh_visual(viewer, layer)
    if not _fast_path_holds(node, layer, colours, viewer):
        layer.vertex_colors = colours
        return False
    from vispy.gloo import VertexBuffer

    real = getattr(layer, "__wrapped__", layer)
    with real.events.set_data.blocker():  # the event that would resend the mesh
        real.vertex_colors = colours
    md = node.mesh_data
    md.set_vertex_colors(colours)  # a later full update (a new view) starts from these
    faces = np.asarray(md.get_faces()).ravel()
    # vispy's own unrolling: one colour per face corner, in the vertices' face order
    node.shared_program.vert["base_color"] = VertexBuffer(np.take(colours, faces, axis=0))
    node.update()
    return True
