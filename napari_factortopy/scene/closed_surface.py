"""Whether a mesh closes a surface, and which way its faces turn.

A renderer may skip the faces that turn away from the camera (back-face culling) only
when nothing of the inside can be seen: every hemisphere mesh must be closed (each
edge shared by exactly two faces, walked in opposite directions: a consistent
orientation) and all its pieces must turn the same way. FreeSurfer's surfaces (white,
pial, inflated, sphere) are closed with outward faces; a flat patch is cut open, and a
user's mesh may be anything, so this is measured, never assumed.

Orientation follows the right-hand rule: a face ``(a, b, c)`` is outward when
``(b − a) × (c − a)`` points out of the enclosed volume, so that it is seen
counter-clockwise from outside. A closed, consistently oriented surface is outward
when its signed volume ``Σ a · (b × c) / 6`` is positive.
"""

from __future__ import annotations

import numpy as np

__all__ = ["closed_orientation", "surface_orientation"]


def closed_orientation(vertices: np.ndarray, faces: np.ndarray) -> int:
    """Which way a closed mesh's faces turn.

    Parameters
    ----------
    vertices : array of shape (n, 3)
    faces : int array of shape (m, 3)

    Returns
    -------
    int
        +1 when every edge is walked once in each direction (closed, consistently
        oriented) and every connected piece has a positive signed volume (outward
        faces); −1 when every piece is inward; 0 otherwise: open (a hole, a cut patch),
        non-manifold, inconsistently oriented, pieces turned different ways, a piece
        without volume, or no faces.
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    n = len(vertices)
    if faces.ndim != 2 or faces.shape[1:] != (3,) or len(faces) == 0 or vertices.ndim != 2:
        return 0
    if vertices.shape[1:] != (3,) or faces.min() < 0 or faces.max() >= n:
        return 0
    tail = faces.ravel()
    head = faces[:, [1, 2, 0]].ravel()
    walked = np.sort(tail * n + head)  # each directed edge: once, and its reverse once
    if (np.diff(walked) == 0).any() or not np.array_equal(walked, np.sort(head * n + tail)):
        return 0
    volume6 = _volume6(vertices, faces)
    piece = _pieces(n, tail, head)[faces[:, 0]]
    volumes = np.bincount(piece, weights=volume6)
    # pieces of no volume (a flat closed sheet) have no outside
    extent = float(np.ptp(vertices, axis=0).max()) or 1.0
    tiny = 1e-9 * extent**3
    present = np.bincount(piece) > 0
    signs = np.where(volumes > tiny, 1, np.where(volumes < -tiny, -1, 0))[present]
    if (signs == 0).any() or len(set(signs.tolist())) != 1:
        return 0
    return int(signs[0])


def _volume6(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(m,) six times each face's signed volume ``a · (b × c)``, written out per
    coordinate (at fsaverage7 ≈ 45 ms, against ≈ 85 ms for ``np.cross`` on (m, 3) gathers)."""
    x, y, z = (np.ascontiguousarray(vertices[:, k]) for k in range(3))
    corner = np.ascontiguousarray(faces.T)
    ax, ay, az = x[corner[0]], y[corner[0]], z[corner[0]]
    bx, by, bz = x[corner[1]], y[corner[1]], z[corner[1]]
    cx, cy, cz = x[corner[2]], y[corner[2]], z[corner[2]]
    return ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)


def _pieces(n: int, tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """(n,) connected-piece label of every vertex over the edges ``tail → head``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(tail), np.int8), (tail, head)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def surface_orientation(meshes) -> int:
    """Which way both hemispheres of a mesh set turn (:func:`closed_orientation`).

    Parameters
    ----------
    meshes : MeshSet

    Returns
    -------
    int
        +1 when both hemispheres are closed with outward faces, −1 when both are closed
        with inward faces, 0 otherwise (a flat patch, a hole, or the two differ).
    """
    if meshes.kind == "flat":
        return 0
    turns = {closed_orientation(meshes.vertices[h], meshes.faces[h]) for h in meshes.vertices}
    return turns.pop() if len(turns) == 1 else 0
