"""The common return type of every dataset reader, and helpers they share."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.resources import paper_roi_groups
from ...core.responses import ResponseRows, row_blocks

__all__ = [
    "IMAGE_SUFFIXES",
    "PAPER_ROI_GROUPS",
    "Dataset",
    "DatasetError",
    "ImageDecodeError",
    "copy_rows_into",
    "file_image_loader",
    "load_npy",
    "paper_rois",
]

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

#: The paper's ROI groups: (group, family, member names), from the shipped
#: ``resources/roi_groups.csv``. Earlier groups win where families overlap
#: (retinotopic before category-selective).
PAPER_ROI_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (g.group, g.family, g.members) for g in paper_roi_groups()
)


class DatasetError(ValueError):
    """A dataset folder is incomplete or its files disagree."""


class ImageDecodeError(OSError):
    """An image file cannot be read or decoded.

    Attributes
    ----------
    index : int
        Position of the image in the dataset's ``image_ids``.
    path : str
        The file (or container) it comes from.
    """

    def __init__(self, message: str, index: int, path: str) -> None:
        super().__init__(message)
        self.index = int(index)
        self.path = str(path)


@dataclass
class Dataset:
    """Images, responses and their vertices, whatever the source.

    Responses are rows of presentations; images are the unique stimuli (the rows of a
    feature cache). With repeats averaged (the usual case) both coincide.

    Attributes
    ----------
    kind : str
        ``"algonauts"``, ``"nsd"`` or ``"folder"``.
    root : pathlib.Path
        Where it was read from.
    image_ids : array of shape (M,), str
        Unique image ids, one per cache row.
    responses : array of shape (N, V), float32, or ResponseRows
        One row per presentation (N = M when repeats are averaged). A
        :class:`~napari_factortopy.core.responses.ResponseRows` (same shape, rows read
        from the files when indexed) when the loader was asked not to hold them.
    image_index : array of shape (N,), int64
        Row → image (index into ``image_ids``). Rows sharing an image are repeats and
        must stay in one split: use it as the split group.
    vertex_ids : array of shape (V,), int64
        Per-hemisphere mesh indices, left hemisphere first.
    n_lh : int
        How many of the V vertices are left.
    mesh : str
        fsaverage resolution (``"fsaverage"``, ``"fsaverage5"``…) or a surface folder.
    roi : array of shape (V,), int64
        0 = none, k = ``roi_names[k-1]``.
    roi_names : list of str
    noise_ceiling : array of shape (V,), float32, or None
        Fraction of explainable variance (0..1) for responses as given.
    roi_families : dict str → (array (V,) int64, list of str)
        Every label family read (e.g. ``"prf-visualrois"``), same 0/k convention.
    info : dict
        JSON-able provenance (files, options).
    """

    kind: str
    root: Path
    image_ids: np.ndarray
    responses: np.ndarray
    image_index: np.ndarray
    vertex_ids: np.ndarray
    n_lh: int
    mesh: str
    roi: np.ndarray
    roi_names: list[str]
    loader: Callable[[np.ndarray], list[np.ndarray]] = field(repr=False)
    noise_ceiling: np.ndarray | None = None
    roi_families: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, v = self.responses.shape
        where = f"{self.kind} dataset {self.root}"
        if self.image_index.shape != (n,):
            raise DatasetError(
                f"{where}: {n} response rows but {self.image_index.shape[0]} image indices"
            )
        if n and (self.image_index.min() < 0 or self.image_index.max() >= len(self.image_ids)):
            raise DatasetError(
                f"{where}: response rows point outside the {len(self.image_ids)} images"
            )
        if self.vertex_ids.shape != (v,) or self.roi.shape != (v,):
            raise DatasetError(
                f"{where}: {v} response columns but {self.vertex_ids.shape[0]} vertex ids and "
                f"{self.roi.shape[0]} ROI labels"
            )
        if not 0 <= self.n_lh <= v:
            raise DatasetError(f"{where}: n_lh {self.n_lh} outside 0..{v}")

    # ----------------------------------------------------------- sizes

    @property
    def n_images(self) -> int:
        """M, unique images."""
        return len(self.image_ids)

    @property
    def n_samples(self) -> int:
        """N, response rows."""
        return int(self.responses.shape[0])

    @property
    def n_vertices(self) -> int:
        """V."""
        return int(self.responses.shape[1])

    @property
    def image_groups(self) -> np.ndarray:
        """(N,) int64: the split group of each row (= :attr:`image_index`)."""
        return self.image_index

    @property
    def hemispheres(self) -> np.ndarray:
        """(V,) str: ``"lh"`` or ``"rh"`` per vertex."""
        out = np.full(self.n_vertices, "rh", dtype="<U2")
        out[: self.n_lh] = "lh"
        return out

    # ----------------------------------------------------------- access

    def load_images(self, indices: Any) -> list[np.ndarray]:
        """Decode images by position in :attr:`image_ids`.

        Parameters
        ----------
        indices : array-like of int, shape (n,)

        Returns
        -------
        list of n uint8 arrays of shape (H, W, 3)

        Raises
        ------
        ImageDecodeError
            For the first image that cannot be decoded (its index and file named).
        """
        idx = np.asarray(indices, np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_images):
            raise IndexError(f"image indices outside 0..{self.n_images - 1}")
        return self.loader(idx)

    def select_vertices(self, keep: Any) -> Dataset:
        """A copy restricted to some vertices (bool mask (V,) or indices, order kept)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        keep = np.sort(keep.astype(np.int64))
        fam = {k: (lab[keep], names) for k, (lab, names) in self.roi_families.items()}
        return Dataset(
            kind=self.kind,
            root=self.root,
            image_ids=self.image_ids,
            responses=(
                self.responses.subset_columns(keep)  # read from its files: nothing read
                if isinstance(self.responses, ResponseRows)
                else np.ascontiguousarray(self.responses[:, keep])
            ),
            image_index=self.image_index,
            vertex_ids=self.vertex_ids[keep],
            n_lh=int((keep < self.n_lh).sum()),
            mesh=self.mesh,
            roi=self.roi[keep],
            roi_names=list(self.roi_names),
            loader=self.loader,
            noise_ceiling=None if self.noise_ceiling is None else self.noise_ceiling[keep],
            roi_families=fam,
            info=dict(self.info),
        )

    def summary(self) -> str:
        """One line: images, rows, vertices per hemisphere, mesh, ROIs."""
        rep = "" if self.n_samples == self.n_images else f" ({self.n_samples} presentations)"
        return (
            f"{self.kind} {self.root}: {self.n_images} images{rep}, {self.n_vertices} vertices "
            f"({self.n_lh} lh + {self.n_vertices - self.n_lh} rh) on {self.mesh}, "
            f"ROIs {', '.join(self.roi_names) or 'none'}"
        )


