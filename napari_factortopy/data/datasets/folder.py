"""The plain folder format, for any other data (BOLD5000, THINGS-fMRI, a lab's own).

::

    my_subject/
      dataset.json        {"format": "factortopy-folder", "mesh": "fsaverage5",
                           "n_lh": 1200, "roi_names": ["V1", "V2"]}      (required)
      images/             the stimuli (png, jpg, ...; sub-folders allowed)   (required)
      responses.npy       float (N, V): one row per presentation             (required)
      vertex_ids.npy      int (V,): per-hemisphere mesh index of each column,
                          the n_lh left-hemisphere columns first             (required)
      stimuli.txt         N lines: the image file (relative to images/) of each
                          response row; repeats allowed. Without it, the rows are
                          the image files in sorted order, one each.        (optional)
      roi.npy             int (V,): 0 = none, k = roi_names[k-1]             (optional)
      noise_ceiling.npy   float (V,): explainable variance fraction, 0..1   (optional)

``mesh`` is a fsaverage name (``fsaverage3`` … ``fsaverage6``, ``fsaverage``) or a
folder (relative to the dataset) holding ``{lh,rh}.sphere`` etc.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..surfaces import MESH_SIZES, read_surface
from ._base import IMAGE_SUFFIXES, Dataset, DatasetError, file_image_loader, load_npy, require

__all__ = ["FOLDER_FORMAT", "is_folder_dataset", "load_folder", "write_folder"]

FOLDER_FORMAT = "factortopy-folder"


def is_folder_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a ``dataset.json`` or ``responses.npy``."""
    path = Path(path)
    return (path / "dataset.json").is_file() or (path / "responses.npy").is_file()


def _mesh_sizes(mesh: str, root: Path) -> tuple[int, int]:
    if mesh in MESH_SIZES:
        return MESH_SIZES[mesh], MESH_SIZES[mesh]
    folder = (root / mesh) if not Path(mesh).is_absolute() else Path(mesh)
    sizes = []
    for hemi in ("lh", "rh"):
        cands = [
            folder / f"{hemi}.sphere",
            folder / f"{hemi}.sphere.gii",
            folder / "surf" / f"{hemi}.sphere",
        ]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise DatasetError(
                f"folder dataset {root}: mesh {mesh!r} is neither a fsaverage name "
                f"({', '.join(MESH_SIZES)}) nor a folder with {hemi}.sphere"
            )
        sizes.append(read_surface(found).n_vertices)
    return sizes[0], sizes[1]


def _responses(mapped: np.ndarray, in_memory: bool):
    """``responses.npy`` as float32 (mapped when it is float32 already), or kept in the
    file and read by rows."""
    if not in_memory and mapped.flags.c_contiguous:
        from ...core.responses import ResponseRows

        return ResponseRows([mapped])
    return np.asarray(mapped, np.float32)


