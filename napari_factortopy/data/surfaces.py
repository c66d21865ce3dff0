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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

HEMIS = ("lh", "rh")
MESH_KINDS = ("pial", "white", "inflated", "sphere", "flat")
#: Vertices per hemisphere of each fsaverage resolution.
MESH_SIZES = {
    "fsaverage3": 642,
    "fsaverage4": 2562,
    "fsaverage5": 10242,
    "fsaverage6": 40962,
    "fsaverage7": 163842,
    "fsaverage": 163842,
}
_NILEARN_MESH = {
    "pial": "pial",
    "white": "white",
    "inflated": "infl",
    "sphere": "sphere",
    "flat": "flat",
}
_NILEARN_HEMI = {"lh": "left", "rh": "right"}


class SurfaceError(ValueError):
    """A surface, patch or label file is missing or malformed."""


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


def _check_hemi(hemi: str) -> None:
    if hemi not in HEMIS:
        raise ValueError(f"hemisphere must be one of {HEMIS}; found {hemi!r}")


def mesh_size(name: str) -> int:
    """Vertices per hemisphere of a named fsaverage mesh.

    Raises
    ------
    SurfaceError
        For an unknown name (the known names are listed).
    """
    if name not in MESH_SIZES:
        raise SurfaceError(f"unknown mesh {name!r}; known meshes: {', '.join(MESH_SIZES)}")
    return MESH_SIZES[name]


# ---------------------------------------------------------------- fsaverage5


def _nilearn_file(key: str, mesh: str = "fsaverage5") -> str:
    from nilearn import datasets

    return datasets.fetch_surf_fsaverage(mesh)[key]


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


# ---------------------------------------------------------- user-named files


def read_surface(path: str | os.PathLike) -> Mesh:
    """Read a surface from a GIFTI (``.gii``, ``.gii.gz``) or FreeSurfer geometry file.

    Returns
    -------
    Mesh

    Raises
    ------
    SurfaceError
        Missing file, or a file that holds no triangle mesh.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"surface file {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith((".gii", ".gii.gz")):
            img = nib.load(str(path))
            coords, faces = img.agg_data(("pointset", "triangle"))
        else:
            coords, faces = nib.freesurfer.read_geometry(str(path))
    except Exception as exc:
        raise SurfaceError(
            f"surface file {path}: expected a GIFTI or FreeSurfer triangle mesh; cannot read "
            f"it: {exc}"
        ) from exc
    if coords is None or faces is None or np.ndim(coords) != 2 or np.shape(coords)[1] != 3:
        raise SurfaceError(
            f"surface file {path}: expected vertex coordinates (n, 3) and faces (m, 3); "
            f"found {None if coords is None else np.shape(coords)}"
        )
    return Mesh(np.asarray(coords, np.float32), np.asarray(faces, np.int64))


def read_morph(path: str | os.PathLike) -> np.ndarray:
    """Read per-vertex data: FreeSurfer curv/sulc, ``.mgh``/``.mgz`` or GIFTI.

    Returns
    -------
    array of shape (n,), float32
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"morphometry file {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith((".mgh", ".mgz", ".gii", ".gii.gz")):
            img = nib.load(str(path))
            data = img.agg_data() if hasattr(img, "agg_data") else img.get_fdata()
        else:
            data = nib.freesurfer.read_morph_data(str(path))
    except Exception as exc:
        raise SurfaceError(f"morphometry file {path}: cannot read it: {exc}") from exc
    return np.asarray(data, np.float32).ravel()