def file_image_loader(paths: Sequence[str | os.PathLike]) -> Callable[[np.ndarray], list]:
    """A loader decoding image files with PIL (RGB uint8)."""
    files = [str(p) for p in paths]

    def load(idx: np.ndarray) -> list[np.ndarray]:
        from PIL import Image

        out = []
        for i in np.asarray(idx, np.int64):
            path = files[int(i)]
            try:
                with Image.open(path) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except Exception as exc:
                raise ImageDecodeError(
                    f"image {path}: cannot decode it as an image ({type(exc).__name__}: {exc})",
                    int(i),
                    path,
                ) from exc
        return out

    return load


def paper_rois(
    families: Mapping[str, tuple[np.ndarray, Mapping[int, str] | Sequence[str]]],
    n_vertices: int,
) -> tuple[np.ndarray, list[str]]:
    """Combine label families into the paper's ROI groups (:data:`PAPER_ROI_GROUPS`).

    Parameters
    ----------
    families : dict family → (labels (V,) int, names)
        names: dict value → name, or a list where ``names[k-1]`` names value k.
    n_vertices : int

    Returns
    -------
    roi : array of shape (V,), int64
        0 = none, k = ``names[k-1]``; where groups overlap the earlier group wins.
    names : list of str
        The groups present (at least one vertex), in :data:`PAPER_ROI_GROUPS` order.
    """
    roi = np.zeros(n_vertices, np.int64)
    names: list[str] = []
    for group, family, members in PAPER_ROI_GROUPS:
        if family not in families:
            continue
        labels, table = families[family]
        if not isinstance(table, Mapping):
            table = {k + 1: n for k, n in enumerate(table)}
        values = [v for v, n in table.items() if n in members]
        mask = np.isin(labels, values) & (roi == 0)
        if mask.any():
            names.append(group)
            roi[mask] = len(names)
    return roi, names


