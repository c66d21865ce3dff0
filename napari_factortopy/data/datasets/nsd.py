"""The raw Natural Scenes Dataset on fsaverage (METHOD.md §7).

::

    <root>/
      nsddata/experiments/nsd/nsd_expdesign.mat            masterordering, subjectim
      nsddata/freesurfer/fsaverage/label/{lh,rh}.<name>.mgz (+ <name>.mgz.ctab)
      nsddata_betas/ppdata/subjXX/fsaverage/<betas>/{lh,rh}.betas_sessionSS.mgh
                                         (163842, 1, 1, 750) float32, % signal change
                                         optional {lh,rh}.ncsnr.mgh (noise ceiling SNR)
      nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5          imgBrick (73000, 425, 425, 3)

Betas are z-scored per vertex within each session. Trial t of the experiment shows
73k image ``subjectim[subj-1, masterordering[t]-1] - 1`` (0-based); session s holds
trials ``(s-1)·750 … s·750-1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...core.metrics import noise_ceiling_from_ncsnr
from ..surfaces import MESH_SIZES, read_mgz_labels
from ._base import Dataset, DatasetError, ImageDecodeError, paper_rois, require

__all__ = ["TRIALS_PER_SESSION", "is_nsd", "load_nsd", "nsd_trial_images"]

TRIALS_PER_SESSION = 750
_FAMILIES = ("prf-visualrois", "floc-bodies", "floc-faces", "floc-places", "floc-words", "streams")


def is_nsd(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an NSD root (nsddata/ and nsddata_betas/)."""
    path = Path(path)
    return (path / "nsddata").is_dir() and (path / "nsddata_betas").is_dir()


def nsd_trial_images(design_path: str | os.PathLike, subject: int) -> np.ndarray:
    """0-based 73k image id of each of the subject's trials.

    Returns
    -------
    array of shape (30000,), int64
    """
    from scipy.io import loadmat

    design_path = Path(design_path)
    try:
        mat = loadmat(str(design_path))
    except Exception as exc:
        raise DatasetError(
            f"NSD design {design_path}: cannot read it as a .mat file: {exc}"
        ) from exc
    for key in ("masterordering", "subjectim"):
        if key not in mat:
            raise DatasetError(f"NSD design {design_path}: expected variable {key!r}; missing")
    order = np.asarray(mat["masterordering"]).ravel().astype(np.int64)
    subjectim = np.asarray(mat["subjectim"]).astype(np.int64)
    if subjectim.ndim != 2 or not 1 <= subject <= subjectim.shape[0]:
        raise DatasetError(
            f"NSD design {design_path}: subjectim has shape {subjectim.shape}; subject "
            f"{subject} is not among its rows"
        )
    if order.min() < 1 or order.max() > subjectim.shape[1]:
        raise DatasetError(
            f"NSD design {design_path}: masterordering values must be 1..{subjectim.shape[1]}; "
            f"found {order.min()}..{order.max()}"
        )
    return subjectim[subject - 1, order - 1] - 1


