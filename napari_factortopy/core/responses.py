"""Responses read from their ``.npy`` files row by row, when they are asked for.

Training needs a batch of response rows per step, the validation rows per validation
and the test rows once; holding every row costs N × V × 4 bytes (1.47 GiB for
Algonauts subject 1, 4.7 GB for an NSD subject's 30,000 single trials), on top of the
feature windows a memory limit allows. :class:`ResponseRows` keeps the files instead and
reads the rows it is asked for by plain reads (never through a memory mapping, whose
pages would count in the process's memory as they are touched).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResponseRows", "row_blocks"]


class ResponseRows:
    """An (N, V) float32 matrix of responses, kept in ``.npy`` files and read by rows.

    The columns are those of one or more files side by side (e.g. the left, then the
    right hemisphere), each optionally restricted to some of its columns; the rows may
    be a subset of the files' rows, in any order.

    Parameters
    ----------
    parts : sequence of numpy.memmap
        C-ordered (N_file, V_p) arrays as ``np.load(path, mmap_mode="r")`` gives them
        (only their file name, offset, dtype and shape are used), one row count for all.
    columns : sequence of (array of int or None), optional
        Columns kept of each part (``None``: all), in order.
    rows : array of int, optional
        The files' row of each row of this matrix (default: all, in order).

    Notes
    -----
    Indexing with an integer array, a boolean mask, a slice or an int (optionally
    followed by a column index) reads those rows and returns a float32 ndarray;
    ``np.asarray`` reads every row; :func:`row_blocks` reads a block of rows at a time.
    :meth:`subset_rows` and :meth:`subset_columns` return another
    :class:`ResponseRows` without reading anything.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        parts: Sequence[np.memmap],
        columns: Sequence[np.ndarray | None] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        if not parts:
            raise ValueError("ResponseRows needs at least one file")
        self._files = []
        n_file = int(parts[0].shape[0])
        for p in parts:
            if not (isinstance(p, np.memmap) and p.filename and p.ndim == 2):
                raise ValueError("ResponseRows reads 2-D arrays memory-mapped from .npy files")
            if not p.flags.c_contiguous:
                raise ValueError(f"{p.filename}: rows are read whole; the array must be C-ordered")
            if int(p.shape[0]) != n_file:
                raise ValueError(
                    f"{p.filename}: {p.shape[0]} rows, but {parts[0].filename} has {n_file}"
                )
            self._files.append((str(p.filename), int(p.offset), p.dtype, int(p.shape[1])))
        cols = list(columns) if columns is not None else [None] * len(parts)
        if len(cols) != len(parts):
            raise ValueError(f"{len(cols)} column selections for {len(parts)} files")
        self._columns = [None if c is None else np.asarray(c, np.int64) for c in cols]
        self._n_file = n_file
        self._rows = None if rows is None else np.asarray(rows, np.int64)
        if (
            self._rows is not None
            and self._rows.size
            and (self._rows.min() < 0 or self._rows.max() >= n_file)
        ):
            raise IndexError(f"rows outside the files' 0..{n_file - 1}")

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int]:
        n = self._n_file if self._rows is None else len(self._rows)
        v = sum(
            width if c is None else len(c)
            for (_, _, _, width), c in zip(self._files, self._columns, strict=True)
        )
        return (int(n), int(v))

    @property
    def nbytes(self) -> int:
        """What :func:`np.asarray` of it would take (N · V · 4 bytes)."""
        n, v = self.shape
        return n * v * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        files = ", ".join(Path(f).name for f, *_ in self._files)
        return f"ResponseRows({self.shape[0]} × {self.shape[1]} from {files})"

    # ------------------------------------------------------------------ views
    def subset_rows(self, rows: Any) -> ResponseRows:
        """Some rows (int indices or a boolean mask (N,)), nothing read."""
        idx = _row_indices(rows, len(self))
        out = self._copy()
        out._rows = idx if self._rows is None else self._rows[idx]
        return out

    def subset_columns(self, keep: Any) -> ResponseRows:
        """Some columns (int indices in increasing order, or a boolean mask (V,))."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        keep = np.asarray(keep, np.int64)
        if keep.size and np.any(np.diff(keep) <= 0):
            raise ValueError("subset_columns keeps columns in their order: give them sorted")
        out = self._copy()
        lo = 0
        for i, ((_, _, _, width), c) in enumerate(zip(self._files, self._columns, strict=True)):
            n_cols = width if c is None else len(c)
            mine = keep[(keep >= lo) & (keep < lo + n_cols)] - lo
            out._columns[i] = mine if c is None else c[mine]
            lo += n_cols
        return out

    def _copy(self) -> ResponseRows:
        out = object.__new__(ResponseRows)
        out._files, out._n_file, out._rows = list(self._files), self._n_file, self._rows
        out._columns = list(self._columns)
        return out

    # ------------------------------------------------------------------ reads
    def take(self, rows: Any) -> np.ndarray:
        """Rows ``rows`` (int indices, a boolean mask, a slice or an int) as float32
        (n, V) (or (V,) for an int)."""
        single = isinstance(rows, (int, np.integer))
        idx = _row_indices(np.array([rows]) if single else rows, len(self))
        src = idx if self._rows is None else self._rows[idx]
        out = np.empty((len(src), self.shape[1]), np.float32)
        lo = 0
        for (path, offset, dtype, width), cols in zip(self._files, self._columns, strict=True):
            n_cols = width if cols is None else len(cols)
            if n_cols:
                _read_rows(path, offset, dtype, width, src, out[:, lo : lo + n_cols], cols)
            lo += n_cols
        return out[0] if single else out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"ResponseRows is 2-D; got an index of {len(key)} parts")
            return self.take(key[0])[..., key[1]]
        return self.take(key)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.take(slice(None))
        return out if dtype is None else out.astype(dtype, copy=False)


def row_blocks(y: Any, max_bytes: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, values)`` for consecutive blocks of rows of ``y`` of at most
    ``max_bytes`` each (at least one row).

    Parameters
    ----------
    y : array of shape (N, V) or ResponseRows
    max_bytes : int

    Yields
    ------
    rows : slice
    values : array of shape (rows, V), ``y``'s dtype (float32 for ResponseRows)
    """
    n, v = y.shape
    step = max(1, max_bytes // max(1, v * y.dtype.itemsize))
    for lo in range(0, n, step):
        sl = slice(lo, min(n, lo + step))
        yield sl, y[sl]


def _row_indices(rows: Any, n: int) -> np.ndarray:
    if isinstance(rows, slice):
        return np.arange(n, dtype=np.int64)[rows]
    idx = np.asarray(rows)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean row mask must have shape ({n},); found {idx.shape}")
        return np.flatnonzero(idx)
    if idx.size and idx.dtype.kind not in "iu":
        raise IndexError(f"rows must be integers; found {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"rows outside 0..{n - 1}")
    return np.where(idx < 0, idx + n, idx)


def _read_rows(
    path: str,
    offset: int,
    dtype: np.dtype,
    width: int,
    rows: np.ndarray,
    out: np.ndarray,
    cols: np.ndarray | None,
) -> None:
    """Read rows ``rows`` of one file into ``out`` (len(rows), n_cols): each run of
    consecutive rows by one read."""
    row_bytes = width * dtype.itemsize
    per_read = max(1, (32 * 2**20) // row_bytes)  # rows of one read, at most 32 MiB
    if not len(rows):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        # runs of consecutive file rows (repeats read again: they are rare)
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first, count = int(sorted_rows[run[0]]), len(run)
            for lo in range(0, count, per_read):
                hi = min(count, lo + per_read)
                want = (hi - lo) * row_bytes
                buf = os.pread(fd, want, offset + (first + lo) * row_bytes)
                if len(buf) != want:
                    raise OSError(f"{path}: the file ended before row {first + lo + len(buf)}")
                block = np.frombuffer(buf, dtype).reshape(hi - lo, width)
                out[order[run[lo:hi]]] = block if cols is None else block[:, cols]
    finally:
        os.close(fd)