def load_npy(path: Path, what: str, where: str, *, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` array, or raise DatasetError naming the file and what is wrong.

    Parameters
    ----------
    path : Path
        The file.
    what : str
        What it should hold, for messages (e.g. ``"a float (N, V) array"``).
    where : str
        The dataset, for messages.
    mmap : bool
        Memory-map it read-only instead of reading it.

    Returns
    -------
    numpy.ndarray
        Never an object array: pickled contents are refused, not unpickled.

    Raises
    ------
    DatasetError
        A truncated file (header and size named), pickled or object contents, or a
        file that is not in the ``.npy`` format.
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _fortran, dtype = reader(fh)
            offset = fh.tell()
        size = path.stat().st_size
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(
            f"{where}: {path} is not a readable .npy file ({type(exc).__name__}: {exc}); "
            f"expected {what} saved with numpy.save"
        ) from None
    if dtype.hasobject:
        raise DatasetError(
            f"{where}: {path} holds Python objects (pickled, dtype {dtype}), which are never "
            f"unpickled; expected {what}: save a numeric array"
        )
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size - offset < need:
        raise DatasetError(
            f"{where}: {path} is truncated: its header declares a {dtype} array of shape "
            f"{shape} ({need} bytes) but only {size - offset} bytes follow (an interrupted "
            f"copy?); expected {what}"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # pragma: no cover - caught above
        raise DatasetError(f"{where}: {path} cannot be read: {exc}") from None


def copy_rows_into(
    out: np.ndarray, columns: slice, mapped: np.ndarray, chunk_bytes: int = 16 * 2**20
) -> None:
    """Copy a memory-mapped (N, V_h) ``.npy`` array into ``out[:, columns]``, a chunk of
    rows at a time, by plain file reads.

    Reading through the mapping, then concatenating, holds the files' pages and the
    concatenated array at once: twice the responses (2.07× measured on 2,000 × 39,548;
    3 GB at Algonauts' 9,841 images). This holds ``out`` and one chunk, read and cast
    (two buffers of ``chunk_bytes``): 1.17×.

    Parameters
    ----------
    out : array of shape (N, V)
        Filled in place (cast to its dtype).
    columns : slice
        ``out``'s columns for this array (V_h of them).
    mapped : numpy.memmap of shape (N, V_h)
        As :func:`load_npy` returns it with ``mmap=True``.
    chunk_bytes : int
        Largest chunk (as float32) read at once.
    """
    if not (isinstance(mapped, np.memmap) and mapped.flags.c_contiguous and mapped.filename):
        out[:, columns] = mapped  # not a plain C-order mapping: numpy copies it
        return
    for rows, block in row_blocks(ResponseRows([mapped]), chunk_bytes):
        out[rows, columns] = block


def require(path: Path, what: str, where: str) -> Path:
    """Raise DatasetError naming ``path`` unless it exists."""
    if not path.exists():
        raise DatasetError(f"{where}: expected {what} at {path}; it is missing")
    return path
