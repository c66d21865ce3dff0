"""How a surface is seen: the views' screen axes, their orthographic projection and the
lighting modes, shared by the off-screen renderer (:mod:`.surface_renderer`) and the
napari canvas's view presets.

View conventions (camera direction and screen axes, RAS coordinates x = right,
y = anterior, z = superior):

==========  ===================  ==========  =====================================
view        camera looks along   screen up   screen right
==========  ===================  ==========  =====================================
lateral     +x (lh), −x (rh)     +z          anterior on the left (lh), right (rh)
medial      −x (lh), +x (rh)     +z          anterior on the right (lh), left (rh)
posterior   +y (from behind)     +z          +x (left hemisphere on the left)
anterior    −y (from the front)  +z          −x
ventral     +z (from below)      +y          −x
dorsal      −z (from above)      +y          +x
flat        −z                   vertex y    vertex x (the mesh's x, y are used as is)
==========  ===================  ==========  =====================================
"""

from __future__ import annotations

import numpy as np

__all__ = ["LIGHTING", "VIEWS", "camera_basis", "lighting_mode", "project", "view_basis"]


#: Names of the supported views.
VIEWS = ("lateral", "medial", "posterior", "anterior", "ventral", "dorsal", "flat")

#: Lighting modes: "flat" keeps the map's colours exact, "shaded" adds a headlight.
LIGHTING = ("flat", "shaded")


def view_basis(view: str, hemi: str = "lh") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen axes of a view.

    Parameters
    ----------
    view : str
        One of :data:`VIEWS` other than "flat".
    hemi : {"lh", "rh"}

    Returns
    -------
    right, up, forward : arrays of shape (3,)
        Unit vectors: screen right, screen up, and the viewing direction (from the
        camera into the scene). ``right × up = −forward``, so a triangle whose outward
        normal faces the camera projects counter-clockwise.
    """
    if hemi not in ("lh", "rh"):
        raise ValueError(f"hemi must be 'lh' or 'rh'; got {hemi!r}")
    x, y, z = np.eye(3)
    sign = 1.0 if hemi == "lh" else -1.0
    table = {
        "lateral": (sign * x, z),
        "medial": (-sign * x, z),
        "posterior": (y, z),
        "anterior": (-y, z),
        "ventral": (z, y),
        "dorsal": (-z, y),
    }
    if view not in table:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    forward, up = table[view]
    return np.cross(forward, up), up, forward


def project(
    vertices: np.ndarray, view: str = "lateral", hemi: str = "lh"
) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of vertices onto the screen of a view.

    Parameters
    ----------
    vertices : array of shape (n, 3) (or (n, 2) for "flat")
    view : str
        One of :data:`VIEWS`.
    hemi : {"lh", "rh"}

    Returns
    -------
    xy : array of shape (n, 2)
        Screen coordinates (right, up).
    depth : array of shape (n,)
        Distance along the viewing direction (larger = farther); zeros for "flat".
    """
    v = np.asarray(vertices, dtype=np.float64)
    if view == "flat":
        return v[:, :2].copy(), np.zeros(len(v))
    right, up, forward = view_basis(view, hemi)
    return np.stack([v @ right, v @ up], axis=1), v @ forward


def camera_basis(view: str, hemi: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`view_basis`, with "flat" seen from +z (screen right = x, up = y)."""
    if view == "flat":
        x, y, z = np.eye(3)
        return x, y, -z
    return view_basis(view, hemi)


def lighting_mode(lighting: str | None, shading: bool = False) -> str:
    """The lighting mode asked for (``lighting``, else "shaded" when ``shading``, else
    "flat"), checked against :data:`LIGHTING`."""
    mode = lighting if lighting is not None else ("shaded" if shading else "flat")
    if mode not in LIGHTING:
        raise ValueError(f"lighting must be one of {LIGHTING}; got {mode!r}")
    return mode