def _zscore(x: np.ndarray) -> np.ndarray:
    """Z-score the rows of (V, T) over T (constant rows → 0)."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    return ((x - mu) / sd).astype(np.float32)


def load_nsd(
    root: str | os.PathLike,
    subject: int = 1,
    *,
    sessions: list[int] | None = None,
    average: bool = True,
    roi_mask: str = "nsdgeneral",
    betas: str = "betas_fithrf_GLMdenoise_RR",
) -> Dataset:
    """Read raw NSD betas of one subject on fsaverage.

    Parameters
    ----------
    root : path
        The NSD root (holding ``nsddata/``, ``nsddata_betas/``, ``nsddata_stimuli/``).
    subject : int
        1..8.
    sessions : list of int, optional
        1-based sessions; default: every ``lh.betas_sessionSS.mgh`` present.
    average : bool
        Average the repeats of each image (after per-session z-scoring); otherwise one
        row per trial (``image_index`` groups the repeats).
    roi_mask : str
        Label file whose positive vertices are modelled (``nsdgeneral``).
    betas : str
        Beta version folder.

    Returns
    -------
    Dataset
        ``kind="nsd"``, ``mesh="fsaverage"``, image ids ``"nsd-MMMMM"`` (sorted);
        ``noise_ceiling`` when ``{lh,rh}.ncsnr.mgh`` are present
        (``ncsnr² / (ncsnr² + mean_i 1/n_i)``, n_i the trials averaged per row).

    Raises
    ------
    DatasetError
        A missing file (named), betas or labels whose vertex count is not fsaverage's,
        a session with more trials than the design holds.
    """
    root = Path(root)
    where = f"NSD folder {root}"
    subj = f"subj{int(subject):02d}"
    design = require(
        root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat", "the design", where
    )
    beta_dir = require(
        root / "nsddata_betas" / "ppdata" / subj / "fsaverage" / betas,
        f"the {subj} fsaverage betas folder",
        where,
    )
    label_dir = require(
        root / "nsddata" / "freesurfer" / "fsaverage" / "label", "the fsaverage labels", where
    )
    stim = root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    require(stim, "the stimuli brick", where)
    trial_images = nsd_trial_images(design, int(subject))
    if sessions is None:
        sessions = _sessions_present(beta_dir, where)
    n_full = MESH_SIZES["fsaverage"]
    vids = _masked_vertices(label_dir, roi_mask, where)
    n_lh = len(vids[0])
    vertex_ids = np.concatenate(vids)
    blocks, shown = _session_blocks(beta_dir, vids, sessions, trial_images, where)
    uniq, responses, image_index, n_avg = _rows(blocks, shown, len(vertex_ids), average)
    nc, nc_note = _ncsnr_ceiling(beta_dir, vids, n_avg)
    roi, roi_names, roi_families = _roi_families(label_dir, vids, where, n_full)
    image_ids = np.asarray([f"nsd-{int(i):05d}" for i in uniq])
    return Dataset(
        kind="nsd",
        root=root,
        image_ids=image_ids,
        responses=responses,
        image_index=image_index,
        vertex_ids=vertex_ids,
        n_lh=n_lh,
        mesh="fsaverage",
        roi=roi,
        roi_names=roi_names,
        loader=_brick_loader(stim, uniq),
        noise_ceiling=nc,
        roi_families=roi_families,
        info={
            "kind": "nsd",
            "root": str(root),
            "subject": int(subject),
            "sessions": [int(s) for s in sessions],
            "average": bool(average),
            "roi_mask": roi_mask,
            "betas": betas,
            "noise_ceiling": nc_note,
        },
    )


def _sessions_present(beta_dir: Path, where: str) -> list[int]:
    """The 1-based sessions whose ``lh.betas_sessionSS.mgh`` is in ``beta_dir``."""
    sessions = sorted(
        int(p.name[len("lh.betas_session") : -len(".mgh")])
        for p in beta_dir.glob("lh.betas_session*.mgh")
    )
    if not sessions:
        raise DatasetError(f"{where}: no lh.betas_sessionSS.mgh files in {beta_dir}")
    return sessions


def _masked_vertices(label_dir: Path, roi_mask: str, where: str) -> list[np.ndarray]:
    """Per hemisphere (lh, rh), the fsaverage vertices the ``roi_mask`` label marks
    positive, as int64 arrays."""
    n_full = MESH_SIZES["fsaverage"]
    vids, labels_by_hemi = [], []
    for hemi in ("lh", "rh"):
        mpath = require(label_dir / f"{hemi}.{roi_mask}.mgz", f"the {roi_mask} label", where)
        lab, _ = read_mgz_labels(mpath)
        if lab.shape != (n_full,):
            raise DatasetError(
                f"{where}: {mpath.name} has {lab.shape[0]} vertices; expected {n_full} (fsaverage)"
            )
        vids.append(np.flatnonzero(lab > 0).astype(np.int64))
        labels_by_hemi.append(lab)
    return vids


def _session_blocks(
    beta_dir: Path, vids: list[np.ndarray], sessions, trial_images: np.ndarray, where: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each session's betas of the modelled vertices, z-scored per session: blocks of
    (trials, V) float32, and the NSD image each of their trials showed."""
    import nibabel as nib

    n_full = MESH_SIZES["fsaverage"]
    blocks: list[np.ndarray] = []
    shown: list[np.ndarray] = []
    for s in sessions:
        t0 = (int(s) - 1) * TRIALS_PER_SESSION
        per_hemi = []
        for hemi, hv in zip(("lh", "rh"), vids, strict=True):
            path = require(beta_dir / f"{hemi}.betas_session{int(s):02d}.mgh", "betas", where)
            img = nib.load(str(path))
            shape = img.shape
            if shape[0] != n_full:
                raise DatasetError(
                    f"{where}: {path.name} has shape {shape}; expected ({n_full}, 1, 1, trials)"
                )
            data = np.asarray(img.dataobj, dtype=np.float32).reshape(n_full, -1)[hv]
            per_hemi.append(_zscore(data))
        n_t = per_hemi[0].shape[1]
        if per_hemi[1].shape[1] != n_t:
            raise DatasetError(
                f"{where}: session {s}: lh has {n_t} trials, rh {per_hemi[1].shape[1]}"
            )
        if t0 + n_t > len(trial_images):
            raise DatasetError(
                f"{where}: session {s} holds {n_t} trials; the design has only "
                f"{len(trial_images)} trials in all"
            )
        blocks.append(np.concatenate(per_hemi, axis=0).T)
        shown.append(trial_images[t0 : t0 + n_t])
    return blocks, shown