def load_folder(root: str | os.PathLike, *, in_memory: bool = True) -> Dataset:
    """Read a dataset in the plain folder format (module docstring).

    Parameters
    ----------
    root : path
    in_memory : bool
        Read the responses into memory (default). ``False``: keep them in
        ``responses.npy`` as a :class:`~napari_factortopy.core.responses.ResponseRows`,
        read by rows when asked for (a training run under a memory limit).

    Returns
    -------
    Dataset
        ``kind="folder"``; image ids are the image paths relative to ``images/``.

    Raises
    ------
    DatasetError
        A missing file (named), counts that disagree, vertex ids outside the mesh,
        duplicated vertices, unknown image names in ``stimuli.txt``.
    """
    root = Path(root)
    where = f"folder dataset {root}"
    if not root.is_dir():
        raise DatasetError(f"{where}: no such folder")
    meta_path = require(root / "dataset.json", "dataset.json (mesh, n_lh)", where)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: dataset.json is not valid JSON: {exc}") from exc
    for key in ("mesh", "n_lh"):
        if key not in meta:
            raise DatasetError(
                f"{where}: dataset.json must give {key!r}; found keys {sorted(meta)}"
            )
    mesh, n_lh = str(meta["mesh"]), meta["n_lh"]
    img_dir = require(root / "images", "the images folder", where)
    files = sorted(
        p.relative_to(img_dir).as_posix()
        for p in img_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DatasetError(f"{where}: {img_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    rpath = require(root / "responses.npy", "responses.npy (N, V)", where)
    responses = load_npy(rpath, "a float (N, V) array", where, mmap=True)
    if responses.ndim != 2 or responses.dtype.kind != "f":
        raise DatasetError(
            f"{where}: responses.npy must be a float (N, V) array; found {responses.dtype} "
            f"{responses.shape}"
        )
    n, v = responses.shape
    files, image_index = _image_rows(root, files, n, where)
    vertex_ids = _vertex_ids(root, v, n_lh, mesh, where)
    roi, roi_names = _roi(root, v, meta, where)
    nc = None
    if (root / "noise_ceiling.npy").exists():
        nc = load_npy(root / "noise_ceiling.npy", f"a float ({v},) array", where)
        if nc.shape != (v,):
            raise DatasetError(
                f"{where}: noise_ceiling.npy must have shape ({v},); found {nc.shape}"
            )
        nc = nc.astype(np.float32)
    return Dataset(
        kind="folder",
        root=root,
        image_ids=np.asarray(files),
        responses=_responses(responses, in_memory),
        image_index=image_index,
        vertex_ids=vertex_ids,
        n_lh=int(n_lh),
        mesh=mesh,
        roi=roi,
        roi_names=roi_names,
        loader=file_image_loader([img_dir / f for f in files]),
        noise_ceiling=nc,
        info={"kind": "folder", "root": str(root), **{k: meta[k] for k in meta if k != "format"}},
    )


def _image_rows(root: Path, files: list[str], n: int, where: str) -> tuple[list[str], np.ndarray]:
    """The images the ``n`` response rows show: ``(files, image_index)``, the image
    files used (sorted) and each row's index into them, int (n,) (from ``stimuli.txt``
    when there is one, else one image per row in sorted order)."""
    stim = root / "stimuli.txt"
    if stim.exists():
        rows = [ln.strip() for ln in stim.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(rows) != n:
            raise DatasetError(
                f"{where}: stimuli.txt lists {len(rows)} images but responses.npy has {n} rows"
            )
        known = {f: i for i, f in enumerate(files)}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise DatasetError(
                f"{where}: stimuli.txt names images not in images/: {unknown[:5]}"
                + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
            )
        used = sorted(set(rows))
        pos = {f: i for i, f in enumerate(used)}
        image_index = np.asarray([pos[r] for r in rows], np.int64)
        files = used
    else:
        if len(files) != n:
            raise DatasetError(
                f"{where}: {len(files)} images in images/ but responses.npy has {n} rows; "
                "they must match (or list each row's image in stimuli.txt)"
            )
        image_index = np.arange(n, dtype=np.int64)
    return files, image_index


def _vertex_ids(root: Path, v: int, n_lh: Any, mesh: str, where: str) -> np.ndarray:
    """``vertex_ids.npy``, int (V,), checked: one per response column, ``n_lh`` in
    0..V, inside the mesh's hemispheres, no vertex twice."""
    vpath = require(root / "vertex_ids.npy", "vertex_ids.npy (V,)", where)
    vertex_ids = load_npy(vpath, f"an int ({v},) array", where)
    if vertex_ids.shape != (v,) or vertex_ids.dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: vertex_ids.npy must be an int array of shape ({v},) (one per response "
            f"column); found {vertex_ids.dtype} {vertex_ids.shape}"
        )
    vertex_ids = vertex_ids.astype(np.int64)
    if not isinstance(n_lh, int) or not 0 <= n_lh <= v:
        raise DatasetError(f"{where}: n_lh must be an int in 0..{v}; found {n_lh!r}")
    size_lh, size_rh = _mesh_sizes(mesh, root)
    for hemi, ids, size in (
        ("lh", vertex_ids[:n_lh], size_lh),
        ("rh", vertex_ids[n_lh:], size_rh),
    ):
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            bad = ids[(ids < 0) | (ids >= size)]
            raise DatasetError(
                f"{where}: vertex_ids.npy has {hemi} vertex ids outside the mesh {mesh} "
                f"(0..{size - 1} per hemisphere): e.g. {bad[:5].tolist()}"
            )
        if len(np.unique(ids)) != len(ids):
            raise DatasetError(f"{where}: vertex_ids.npy repeats {hemi} vertices")
    return vertex_ids


def _roi(root: Path, v: int, meta: dict, where: str) -> tuple[np.ndarray, list[str]]:
    """``roi.npy`` (int (V,), zeros without one), checked against the ROI names of
    ``dataset.json``, and those names."""
    roi = np.zeros(v, np.int64)
    roi_names = [str(x) for x in meta.get("roi_names", [])]
    if (root / "roi.npy").exists():
        roi = load_npy(root / "roi.npy", f"an int ({v},) array", where)
        if roi.shape != (v,) or roi.dtype.kind not in "iu":
            raise DatasetError(
                f"{where}: roi.npy must be an int array of shape ({v},); found {roi.dtype} "
                f"{roi.shape}"
            )
        roi = roi.astype(np.int64)
        if roi.size and (roi.min() < 0 or roi.max() > len(roi_names)):
            raise DatasetError(
                f"{where}: {root / 'roi.npy'} holds labels {int(roi.min())}..{int(roi.max())}"
                f"; expected 0..{len(roi_names)} (0 = none, k = roi_names[k-1]: "
                f"{root / 'dataset.json'} names {len(roi_names)} ROIs)"
            )
    return roi, roi_names


def write_folder(
    root: str | os.PathLike,
    images: dict[str, np.ndarray],
    responses: np.ndarray,
    vertex_ids: np.ndarray,
    n_lh: int,
    mesh: str = "fsaverage5",
    *,
    stimuli: list[str] | None = None,
    roi: np.ndarray | None = None,
    roi_names: list[str] | None = None,
    noise_ceiling: np.ndarray | None = None,
) -> Path:
    """Write a dataset in the folder format (images as PNG).

    Parameters
    ----------
    root : path
        Folder to create (parents included).
    images : dict file name → uint8 array (H, W, 3)
    responses : array of shape (N, V)
    vertex_ids : array of shape (V,), int
    n_lh : int
    mesh : str
    stimuli : list of N file names, optional
    roi : array of shape (V,), int, optional
    roi_names : list of str, optional
    noise_ceiling : array of shape (V,), optional

    Returns
    -------
    pathlib.Path
    """
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, arr in images.items():
        target = root / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(arr, np.uint8)).save(target)
    np.save(root / "responses.npy", np.asarray(responses, np.float32))
    np.save(root / "vertex_ids.npy", np.asarray(vertex_ids, np.int64))
    meta = {"format": FOLDER_FORMAT, "mesh": mesh, "n_lh": int(n_lh)}
    if roi is not None:
        np.save(root / "roi.npy", np.asarray(roi, np.int64))
        meta["roi_names"] = list(roi_names or [])
    if noise_ceiling is not None:
        np.save(root / "noise_ceiling.npy", np.asarray(noise_ceiling, np.float32))
    if stimuli is not None:
        (root / "stimuli.txt").write_text("\n".join(stimuli) + "\n", encoding="utf-8")
    (root / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return root
