"""Dataset readers: Algonauts 2023, raw NSD, and a plain folder format.

Every reader returns a :class:`Dataset`; :func:`load_dataset` detects the kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._base import (
    PAPER_ROI_GROUPS,
    Dataset,
    DatasetError,
    ImageDecodeError,
    file_image_loader,
    paper_rois,
)
from .algonauts import is_algonauts, load_algonauts
from .folder import is_folder_dataset, load_folder, write_folder
from .nsd import is_nsd, load_nsd

__all__ = [
    "DATASET_KINDS",
    "PAPER_ROI_GROUPS",
    "Dataset",
    "DatasetError",
    "ImageDecodeError",
    "detect_kind",
    "file_image_loader",
    "load_algonauts",
    "load_dataset",
    "load_folder",
    "load_nsd",
    "paper_rois",
    "write_folder",
]

DATASET_KINDS = ("algonauts", "nsd", "folder")


def detect_kind(path: str | os.PathLike) -> str:
    """``"algonauts"``, ``"nsd"`` or ``"folder"`` from the folder's contents.

    Raises
    ------
    DatasetError
        If none matches (the message says what each kind expects).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {path}: no such folder")
    if is_algonauts(path):
        return "algonauts"
    if is_nsd(path):
        return "nsd"
    if is_folder_dataset(path):
        return "folder"
    raise DatasetError(
        f"dataset {path}: cannot tell its kind: expected training_split/ (Algonauts 2023 "
        "subject folder), nsddata/ and nsddata_betas/ (NSD), or dataset.json (folder format)"
    )


def load_dataset(path: str | os.PathLike, kind: str | None = None, **options: Any) -> Dataset:
    """Read a dataset of any kind.

    Parameters
    ----------
    path : path
    kind : {"algonauts", "nsd", "folder"}, optional
        Detected from the contents when omitted.
    **options
        Passed to the reader (:func:`load_algonauts`, :func:`load_nsd`,
        :func:`load_folder`); options meant for another kind are an error.

    Returns
    -------
    Dataset
    """
    kind = kind or detect_kind(path)
    readers = {"algonauts": load_algonauts, "nsd": load_nsd, "folder": load_folder}
    if kind not in readers:
        raise DatasetError(f"dataset kind must be one of {DATASET_KINDS}; found {kind!r}")
    try:
        return readers[kind](path, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise DatasetError(f"{kind} dataset {path}: {exc}") from exc
        raise