def _search_dirs(name: str, subjects_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if subjects_dir:
        dirs.append(Path(subjects_dir) / name)
    if os.environ.get("SUBJECTS_DIR"):
        dirs.append(Path(os.environ["SUBJECTS_DIR"]) / name)
    if os.environ.get("FREESURFER_HOME"):
        dirs.append(Path(os.environ["FREESURFER_HOME"]) / "subjects" / name)
    return dirs


def _nilearn_cached(name: str, key: str) -> Path | None:
    try:
        from nilearn.datasets.utils import get_data_dirs
    except ImportError:  # pragma: no cover
        return None
    aliases = {name, "fsaverage" if name == "fsaverage7" else name}
    for d in get_data_dirs():
        for alias in aliases:
            root = Path(d) / alias
            if root.is_dir():
                for cand in sorted(root.rglob(f"{key}*")):
                    if cand.is_file():
                        return cand
    return None


def load_mesh(
    name: str,
    kind: str,
    hemi: str,
    *,
    subjects_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> Mesh:
    """Load an fsaverage mesh of any resolution, offline unless allowed.

    Parameters
    ----------
    name : str
        ``"fsaverage5"`` (nilearn's package data), ``"fsaverage6"``, ``"fsaverage"``
        (= ``"fsaverage7"``), ``"fsaverage3"``, ``"fsaverage4"``; or a folder holding
        ``surf/{lh,rh}.<kind>`` or ``{lh,rh}.<kind>[.gii]`` files.
    kind : {"pial", "white", "inflated", "sphere", "flat"}
        ``"flat"`` on FreeSurfer folders reads ``surf/?h.full.flat.patch.3d`` with the
        faces of the white mesh.
    hemi : {"lh", "rh"}
    subjects_dir : path, optional
        A FreeSurfer ``SUBJECTS_DIR`` searched before ``$SUBJECTS_DIR`` and
        ``$FREESURFER_HOME/subjects``.
    allow_download : bool
        Let nilearn download the mesh when it is found nowhere locally.

    Returns
    -------
    Mesh

    Raises
    ------
    SurfaceError
        When the mesh is not found (the message lists where it looked and how to get
        it) or its vertex count does not match the named resolution.
    """
    _check_hemi(hemi)
    if kind not in MESH_KINDS:
        raise ValueError(f"mesh kind must be one of {MESH_KINDS}; found {kind!r}")
    if name == "fsaverage5":
        return fsaverage5_mesh(kind, hemi)
    fs_name = {"inflated": "inflated", "flat": "flat"}.get(kind, kind)
    looked: list[str] = []
    folder = Path(name)
    candidates_dirs = [folder] if name not in MESH_SIZES else _search_dirs(name, subjects_dir)
    if name == "fsaverage7":
        candidates_dirs += _search_dirs("fsaverage", subjects_dir)
    for d in candidates_dirs:
        for sub in ("surf", "."):
            base = d / sub
            if kind == "flat":
                patch = base / f"{hemi}.full.flat.patch.3d"
                looked.append(str(patch))
                if patch.is_file():
                    white = _read_first([base / f"{hemi}.white", base / f"{hemi}.white.gii"])
                    if white is None:
                        raise SurfaceError(
                            f"flat patch {patch}: its faces come from {base / hemi}.white, "
                            "which is missing"
                        )
                    fp = read_patch(patch, white)
                    return fp.full_mesh(white.n_vertices)[0]
                continue
            cands = [base / f"{hemi}.{fs_name}", base / f"{hemi}.{fs_name}.gii"]
            looked += [str(c) for c in cands]
            found = _read_first(cands)
            if found is not None:
                return _checked(found, name, cands[0])
    if name in MESH_SIZES:
        cached = _nilearn_cached(name, f"{_NILEARN_MESH[kind]}_{_NILEARN_HEMI[hemi]}")
        if cached is not None:
            return _checked(read_surface(cached), name, cached)
        if allow_download:
            from nilearn import datasets

            mesh = "fsaverage" if name == "fsaverage7" else name
            path = datasets.fetch_surf_fsaverage(mesh)[
                f"{_NILEARN_MESH[kind]}_{_NILEARN_HEMI[hemi]}"
            ]
            return _checked(read_surface(path), name, path)
    raise SurfaceError(
        f"mesh {name} {kind} {hemi}: not found; looked in {', '.join(looked) or '(nowhere)'}"
        " and nilearn's data folder. Point $SUBJECTS_DIR (or subjects_dir) at a FreeSurfer "
        f"subjects folder containing {name}/surf/{hemi}.{fs_name}, name GIFTI/FreeSurfer "
        "files directly, or allow downloading (nilearn fetch_surf_fsaverage)"
    )


def _read_first(cands: list[Path]) -> Mesh | None:
    for c in cands:
        if c.is_file():
            return read_surface(c)
    return None


def _checked(mesh: Mesh, name: str, where: object) -> Mesh:
    if name in MESH_SIZES and mesh.n_vertices != MESH_SIZES[name]:
        raise SurfaceError(
            f"surface {where}: {name} has {MESH_SIZES[name]} vertices per hemisphere; "
            f"found {mesh.n_vertices}"
        )
    return mesh


def load_morph(
    name: str,
    kind: str,
    hemi: str,
    *,
    subjects_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Curvature or sulcal depth of an fsaverage mesh (see :func:`load_mesh`).

    Returns
    -------
    array of shape (n,), float32
    """
    _check_hemi(hemi)
    if name == "fsaverage5":
        return fsaverage5_morph(kind, hemi)
    dirs = [Path(name)] if name not in MESH_SIZES else _search_dirs(name, subjects_dir)
    looked = []
    for d in dirs:
        for sub in ("surf", "."):
            cand = d / sub / f"{hemi}.{kind}"
            looked.append(str(cand))
            if cand.is_file():
                return read_morph(cand)
    if name in MESH_SIZES:
        cached = _nilearn_cached(name, f"{kind}_{_NILEARN_HEMI[hemi]}")
        if cached is not None:
            return read_morph(cached)
    raise SurfaceError(f"{kind} of {name} {hemi}: not found; looked in {', '.join(looked)}")


# -------------------------------------------------------------- flat patches


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


# ------------------------------------------------------------- coarser mesh


def to_coarser(
    vertex_ids: np.ndarray, n_lh: int, target: str | int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the modelled vertices that exist on a coarser fsaverage mesh.

    Each coarser fsaverage mesh's vertices are the first vertices of the finer ones.

    Parameters
    ----------
    vertex_ids : array of shape (V,), int
        Per-hemisphere mesh indices, left hemisphere first.
    n_lh : int
        How many of them are left.
    target : str or int
        Mesh name (``"fsaverage5"``) or vertices per hemisphere.

    Returns
    -------
    keep : array of shape (V',), int64
        Positions into the V modelled vertices (index data with it: ``values[keep]``).
    vertex_ids : array of shape (V',), int64
        Their indices on the coarse mesh (unchanged numbers).
    n_lh : int
        Left vertices among them.
    """
    n = target if isinstance(target, int) else mesh_size(target)
    vertex_ids = np.asarray(vertex_ids, np.int64)
    keep = np.flatnonzero(vertex_ids < n)
    return keep, vertex_ids[keep], int((keep < n_lh).sum())


# --------------------------------------------------------------- ROI labels


def read_ctab(path: str | os.PathLike) -> dict[int, str]:
    """Read a label → name table (NSD ``.mgz.ctab``, FreeSurfer LUT).

    Each non-comment line is ``value name [r g b a]``.

    Returns
    -------
    dict int → str
    """
    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"colour table {path} does not exist")
    out: dict[int, str] = {}
    for k, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            value = int(parts[0])
        except ValueError:
            raise SurfaceError(
                f"colour table {path}, line {k + 1}: expected 'value name', found {line!r}"
            ) from None
        out[value] = parts[1] if len(parts) > 1 else str(value)
    return out


def read_mgz_labels(
    path: str | os.PathLike, ctab: str | os.PathLike | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """Read an NSD ROI label file (``{lh,rh}.<name>.mgz``) and its ``.ctab``.

    Parameters
    ----------
    path : path
        Per-vertex integer labels (n, 1, 1) or (n,); NSD uses 0 or −1 for "none".
    ctab : path, optional
        Default: ``<path>.ctab`` or, without the hemisphere prefix,
        ``<folder>/<name>.mgz.ctab`` (NSD's naming), when present.

    Returns
    -------
    labels : array of shape (n,), int64
        Negative values are set to 0.
    names : dict int → str
        Empty when there is no table.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"ROI label file {path} does not exist")
    try:
        data = np.asarray(nib.load(str(path)).get_fdata()).ravel()
    except Exception as exc:
        raise SurfaceError(f"ROI label file {path}: cannot read it as MGH/MGZ: {exc}") from exc
    labels = np.rint(data).astype(np.int64)
    labels[labels < 0] = 0
    if ctab:
        cands = [Path(ctab)]
    else:  # NSD: label/<name>.mgz.ctab beside label/{lh,rh}.<name>.mgz
        bare = path.name.split(".", 1)[1] if path.name.startswith(("lh.", "rh.")) else path.name
        cands = [Path(str(path) + ".ctab"), path.parent / f"{bare}.ctab"]
    ctab_path = next((c for c in cands if c.is_file()), None)
    names = read_ctab(ctab_path) if ctab_path is not None else {}
    return labels, names


def read_label(path: str | os.PathLike, n_vertices: int | None = None) -> np.ndarray:
    """Read a FreeSurfer ``.label`` file: its vertex indices.

    Parameters
    ----------
    path : path
    n_vertices : int, optional
        When given, the indices are checked against the mesh size.

    Returns
    -------
    array of shape (k,), int64
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"label file {path} does not exist")
    try:
        idx = np.asarray(nib.freesurfer.read_label(str(path)), np.int64)
    except Exception as exc:
        raise SurfaceError(
            f"label file {path}: expected a FreeSurfer .label (count line, then 'vertex x y z "
            f"value' rows): {exc}"
        ) from exc
    if n_vertices is not None and idx.size and (idx.max() >= n_vertices or idx.min() < 0):
        raise SurfaceError(
            f"label file {path}: vertex {int(idx.max())} is outside the mesh "
            f"({n_vertices} vertices)"
        )
    return idx


def read_annot(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read a FreeSurfer ``.annot``.

    Returns
    -------
    labels : array of shape (n,), int64
        0 = none, k = ``names[k-1]`` (the table's entries in order, "unknown" dropped).
    names : list of str
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"annotation file {path} does not exist")
    try:
        raw, _ctab, names = nib.freesurfer.read_annot(str(path))
    except Exception as exc:
        raise SurfaceError(f"annotation file {path}: cannot read it: {exc}") from exc
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    raw = np.asarray(raw, np.int64)
    out = np.zeros(raw.shape, np.int64)
    kept: list[str] = []
    for k, nm in enumerate(names):
        if nm.lower() in ("unknown", "???", "medial_wall"):
            continue
        kept.append(nm)
        out[raw == k] = len(kept)
    return out, kept


def read_algonauts_mapping(path: str | os.PathLike) -> dict[int, str]:
    """Read an Algonauts ``mapping_<family>.npy`` (pickled dict label → name).

    The file format is a pickled dict; ``allow_pickle=True`` is used for it alone.
    """
    path = Path(path)
    if not path.is_file():
        raise SurfaceError(f"ROI mapping {path} does not exist")
    try:
        obj = np.load(path, allow_pickle=True)
        obj = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj
    except Exception as exc:
        raise SurfaceError(f"ROI mapping {path}: cannot read it: {exc}") from exc
    if not isinstance(obj, dict):
        raise SurfaceError(
            f"ROI mapping {path}: expected a pickled dict label → name, found {type(obj).__name__}"
        )
    return {int(k): str(v) for k, v in obj.items()}


def sphere_coordinates(
    mesh: str,
    vertex_ids: np.ndarray,
    n_lh: int,
    *,
    subjects_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    source: str = "vertex ids",
) -> np.ndarray:
    """Registered-sphere coordinates of modelled vertices (what FactorTopy encodes).

    Parameters
    ----------
    mesh : str
        Mesh name (``"fsaverage5"``, ``"fsaverage"``, …), read with :func:`load_mesh`.
    vertex_ids : int array of shape (V,)
        Per-hemisphere vertex indices, left hemisphere first.
    n_lh : int
        How many of them are left-hemisphere vertices.
    subjects_dir, allow_download
        Passed to :func:`load_mesh`.
    source : str
        Named in the error message (e.g. the dataset folder).

    Returns
    -------
    array of shape (V, 3), float32
        Per-hemisphere (unshifted) sphere coordinates.

    Raises
    ------
    SurfaceError
        When an id lies outside its hemisphere's mesh.
    """
    ids = np.asarray(vertex_ids, np.int64)
    out = np.empty((len(ids), 3), np.float32)
    for hemi, rows in (("lh", slice(0, n_lh)), ("rh", slice(n_lh, None))):
        verts = load_mesh(
            mesh, "sphere", hemi, subjects_dir=subjects_dir, allow_download=allow_download
        ).vertices
        part = ids[rows]
        if part.size and (part.min() < 0 or part.max() >= len(verts)):
            raise SurfaceError(
                f"{source}: {hemi} vertex ids span [{part.min()}, {part.max()}], outside "
                f"{mesh} ({len(verts)} vertices per hemisphere)"
            )
        out[rows] = verts[part]
    return out
