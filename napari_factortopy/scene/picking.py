"""Which displayed vertex a click hits: a ray cast through a KD-tree of the vertices.

:class:`~napari_factortopy.scene.brain.BrainScene` keeps one :class:`VertexRays` per mesh
kind and view (:func:`vertex_rays`) and answers napari's click ray with
:func:`first_hit`; :class:`Pick` says what was hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Pick", "VertexRays", "first_hit", "vertex_rays"]


@dataclass(frozen=True)
class Pick:
    """What a click hit.

    Attributes
    ----------
    mesh_index : int
        Index into the displayed (both-hemisphere) vertices.
    hemi : str
    hemi_vertex : int
        Index in the hemisphere's mesh.
    row : int or None
        Row in the model's arrays (None for an unmodelled vertex).
    """

    mesh_index: int
    hemi: str
    hemi_vertex: int
    row: int | None


class VertexRays(NamedTuple):
    """The displayed vertices, ready for ray casts.

    Attributes
    ----------
    tree : scipy.spatial.cKDTree
        Over the vertices, shape (n, 3).
    radius : float
        The 90th-percentile edge length (1 for a mesh without faces).
    lo, hi : array of shape (3,)
        The vertices' bounding box.
    """

    tree: object
    radius: float
    lo: np.ndarray
    hi: np.ndarray


def vertex_rays(verts: np.ndarray, faces: np.ndarray) -> VertexRays:
    """A :class:`VertexRays` for ``verts (n, 3)`` and ``faces (m, 3)``."""
    from scipy.spatial import cKDTree

    edges = np.linalg.norm(verts[faces[:, 0]] - verts[faces[:, 1]], axis=1)
    radius = float(np.percentile(edges, 90)) if len(edges) else 1.0
    return VertexRays(cKDTree(verts), radius, verts.min(0), verts.max(0))


def first_hit(rays: VertexRays, position, direction) -> tuple[float, int] | None:
    """Where a click ray first meets the displayed vertices.

    The ray ``position + t · direction`` is sampled through the bounding box in
    steps of half the (90th-percentile) edge length; the first sample with a
    vertex within one edge length picks that vertex.

    Parameters
    ----------
    rays : VertexRays
    position : array of shape (3,)
        A point on the ray (napari's click position, data coordinates).
    direction : array of shape (3,)
        Viewing direction (from the camera into the scene).

    Returns
    -------
    (t, vertex) or None
        Ray parameter of the hit along the unit ``direction`` from ``position``
        (the depth, to choose among several surfaces) and the vertex index;
        None when the ray misses.
    """
    tree, radius, lo, hi = rays
    p = np.asarray(position, np.float64)
    d = np.asarray(direction, np.float64)
    if not np.all(np.isfinite(d)) or np.linalg.norm(d) == 0:
        return None
    d = d / np.linalg.norm(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - radius - p) / d, (hi + radius - p) / d
    t_in = np.nanmax(np.where(d != 0, np.minimum(t1, t2), -np.inf))
    t_out = np.nanmin(np.where(d != 0, np.maximum(t1, t2), np.inf))
    if not t_in < t_out:
        return None
    t = np.arange(t_in, t_out, radius / 2.0)
    dist, idx = tree.query(p + t[:, None] * d, distance_upper_bound=radius)
    hit = np.flatnonzero(np.isfinite(dist))
    if hit.size == 0:
        return None
    return float(t[hit[0]]), int(idx[hit[0]])