def _rows(blocks: list[np.ndarray], shown: list[np.ndarray], n_vertices: int, average: bool):
    """The dataset's rows: each image's trials averaged (``average``) or one row per trial.

    Returns
    -------
    uniq : array of shape (M,)
        The NSD images shown, sorted.
    responses : array of shape (M, V) or (T, V), float32
    image_index : array of shape (M,) or (T,)
        Each row's image (position in ``uniq``).
    n_avg : array
        Trials averaged per row ((M,) counts, or ones).
    """
    trials = np.concatenate(shown)
    uniq, inverse, counts = np.unique(trials, return_inverse=True, return_counts=True)
    if average:
        sums = np.zeros((len(uniq), n_vertices), np.float64)
        row = 0
        for b in blocks:
            np.add.at(sums, inverse[row : row + len(b)], b)
            row += len(b)
        responses = (sums / counts[:, None]).astype(np.float32)
        image_index = np.arange(len(uniq), dtype=np.int64)
        n_avg = counts
    else:
        responses = np.concatenate(blocks, axis=0)
        image_index = inverse.astype(np.int64)
        n_avg = np.ones(1)
    return uniq, responses, image_index, n_avg


def _ncsnr_ceiling(beta_dir: Path, vids: list[np.ndarray], n_avg: np.ndarray):
    """The noise ceiling (V,) float32 from ``{lh,rh}.ncsnr.mgh`` and a note saying how
    it was computed; ``(None, None)`` without those files."""
    import nibabel as nib

    nc, nc_note = None, None
    nc_files = [beta_dir / f"{h}.ncsnr.mgh" for h in ("lh", "rh")]
    if all(p.exists() for p in nc_files):
        snr = np.concatenate(
            [
                np.asarray(nib.load(str(p)).dataobj, np.float32).ravel()[hv]
                for p, hv in zip(nc_files, vids, strict=True)
            ]
        )
        nc = noise_ceiling_from_ncsnr(snr, n_avg).astype(np.float32)
        nc_note = (
            f"NSD ncsnr ({nc_files[0].parent}/{{lh,rh}}.ncsnr.mgh), "
            f"NC = ncsnr²/(ncsnr² + 1/n), 1/n = {float(np.mean(1.0 / n_avg)):.3f}"
        )
    return nc, nc_note


def _roi_families(label_dir: Path, vids: list[np.ndarray], where: str, n_full: int):
    """The ROI label families present for both hemispheres: the paper's ROIs
    (``roi`` (V,), ``roi_names``) and every family relabelled 1..K with its names."""
    n_vertices = sum(len(hv) for hv in vids)
    families: dict = {}
    for fam in _FAMILIES:
        parts = []
        table: dict[int, str] = {}
        for hemi, hv in zip(("lh", "rh"), vids, strict=True):
            p = label_dir / f"{hemi}.{fam}.mgz"
            if not p.exists():
                break
            lab, table = read_mgz_labels(p)
            if lab.shape != (n_full,):
                raise DatasetError(
                    f"{where}: {p.name} has {lab.shape[0]} vertices; expected {n_full}"
                )
            parts.append(lab[hv])
        if len(parts) == 2:
            families[fam] = (np.concatenate(parts), table)
    roi, roi_names = paper_rois(families, n_vertices)
    roi_families = {}
    for fam, (lab, table) in families.items():
        vals = sorted(v for v in table if v > 0)
        out = np.zeros(lab.shape, np.int64)
        for k, v in enumerate(vals):
            out[lab == v] = k + 1
        roi_families[fam] = (out, [table[v] for v in vals])
    return roi, roi_names, roi_families


def _brick_loader(path: Path, nsd_ids: np.ndarray):
    """Loader reading images from the HDF5 ``imgBrick`` (opened per call)."""

    def load(idx: np.ndarray) -> list[np.ndarray]:
        try:
            import h5py
        except ImportError as exc:  # pragma: no cover
            raise ImportError("reading NSD stimuli needs h5py: pip install h5py") from exc
        ids = nsd_ids[np.asarray(idx, np.int64)]
        order = np.argsort(ids, kind="stable")
        out: list[np.ndarray] = [None] * len(ids)  # type: ignore[list-item]
        try:
            with h5py.File(str(path), "r") as f:
                if "imgBrick" not in f:
                    raise DatasetError(f"NSD stimuli {path}: expected dataset 'imgBrick'; missing")
                brick = f["imgBrick"]
                for k in order:
                    out[k] = np.asarray(brick[int(ids[k])], np.uint8)
        except (OSError, ValueError, IndexError) as exc:
            if isinstance(exc, DatasetError):
                raise
            bad = int(idx[int(order[0])]) if len(idx) else -1
            raise ImageDecodeError(
                f"NSD stimuli {path}: cannot read: {exc}", bad, str(path)
            ) from exc
        return out

    return load
