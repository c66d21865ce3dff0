"""What the paper's released model needs from outside: the file, its vertices, the sphere.

- :func:`load_checkpoint` reads a ``.pth``/``.ckpt`` with ``torch.load(weights_only=True)``
  only (a pickle that would run code is refused, never executed) and returns its
  FactorTopy part (bare or Lightning; :func:`~napari_factortopy.core.official.split_checkpoint`).
- :func:`algonauts_release_vertices` derives the release's modelled vertices from an
  Algonauts 2023 subject's ``roi_masks/``: the challenge space
  (``{lh,rh}.all-vertices_fsaverage_space.npy``) minus its RSC add-on (floc-places label
  RSC), as joint indices into the 2 × 163,842 fsaverage vertices, with the paper's ROI
  groups.
- :func:`read_joint_vertices` reads such indices from a ``.npy`` file.
- :func:`release_coordinates` builds their coordinates the release's way from the
  fsaverage sphere (found as elsewhere: ``subjects_dir``, ``$SUBJECTS_DIR``, nilearn's
  data folder; downloaded only when allowed).

Errors are :class:`~napari_factortopy.core.official.CheckpointError` (the file) or
:class:`~napari_factortopy.data.datasets.DatasetError` /
:class:`~napari_factortopy.data.surfaces.SurfaceError` (the rest), all ``ValueError``\\ s
with one line naming the file, what was expected and what was found. torch is imported
inside :func:`load_checkpoint`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.official import CheckpointError, release_joint_coordinates, split_checkpoint
from .datasets._base import DatasetError, load_npy, paper_rois, require
from .datasets.algonauts import ROI_FAMILIES, _read_family
from .surfaces import MESH_SIZES, load_mesh, read_algonauts_mapping

__all__ = [
    "N_HEMI",
    "N_JOINT",
    "Checkpoint",
    "ReleaseVertices",
    "algonauts_release_vertices",
    "load_checkpoint",
    "read_joint_vertices",
    "release_coordinates",
]

#: Vertices per hemisphere of fsaverage (fsaverage7) and of both joined.
N_HEMI = MESH_SIZES["fsaverage"]
N_JOINT = 2 * N_HEMI


@dataclass
class Checkpoint:
    """The FactorTopy part of a checkpoint file.

    Attributes
    ----------
    path : Path
    state : dict str → float array
        Unprefixed release keys.
    kind : {"bare", "lightning"}
    ignored : list of str
        Lightning keys of the release's training module left out (backbone, coords).
    coords : array of shape (V, 3) or None
        The modelled vertices' coordinates a Lightning checkpoint carries.
    """

    path: Path
    state: dict[str, np.ndarray]
    kind: str
    ignored: list[str] = field(default_factory=list)
    coords: np.ndarray | None = None


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _numpy(value):
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    return value


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint safely and return its FactorTopy part.

    Only ``torch.load(..., weights_only=True)`` is used: tensors, numbers, strings and
    containers are read, any other Python object (a pickle that would import or run
    code) is refused without running it.

    Parameters
    ----------
    path : path
        A ``torch.save`` file: the release's bare state dict or a Lightning checkpoint.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        ``"<path>: expected …; found …"`` for a file torch cannot read, a pickle with
        code, or contents that are not a state dict (the release's keys are checked
        later, by :func:`~napari_factortopy.core.official.check_release_state`).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" not in text.lower() and "unsupported global" not in text.lower():
            raise CheckpointError(
                f"{path}: expected a PyTorch checkpoint written by torch.save; found a file "
                f"torch cannot read (UnpicklingError: {_one_line(text)})"
            ) from None
        m = re.search(r"(?:Unsupported global|GLOBAL)[: ]+(?:GLOBAL )?([\w.]+)", text)
        what = f" ({m.group(1)})" if m else ""
        raise CheckpointError(
            f"{path}: expected tensors only (read with torch.load(weights_only=True)); found "
            f"a pickle that references Python code{what}: refused, nothing was run"
        ) from None
    except Exception as exc:  # zip, EOF, magic-number and other format errors
        raise CheckpointError(
            f"{path}: expected a PyTorch checkpoint written by torch.save; found a file torch "
            f"cannot read ({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    if isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping):
            obj = dict(obj)
            obj["state_dict"] = {k: _numpy(v) for k, v in obj["state_dict"].items()}
        else:
            obj = {k: _numpy(v) for k, v in obj.items()}
    try:
        state, kind, ignored = split_checkpoint(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    coords = None
    if kind == "lightning" and "coords" in ignored:
        c = np.asarray(obj["state_dict"]["coords"])
        coords = c if c.ndim == 2 and c.shape[1] == 3 else None
    return Checkpoint(path=path, state=state, kind=kind, ignored=ignored, coords=coords)


@dataclass
class ReleaseVertices:
    """Modelled vertices as joint fsaverage indices, with their ROI labels.

    Attributes
    ----------
    joint : int64 array of shape (V,)
        Indices into the 2 × 163,842 joint vertices, left hemisphere first.
    n_lh : int
    roi : int64 array of shape (V,)
        0 = none, k = ``roi_names[k-1]``.
    roi_names : list of str
    source : str
        Where they came from (for ``info``).
    """

    joint: np.ndarray
    n_lh: int
    roi: np.ndarray
    roi_names: list[str]
    source: str

    @property
    def vertex_ids(self) -> np.ndarray:
        """Per-hemisphere mesh indices (V,)."""
        return np.where(np.arange(len(self.joint)) < self.n_lh, self.joint, self.joint - N_HEMI)


def _check_joint(joint: np.ndarray, where: str) -> int:
    """Checks joint indices; returns n_lh."""
    if joint.size == 0:
        raise DatasetError(f"{where}: expected at least one vertex index; found none")
    lo, hi = int(joint.min()), int(joint.max())
    if lo < 0 or hi >= N_JOINT:
        raise DatasetError(
            f"{where}: expected indices into the {N_JOINT} joint fsaverage vertices "
            f"(0..{N_JOINT - 1}, left hemisphere first); found {lo}..{hi}"
        )
    if np.unique(joint).size != joint.size:
        raise DatasetError(f"{where}: expected each vertex once; found repeated indices")
    is_rh = joint >= N_HEMI
    n_lh = int((~is_rh).sum())
    if is_rh[:n_lh].any():
        raise DatasetError(
            f"{where}: expected the left hemisphere's indices (< {N_HEMI}) first, then the "
            "right's; found them interleaved"
        )
    return n_lh


def read_joint_vertices(path: str | os.PathLike) -> ReleaseVertices:
    """Vertex indices from a ``.npy`` file (no ROI labels).

    Parameters
    ----------
    path : path
        A 1-D integer array: indices into the 327,684 joint fsaverage vertices, left
        hemisphere first, in the checkpoint's row order.

    Returns
    -------
    ReleaseVertices
    """
    path = Path(path)
    where = f"vertex file {path}"
    require(path, "a .npy file of joint fsaverage vertex indices", "import")
    arr = load_npy(path, "a 1-D integer array of joint fsaverage vertex indices", where)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: expected a 1-D integer array of joint fsaverage vertex indices; found "
            f"{arr.dtype} {arr.shape}"
        )
    joint = np.asarray(arr, np.int64)
    n_lh = _check_joint(joint, where)
    return ReleaseVertices(joint, n_lh, np.zeros(len(joint), np.int64), [], f"{path}")


def algonauts_release_vertices(root: str | os.PathLike) -> ReleaseVertices:
    """The release's modelled vertices of an Algonauts 2023 subject, from its ROI masks.

    Parameters
    ----------
    root : path
        The subject folder (``…/subj01``, holding ``roi_masks/``) or its ``roi_masks``
        folder. Only the masks are read: ``{lh,rh}.all-vertices_fsaverage_space.npy``,
        ``{lh,rh}.floc-places_{challenge,fsaverage}_space.npy`` and
        ``mapping_floc-places.npy`` (RSC), and the other families' labels for ROI names.

    Returns
    -------
    ReleaseVertices
        The challenge space minus RSC (37,984 vertices for subject 1), joint indices in
        ascending order, with the paper's ROI groups.

    Raises
    ------
    DatasetError
        A missing or malformed mask (named).
    """
    root = Path(root)
    roi_dir = (
        root if (root / "lh.all-vertices_fsaverage_space.npy").exists() else root / "roi_masks"
    )
    where = f"Algonauts folder {root}"
    if not root.is_dir():
        raise DatasetError(f"{where}: no such folder")
    require(roi_dir, "the ROI masks folder (roi_masks/)", where)
    table_path = require(
        roi_dir / "mapping_floc-places.npy", "the floc-places label table (for RSC)", where
    )
    places = read_algonauts_mapping(table_path)
    rsc = [k for k, name in places.items() if name == "RSC"]
    if not rsc:
        raise DatasetError(
            f"{where}: expected an 'RSC' entry in {table_path.name}; found "
            f"{sorted(places.values())}"
        )
    joint, n_lh = [], 0
    fams: dict[str, list[np.ndarray]] = {}
    tables: dict[str, dict[int, str]] = {}
    n_challenge = n_rsc = 0
    for offset, hemi in ((0, "lh"), (N_HEMI, "rh")):
        mpath = require(
            roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", f"the {hemi} vertex mask", where
        )
        mask = load_npy(mpath, f"a ({N_HEMI},) mask", where)
        if mask.shape != (N_HEMI,):
            raise DatasetError(
                f"{where}: {mpath.name}: expected shape ({N_HEMI},), one entry per fsaverage "
                f"vertex; found {mask.shape}"
            )
        hv = np.flatnonzero(mask).astype(np.int64)
        lab = _read_family(roi_dir, hemi, "floc-places", hv, where)
        if lab is None:
            raise DatasetError(
                f"{where}: expected {hemi}.floc-places_challenge_space.npy or "
                f"{hemi}.floc-places_fsaverage_space.npy in {roi_dir} (to drop RSC); missing"
            )
        keep = ~np.isin(lab, rsc)
        n_challenge += len(hv)
        n_rsc += int((~keep).sum())
        joint.append(offset + hv[keep])
        if hemi == "lh":
            n_lh = int(keep.sum())
        for fam in ROI_FAMILIES:
            labels = _read_family(roi_dir, hemi, fam, hv, where)
            if labels is None:
                continue
            fams.setdefault(fam, []).append(labels[keep])
            table = roi_dir / f"mapping_{fam}.npy"
            if table.exists():
                tables[fam] = read_algonauts_mapping(table)
    all_joint = np.concatenate(joint)
    families = {
        f: (np.concatenate(ls), tables.get(f, {})) for f, ls in fams.items() if len(ls) == 2
    }
    roi, names = paper_rois(families, len(all_joint))
    source = (
        f"Algonauts subject {root}: challenge space ({n_challenge}) minus RSC ({n_rsc}) = "
        f"{len(all_joint)} vertices"
    )
    return ReleaseVertices(all_joint, n_lh, roi, names, source)


def release_coordinates(
    joint: np.ndarray,
    *,
    subjects_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> np.ndarray:
    """Coordinates of modelled vertices the release's way, from the fsaverage sphere.

    Parameters
    ----------
    joint : int array of shape (V,)
        Joint fsaverage indices, left hemisphere first.
    subjects_dir, allow_download
        Where to find fsaverage's ``{lh,rh}.sphere`` (see
        :func:`~napari_factortopy.data.surfaces.load_mesh`).

    Returns
    -------
    array of shape (V, 3), float64
        :func:`~napari_factortopy.core.official.release_joint_coordinates` of both whole
        spheres, indexed by ``joint``.
    """
    spheres = [
        load_mesh(
            "fsaverage", "sphere", hemi, subjects_dir=subjects_dir, allow_download=allow_download
        ).vertices
        for hemi in ("lh", "rh")
    ]
    both = release_joint_coordinates(*spheres)
    return both[np.asarray(joint, np.int64)]
