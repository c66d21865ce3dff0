"""The Algonauts 2023 subject folder (METHOD.md §7).

::

    subjNN/
      training_split/
        training_images/train-NNNN_nsd-MMMMM.png   (NNNN 1-based row, MMMMM NSD 73k id)
        training_fmri/{lh,rh}_training_fmri.npy     float32 (images, hemisphere vertices)
      test_split/test_images/                       (responses not released; not read)
      roi_masks/
        {lh,rh}.all-vertices_fsaverage_space.npy    163842 0/1: the response columns
        {lh,rh}.<family>_challenge_space.npy        int labels per response column
        {lh,rh}.<family>_fsaverage_space.npy        int labels per fsaverage vertex
        mapping_<family>.npy                        pickled dict label → name
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..surfaces import MESH_SIZES, read_algonauts_mapping
from ._base import (
    Dataset,
    DatasetError,
    copy_rows_into,
    file_image_loader,
    load_npy,
    paper_rois,
    require,
)

__all__ = ["ROI_FAMILIES", "is_algonauts", "load_algonauts"]

#: Label families of the release.
ROI_FAMILIES = (
    "prf-visualrois",
    "floc-bodies",
    "floc-faces",
    "floc-places",
    "floc-words",
    "streams",
)
_NAME = re.compile(r"^train-(\d+)_nsd-(\d+)$")


def _subject_folder(root: Path, subject: int | None) -> Path:
    if subject is not None and not (root / "training_split").exists():
        cand = root / f"subj{int(subject):02d}"
        if cand.is_dir():
            return cand
    return root


def is_algonauts(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an Algonauts 2023 subject folder (or holds subjNN ones)."""
    path = Path(path)
    return (path / "training_split").is_dir() or any(
        (p / "training_split").is_dir() for p in path.glob("subj[0-9][0-9]")
    )


def load_algonauts(
    root: str | os.PathLike,
    *,
    subject: int | None = None,
    nsdgeneral_only: bool = False,
    hemispheres: tuple[str, ...] = ("lh", "rh"),
    in_memory: bool = True,
) -> Dataset:
    """Read an Algonauts 2023 subject folder.

    Parameters
    ----------
    root : path
        The subject folder (``.../subj01``), or its parent together with ``subject``.
    subject : int, optional
        Subject number when ``root`` is the parent folder.
    nsdgeneral_only : bool
        Drop the RSC add-on of the challenge space (vertices labelled RSC in
        floc-places), keeping only nsdgeneral as the paper did.
    hemispheres : tuple of {"lh", "rh"}
        Which hemispheres to read.
    in_memory : bool
        Read the responses into memory (default). ``False``: keep them in their files
        as a :class:`~napari_factortopy.core.responses.ResponseRows`, read by rows when
        asked for (a training run under a memory limit; 1.47 GiB for subject 1).

    Returns
    -------
    Dataset
        ``kind="algonauts"``, ``mesh="fsaverage"``, image ids ``"nsd-MMMMM"``, repeats
        already averaged (``image_index = arange``), ROIs in the paper's groups.

    Raises
    ------
    DatasetError
        A missing file (named), image names that do not follow the release's pattern,
        counts that disagree (images vs responses rows, columns vs masks, masks vs the
        fsaverage size).
    """
    root = _subject_folder(Path(root), subject)
    where = f"Algonauts folder {root}"
    if not root.is_dir():
        raise DatasetError(f"{where}: no such folder")
    img_dir = require(root / "training_split" / "training_images", "the training images", where)
    roi_dir = require(root / "roi_masks", "the ROI masks folder", where)
    files, ids = _training_images(img_dir, where)
    n = len(files)
    blocks, vids, n_lh = [], [], 0
    families: dict[str, list[np.ndarray]] = {}
    fam_tables: dict[str, dict[int, str]] = {}
    for hemi in hemispheres:
        if hemi not in ("lh", "rh"):
            raise DatasetError(f"{where}: hemispheres must be 'lh' or 'rh'; found {hemi!r}")
        resp, hv = _hemisphere(root, roi_dir, hemi, n, img_dir, where)
        blocks.append(resp)  # memory-mapped: copied once, below
        vids.append(hv)
        if hemi == "lh":
            n_lh = len(hv)
        for fam in ROI_FAMILIES:
            labels = _read_family(roi_dir, hemi, fam, hv, where)
            if labels is None:
                continue
            families.setdefault(fam, []).append(labels)
            table = roi_dir / f"mapping_{fam}.npy"
            if table.exists():
                fam_tables[fam] = read_algonauts_mapping(table)
    if hemispheres and hemispheres[0] == "rh":
        n_lh = 0
    if not in_memory and blocks and all(b.flags.c_contiguous for b in blocks):
        from ...core.responses import ResponseRows

        responses = ResponseRows(blocks)
    else:
        responses = np.empty((n, sum(b.shape[1] for b in blocks)), np.float32)
        lo = 0
        for b in blocks:
            copy_rows_into(responses, slice(lo, lo + b.shape[1]), b)
            lo += b.shape[1]
    del blocks
    vertex_ids = np.concatenate(vids)
    v = len(vertex_ids)
    fam_arrays = {
        f: (np.concatenate(ls), fam_tables.get(f, {}))
        for f, ls in families.items()
        if len(ls) == len(hemispheres)
    }
    roi, roi_names = paper_rois(fam_arrays, v)
    roi_families = {f: _as_list_labels(lab, table) for f, (lab, table) in fam_arrays.items()}
    ds = Dataset(
        kind="algonauts",
        root=root,
        image_ids=np.asarray(ids),
        responses=responses,
        image_index=np.arange(n, dtype=np.int64),
        vertex_ids=vertex_ids,
        n_lh=n_lh,
        mesh="fsaverage",
        roi=roi,
        roi_names=roi_names,
        loader=file_image_loader(files),
        roi_families=roi_families,
        info={"kind": "algonauts", "root": str(root), "nsdgeneral_only": nsdgeneral_only},
    )
    if nsdgeneral_only:
        if "floc-places" not in fam_arrays:
            raise DatasetError(
                f"{where}: nsdgeneral_only needs floc-places masks to find RSC "
                f"({roi_dir}/lh.floc-places_challenge_space.npy and mapping_floc-places.npy)"
            )
        lab, table = fam_arrays["floc-places"]
        rsc = [k for k, name in table.items() if name == "RSC"]
        ds = ds.select_vertices(~np.isin(lab, rsc))
    return ds


