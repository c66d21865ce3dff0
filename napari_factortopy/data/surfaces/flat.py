"""FreeSurfer flat patches (``?h.*.patch.flat`` / ``.patch.3d``).

:func:`read_patch` reads the big-endian patch format into a :class:`FlatPatch`: the
full-mesh index, coordinates and border flag of each patch vertex, plus the full
mesh's faces that lie inside the patch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._base import Mesh, SurfaceError


@dataclass(frozen=True)
class FlatPatch:
    """A FreeSurfer flat patch.

    Attributes
    ----------
    vertex_ids : array of shape (n,), int64
        Index in the full mesh of each patch vertex.
    coords : array of shape (n, 3), float32
        Patch coordinates (z is 0 for flat patches).
    border : array of shape (n,), bool
        Vertices on the patch border (negative indices in the file).
    faces : array of shape (m, 3), int64
        Faces of the full mesh whose three vertices are in the patch, re-indexed into
        ``coords`` (empty when no full mesh was given).
    """

    vertex_ids: np.ndarray
    coords: np.ndarray
    border: np.ndarray
    faces: np.ndarray

    @property
    def mesh(self) -> Mesh:
        """The patch as a :class:`Mesh` over its own vertices."""
        return Mesh(self.coords, self.faces)

    def full_mesh(self, n_vertices: int) -> tuple[Mesh, np.ndarray]:
        """A mesh over all ``n_vertices`` of the full surface.

        Vertices outside the patch are placed at the patch centroid and belong to no
        face. Returns the mesh and a bool mask (n_vertices,) of the patch vertices.
        """
        coords = np.tile(self.coords.mean(axis=0), (n_vertices, 1)).astype(np.float32)
        coords[self.vertex_ids] = self.coords
        mask = np.zeros(n_vertices, bool)
        mask[self.vertex_ids] = True
        return Mesh(coords, self.vertex_ids[self.faces]), mask


def read_patch(path: str | os.PathLike, full: Mesh | None = None) -> FlatPatch:
    """Read a FreeSurfer patch file (``?h.*.patch.flat`` / ``.patch.3d``).

    Format (big-endian): int32 −1, int32 n, then n records (int32 index, float32 x,
    y, z); index > 0 → vertex index − 1, index < 0 → border vertex −index − 1.

    Parameters
    ----------
    path : path
    full : Mesh, optional
        The full hemisphere mesh: its faces whose three vertices are in the patch
        become the patch's faces.

    Returns
    -------
    FlatPatch

    Raises
    ------
    SurfaceError
        When the header or record count is wrong, or an index is outside ``full``.
    """
    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"patch file {path} does not exist")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise SurfaceError(f"patch file {path}: expected an 8-byte header, found {len(raw)} bytes")
    magic, n = np.frombuffer(raw[:8], ">i4")
    if magic != -1:
        raise SurfaceError(
            f"patch file {path}: expected header int32 -1 (FreeSurfer patch), found {magic}"
        )
    rec = np.dtype([("index", ">i4"), ("x", ">f4"), ("y", ">f4"), ("z", ">f4")])
    if n < 0 or len(raw) - 8 != n * rec.itemsize:
        raise SurfaceError(
            f"patch file {path}: header says {n} vertices ({n * rec.itemsize} bytes of "
            f"records), found {len(raw) - 8} bytes"
        )
    recs = np.frombuffer(raw[8:], rec, count=int(n))
    idx = recs["index"].astype(np.int64)
    if np.any(idx == 0):
        raise SurfaceError(f"patch file {path}: vertex index 0 is invalid (indices are ±(i+1))")
    border = idx < 0
    vids = np.where(border, -idx - 1, idx - 1)
    coords = np.stack([recs["x"], recs["y"], recs["z"]], axis=1).astype(np.float32)
    faces = np.zeros((0, 3), np.int64)
    if full is not None:
        if vids.max(initial=-1) >= full.n_vertices:
            raise SurfaceError(
                f"patch file {path}: vertex {int(vids.max())} is outside the full mesh "
                f"({full.n_vertices} vertices)"
            )
        pos = np.full(full.n_vertices, -1, np.int64)
        pos[vids] = np.arange(len(vids))
        mapped = pos[full.faces]
        faces = mapped[(mapped >= 0).all(axis=1)]
    return FlatPatch(vids, coords, border, faces)
