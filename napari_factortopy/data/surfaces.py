"""fsaverage surfaces.

fsaverage5 (10,242 vertices per hemisphere) comes offline from nilearn's package data:
pial, white, inflated, sphere and flat meshes, sulcal depth and curvature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HEMIS", "MESH_KINDS", "Mesh", "fsaverage5_mesh", "fsaverage5_morph"]

HEMIS = ("lh", "rh")
MESH_KINDS = ("pial", "white", "inflated", "sphere", "flat")
_NILEARN_MESH = {
    "pial": "pial",
    "white": "white",
    "inflated": "infl",
    "sphere": "sphere",
    "flat": "flat",
}
_NILEARN_HEMI = {"lh": "left", "rh": "right"}


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh of one hemisphere.

    Attributes
    ----------
    vertices : array of shape (n, 3), float32
    faces : array of shape (m, 3), int64
    """

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)


def _nilearn_file(key: str) -> str:
    from nilearn import datasets

    return datasets.fetch_surf_fsaverage("fsaverage5")[key]


def _check_hemi(hemi: str) -> None:
    if hemi not in HEMIS:
        raise ValueError(f"hemisphere must be one of {HEMIS}; found {hemi!r}")


def fsaverage5_mesh(kind: str, hemi: str) -> Mesh:
    """Load an fsaverage5 mesh shipped with nilearn (no download).

    Parameters
    ----------
    kind : {"pial", "white", "inflated", "sphere", "flat"}
    hemi : {"lh", "rh"}

    Returns
    -------
    Mesh
        10,242 vertices. For ``"flat"`` the z coordinate is 0 and faces crossing
        the cut are those of nilearn's file (kept as shipped).
    """
    import nibabel as nib

    _check_hemi(hemi)
    if kind not in _NILEARN_MESH:
        raise ValueError(f"mesh kind must be one of {MESH_KINDS}; found {kind!r}")
    img = nib.load(_nilearn_file(f"{_NILEARN_MESH[kind]}_{_NILEARN_HEMI[hemi]}"))
    coords, faces = img.agg_data(("pointset", "triangle"))
    return Mesh(np.asarray(coords, np.float32), np.asarray(faces, np.int64))


def fsaverage5_morph(kind: str, hemi: str) -> np.ndarray:
    """Per-vertex morphometry of fsaverage5: ``"curv"`` or ``"sulc"``.

    Returns
    -------
    array of shape (10242,), float32
    """
    import nibabel as nib

    _check_hemi(hemi)
    if kind not in ("curv", "sulc"):
        raise ValueError(f"morphometry must be 'curv' or 'sulc'; found {kind!r}")
    img = nib.load(_nilearn_file(f"{kind}_{_NILEARN_HEMI[hemi]}"))
    return np.asarray(img.agg_data(), np.float32).ravel()
