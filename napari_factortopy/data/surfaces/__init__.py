"""fsaverage surfaces, flat patches and ROI labels.

Meshes
------
- fsaverage5 (10,242 vertices per hemisphere) comes offline from nilearn's package
  data: pial, white, inflated, sphere and flat meshes, sulcal depth and curvature
  (:func:`fsaverage5_mesh`, :func:`fsaverage5_morph`).
- Any fsaverage resolution (``fsaverage3`` … ``fsaverage6``, ``fsaverage`` =
  ``fsaverage7``, 163,842 per hemisphere) with :func:`load_mesh` / :func:`load_morph`:
  from ``$SUBJECTS_DIR/<name>/surf/{lh,rh}.<kind>``, ``$FREESURFER_HOME/subjects/...``,
  nilearn's data folder, or (only when ``allow_download``) nilearn's download.
- Files the user names: :func:`read_surface` (GIFTI ``.gii`` or FreeSurfer geometry)
  and :func:`read_morph`.
- FreeSurfer flat patches (``?h.*.patch.flat``): :func:`read_patch`.
- Coarser display: each coarser fsaverage mesh's vertices are the first vertices of
  the finer ones, so :func:`to_coarser` keeps the modelled vertices whose index is
  below the coarse mesh's size.

ROI labels
----------
:func:`read_ctab` (NSD ``.mgz.ctab`` / FreeSurfer colour tables), :func:`read_mgz_labels`
(NSD ``{lh,rh}.<name>.mgz``), :func:`read_label` (FreeSurfer ``.label``),
:func:`read_annot` (FreeSurfer ``.annot``), :func:`read_algonauts_mapping`
(``mapping_<family>.npy``).

Package map
-----------
- :mod:`._base`: :class:`SurfaceError` and :class:`Mesh`, shared by every module.
- :mod:`.meshes`: the constants (:data:`HEMIS`, :data:`MESH_KINDS`,
  :data:`MESH_SIZES`), fsaverage loaders, user-named surface and morphometry files,
  :func:`to_coarser` and :func:`sphere_coordinates`.
- :mod:`.flat`: :class:`FlatPatch` and :func:`read_patch`.
- :mod:`.roi_labels`: the ROI label readers.

Private helpers are looked up in the submodule that defines them: patch them there
(e.g. ``napari_factortopy.data.surfaces.meshes._search_dirs``), not on this package.
"""

from __future__ import annotations

from ._base import Mesh, SurfaceError
from .flat import FlatPatch, read_patch
from .meshes import (
    HEMIS,
    MESH_KINDS,
    MESH_SIZES,
    fsaverage5_mesh,
    fsaverage5_morph,
    load_mesh,
    load_morph,
    mesh_size,
    read_morph,
    read_surface,
    sphere_coordinates,
    to_coarser,
)
from .roi_labels import (
    read_algonauts_mapping,
    read_annot,
    read_ctab,
    read_label,
    read_mgz_labels,
)

__all__ = [
    "HEMIS",
    "MESH_KINDS",
    "MESH_SIZES",
    "FlatPatch",
    "Mesh",
    "SurfaceError",
    "fsaverage5_mesh",
    "fsaverage5_morph",
    "load_mesh",
    "load_morph",
    "mesh_size",
    "read_algonauts_mapping",
    "read_annot",
    "read_ctab",
    "read_label",
    "read_mgz_labels",
    "read_morph",
    "read_patch",
    "read_surface",
    "sphere_coordinates",
    "to_coarser",
]
