"""The meshes a brain is drawn on and where its two hemispheres go on the screen.

Display coordinates
-------------------
Each hemisphere is rotated into the screen frame of a view
(:func:`~napari_factortopy.scene.views.view_basis`), centred, and placed left or right
of the other with a gap. The columns of the napari data are then
``(toward the camera, screen down, screen right)``, so napari's default 3-D camera
(looking along the first data axis) shows every view preset without moving.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from napari_factortopy.scene.views import view_basis

__all__ = [
    "HEMIS",
    "MESH_KINDS",
    "VIEWS",
    "MeshSet",
    "hemisphere_caption",
    "hemisphere_order",
    "layout",
    "load_meshset",
    "roi_boundary",
]

#: Mesh kinds offered by the mesh switch.
MESH_KINDS = ("inflated", "sphere", "pial", "flat")
#: Camera presets.
VIEWS = ("lateral", "medial", "ventral", "posterior", "flat")
HEMIS = ("lh", "rh")


@dataclass(frozen=True)
class MeshSet:
    """Both hemispheres of one mesh kind, with curvature.

    Attributes
    ----------
    name : str
        Mesh name (``"fsaverage5"`` …).
    kind : str
        One of :data:`MESH_KINDS`.
    vertices : dict hemi → array of shape (n_h, 3)
    faces : dict hemi → int array of shape (m_h, 3)
    curv : dict hemi → array of shape (n_h,)
    """

    name: str
    kind: str
    vertices: dict
    faces: dict
    curv: dict

    def n(self, hemi: str) -> int:
        return len(self.vertices[hemi])


@lru_cache(maxsize=16)
def _load_meshset(name: str, kind: str) -> MeshSet:
    from napari_factortopy.data import surfaces

    verts, faces, curv = {}, {}, {}
    for hemi in HEMIS:
        mesh = surfaces.load_mesh(name, kind, hemi)
        verts[hemi], faces[hemi] = mesh.vertices, mesh.faces
        try:
            curv[hemi] = surfaces.load_morph(name, "curv", hemi)
        except (surfaces.SurfaceError, ValueError, OSError):
            curv[hemi] = np.zeros(len(mesh.vertices), np.float32)
    return MeshSet(name, kind, verts, faces, curv)


def load_meshset(name: str, kind: str) -> MeshSet:
    """Both hemispheres of an fsaverage mesh (cached in the process).

    Raises
    ------
    napari_factortopy.data.surfaces.SurfaceError
        When the mesh is not on this machine.
    """
    return _load_meshset(name, kind)


def layout(meshes: MeshSet, view: str, gap: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Both hemispheres side by side in display coordinates (see the module notes).

    Parameters
    ----------
    meshes : MeshSet
    view : str
        One of :data:`VIEWS` (``"flat"``, or a flat mesh, uses the mesh's x and y).
    gap : float
        Space between the hemispheres (mesh units).

    Returns
    -------
    vertices : array of shape (n_lh + n_rh, 3), float32
        Columns ``(toward camera, screen down, screen right)``; left hemisphere first.
    faces : int array of shape (m_lh + m_rh, 3)
    """
    if view == "flat" and meshes.kind != "flat":
        raise ValueError(
            f"the flat view needs the flat mesh; this is the {meshes.kind} mesh "
            "(a 3-D mesh seen flat would be squashed into a plane)"
        )
    placed = {}
    for hemi in HEMIS:
        p = np.asarray(meshes.vertices[hemi], np.float64)
        if meshes.kind == "flat":
            right, up, toward = p[:, 0], p[:, 1], np.zeros(len(p))
        else:
            r, u, f = view_basis(view, hemi)
            right, up, toward = p @ r, p @ u, -(p @ f)
        scr = np.stack([toward, -up, right], axis=1)
        lo, hi = scr.min(0), scr.max(0)
        placed[hemi] = scr - (lo + hi) / 2.0
    left, right_h = hemisphere_order(view, meshes.kind)
    wl = np.ptp(placed[left][:, 2]) if len(placed[left]) else 0.0
    wr = np.ptp(placed[right_h][:, 2]) if len(placed[right_h]) else 0.0
    placed[left][:, 2] -= wl / 2 + gap / 2
    placed[right_h][:, 2] += wr / 2 + gap / 2
    verts = np.concatenate([placed["lh"], placed["rh"]]).astype(np.float32)
    faces = np.concatenate(
        [meshes.faces["lh"], np.asarray(meshes.faces["rh"]) + meshes.n("lh")]
    ).astype(np.int64)
    return verts, faces


def hemisphere_caption(view: str, kind: str = "inflated") -> str:
    """ "L | R" or "R | L": the hemispheres on the screen's left and right in a view."""
    left, right = hemisphere_order(view, kind)
    name = {"lh": "L", "rh": "R"}
    return f"{name[left]} | {name[right]}"


def hemisphere_order(view: str, kind: str = "inflated") -> tuple[str, str]:
    """Which hemisphere is drawn on the screen's left and which on its right.

    Views that see both hemispheres from one camera (posterior, anterior, ventral,
    dorsal) place them where that camera sees them: from behind (or above) the left
    hemisphere is on the left; from the front (or below, anterior up) it is on the
    right. Per-hemisphere views (lateral, medial) and the flat patches put the left
    hemisphere on the left.

    Returns
    -------
    (screen left, screen right) : tuple of "lh" / "rh"
    """
    if kind == "flat" or view in ("lateral", "medial", "flat"):
        return HEMIS
    right = view_basis(view, "lh")[0]  # screen right in RAS
    # screen right pointing to −x (the subject's left) puts the left hemisphere right
    return ("rh", "lh") if right[0] < 0 else HEMIS


def roi_boundary(faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Vertices on a border between ROI labels.

    Parameters
    ----------
    faces : int array of shape (m, 3)
    labels : int array of shape (n,)
        Label per mesh vertex (0 = none).

    Returns
    -------
    border : bool array of shape (n,)
        True for a vertex that shares an edge with a vertex of a smaller, non-zero label
        (one vertex wide, on one side of each border between two ROIs; the edge of
        the modelled area shows anyway, against curvature grey).
    """
    lab = np.asarray(labels)
    f = np.asarray(faces)
    border = np.zeros(len(lab), bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        for i, j in ((f[:, a], f[:, b]), (f[:, b], f[:, a])):
            border[i[(lab[i] > lab[j]) & (lab[j] > 0)]] = True
    return border
