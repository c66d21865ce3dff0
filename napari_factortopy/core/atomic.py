"""Atomic file writes: write beside the target, then rename over it.

A reader never sees a half-written file where a good one was: the content goes to a
temporary file in the target's folder, is flushed to disk, and only then replaces the
target with :func:`os.replace`. On any error the temporary file is removed and the
target is untouched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Parameters
    ----------
    path : path
        The file to (re)write; its folder is created if missing.
    suffix : str, optional
        Suffix of the temporary name (default: ``path``'s own), for writers that pick
        the format from the name (PIL, nibabel, matplotlib).

    Yields
    ------
    Path
        Where to write. It is fsynced, then renamed over ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ext = "".join(target.suffixes) if suffix is None else suffix
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp{ext}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