def _training_images(img_dir: Path, where: str) -> tuple[list[Path], list[str]]:
    """The training images in row order and their image ids ``"nsd-MMMMM"``.

    Raises
    ------
    DatasetError
        No images, a name out of the release's pattern, a number out of row order.
    """
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise DatasetError(f"{where}: {img_dir} holds no train-NNNN_nsd-MMMMM.png images")
    ids = []
    for row, f in enumerate(files):
        m = _NAME.match(f.stem)
        if not m:
            raise DatasetError(f"{where}: image {f.name} does not follow train-NNNN_nsd-MMMMM.png")
        if int(m.group(1)) != row + 1:
            raise DatasetError(
                f"{where}: image {f.name} is row {row + 1} in sorted order but numbered "
                f"{int(m.group(1))}; an image is missing or extra"
            )
        ids.append(f"nsd-{int(m.group(2)):05d}")
    return files, ids


def _hemisphere(
    root: Path, roi_dir: Path, hemi: str, n: int, img_dir: Path, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """One hemisphere's responses, memory-mapped, shape (n, V_h), and the fsaverage
    vertices of their columns, int array (V_h,) (its vertex mask's marked entries).

    Raises
    ------
    DatasetError
        A missing file, a shape that disagrees with the images or the fsaverage size,
        columns that disagree with the mask.
    """
    fpath = require(
        root / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy",
        f"the {hemi} responses",
        where,
    )
    resp = load_npy(fpath, f"a float ({n}, vertices) array", where, mmap=True)
    if resp.ndim != 2 or resp.shape[0] != n:
        raise DatasetError(
            f"{where}: {fpath.name} has shape {resp.shape}; expected ({n}, vertices), one "
            f"row per training image ({n} images in {img_dir.name})"
        )
    mpath = require(
        roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy",
        f"the {hemi} vertex mask",
        where,
    )
    mask = load_npy(mpath, f"a ({MESH_SIZES['fsaverage']},) mask", where)
    if mask.shape != (MESH_SIZES["fsaverage"],):
        raise DatasetError(
            f"{where}: {mpath.name} has shape {mask.shape}; expected "
            f"({MESH_SIZES['fsaverage']},), one entry per fsaverage vertex"
        )
    hv = np.flatnonzero(mask).astype(np.int64)
    if len(hv) != resp.shape[1]:
        raise DatasetError(
            f"{where}: {fpath.name} has {resp.shape[1]} columns but {mpath.name} marks "
            f"{len(hv)} vertices; they must match"
        )
    return resp, hv


def _read_family(
    roi_dir: Path, hemi: str, fam: str, hv: np.ndarray, where: str
) -> np.ndarray | None:
    """Per-column labels of one family, from challenge space or fsaverage space."""
    ch = roi_dir / f"{hemi}.{fam}_challenge_space.npy"
    fs = roi_dir / f"{hemi}.{fam}_fsaverage_space.npy"
    if ch.exists():
        lab = load_npy(ch, f"an int ({len(hv)},) label array", where)
        if lab.shape != hv.shape:
            raise DatasetError(
                f"{where}: {ch.name} has {lab.shape[0]} entries; expected {len(hv)} (one per "
                "response column)"
            )
        return np.asarray(lab, np.int64)
    if fs.exists():
        lab = load_npy(fs, f"an int ({MESH_SIZES['fsaverage']},) label array", where)
        if lab.shape != (MESH_SIZES["fsaverage"],):
            raise DatasetError(
                f"{where}: {fs.name} has shape {lab.shape}; expected ({MESH_SIZES['fsaverage']},)"
            )
        return np.asarray(lab[hv], np.int64)
    return None


def _as_list_labels(labels: np.ndarray, table: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    """Relabel to 0 / 1..k with names[k-1] (value 0 and 'Unknown' are none)."""
    values = sorted(v for v in table if v > 0)
    out = np.zeros(labels.shape, np.int64)
    names = []
    for v in values:
        names.append(table[v])
        out[labels == v] = len(names)
    return out, names
