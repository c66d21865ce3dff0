"""ROI label readers: per-vertex labels and their names.

:func:`read_ctab` (NSD ``.mgz.ctab`` / FreeSurfer colour tables),
:func:`read_mgz_labels` (NSD ``{lh,rh}.<name>.mgz``), :func:`read_label` (FreeSurfer
``.label``), :func:`read_annot` (FreeSurfer ``.annot``) and
:func:`read_algonauts_mapping` (``mapping_<family>.npy``). nibabel is imported inside
functions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._base import SurfaceError


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
