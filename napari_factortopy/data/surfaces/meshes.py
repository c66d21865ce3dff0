"""fsaverage meshes and per-vertex morphometry, offline unless allowed.

fsaverage5 comes from nilearn's package data (:func:`fsaverage5_mesh`,
:func:`fsaverage5_morph`); any resolution is searched in ``subjects_dir``,
``$SUBJECTS_DIR``, ``$FREESURFER_HOME/subjects`` and nilearn's data folder
(:func:`load_mesh`, :func:`load_morph`); user-named files are read with
:func:`read_surface` / :func:`read_morph`. :func:`to_coarser` keeps the vertices that
exist on a coarser mesh and :func:`sphere_coordinates` gives the registered-sphere
coordinates of modelled vertices. nibabel and nilearn are imported inside functions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._base import Mesh, SurfaceError
from .flat import read_patch

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


def _mesh_dirs(name: str, subjects_dir: str | os.PathLike | None) -> list[Path]:
    """Folders that may hold mesh ``name``'s files: the folder itself for a user's path;
    for a standard mesh the subjects folders, and for fsaverage7 also their plain
    ``fsaverage`` (FreeSurfer's name for it)."""
    if name not in MESH_SIZES:
        return [Path(name)]
    dirs = _search_dirs(name, subjects_dir)
    if name == "fsaverage7":
        dirs += _search_dirs("fsaverage", subjects_dir)
    return dirs


def _nilearn_data_dirs() -> list[Path]:
    """Where nilearn keeps downloaded data, in its order (``NILEARN_SHARED_DATA``,
    ``NILEARN_DATA``, ``~/nilearn_data``: ``nilearn.datasets.utils.get_data_dirs``
    without importing ``nilearn.datasets``, which takes 2 s and was paid by every model
    opened in napari just to learn that no flat patch is there)."""
    dirs: list[str] = []
    for var in ("NILEARN_SHARED_DATA", "NILEARN_DATA"):
        if os.getenv(var) is not None:
            dirs += os.environ[var].split(os.pathsep)
    return [Path(d) for d in dirs] + [Path("~/nilearn_data").expanduser()]


def _nilearn_cached(name: str, key: str) -> Path | None:
    aliases = {name, "fsaverage" if name == "fsaverage7" else name}
    for d in _nilearn_data_dirs():
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
    for d in _mesh_dirs(name, subjects_dir):
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
    looked = []
    for d in _mesh_dirs(name, subjects_dir):
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
