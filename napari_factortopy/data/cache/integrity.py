"""Damage: missing or short chunk files, rows that do not match their digests.

:meth:`FeatureCache.open` checks, cheaply (one ``stat`` per chunk), that every chunk
holding written rows exists with its exact size and that every written row has a
digest. Opened read-only, a damaged cache is refused naming the array, the chunk file
and the rows; opened ``"r+"`` (to extract), the damaged rows count as missing, so
extraction recomputes them. :meth:`FeatureCache.verify` reads everything and compares
each row with its digest (bit flips of the same size); ``repair=True`` marks the rows
it finds unwritten, for the next extraction to recompute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .format import _DIGEST_BYTES, _ZARR_MAJOR, CacheError
from .identity import image_digest

__all__ = ["CacheReport"]


@dataclass
class CacheReport:
    """What :meth:`FeatureCache.verify` found.

    Attributes
    ----------
    path : pathlib.Path
        The cache.
    n_images, n_written : int
        Rows in the cache, rows marked written.
    n_checked : int
        Written rows whose features were read and compared with their digests.
    damaged : dict of int → str
        Row → what is wrong with it (missing or short chunk, digest mismatch,
        non-finite values, image content changed).
    repaired : bool
        Whether the damaged rows were marked unwritten.
    """

    path: Path
    n_images: int
    n_written: int
    n_checked: int = 0
    damaged: dict[int, str] = dataclasses.field(default_factory=dict)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """No damaged rows."""
        return not self.damaged

    def summary(self) -> str:
        """A few lines: counts, then the first damaged rows and why."""
        head = (
            f"feature cache {self.path}: {self.n_written}/{self.n_images} rows written, "
            f"{self.n_checked} checked, {len(self.damaged)} damaged"
        )
        lines = [head]
        for row, why in list(self.damaged.items())[:10]:
            lines.append(f"  row {row}: {why}")
        if len(self.damaged) > 10:
            lines.append(f"  ... and {len(self.damaged) - 10} more")
        if self.damaged:
            lines.append(
                "  marked unwritten: rerun `factortopy extract` to recompute them"
                if self.repaired
                else "  rerun with --repair (or `factortopy extract ... --verify`) to mark "
                "them unwritten, then extract recomputes them"
            )
        return "\n".join(lines)


def _row_digests(image_digests: np.ndarray, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Row digests ``(B, 32)`` of image digests ``(B, 32)`` and per-layer float16 rows."""
    out = np.empty((len(image_digests), _DIGEST_BYTES), np.uint8)
    flat = [np.ascontiguousarray(a).reshape(len(a), -1) for a in arrays]
    for i in range(len(image_digests)):
        h = hashlib.sha256(image_digests[i].tobytes())
        for a in flat:
            h.update(a[i].view(np.uint8).data)
        out[i] = np.frombuffer(h.digest(), np.uint8)
    return out


class _Integrity:
    """:class:`~napari_factortopy.data.cache.FeatureCache`'s damage checks and repair."""

    _path: Path
    _mode: str
    _version: int
    _local: list[Any]
    _global: list[Any]
    _written: Any
    _image_digest: Any
    _row_digest: Any
    _damaged: dict[int, str]

    def _chunk_file(self, arr: Any, k: int) -> Path:
        index = (k,) + (0,) * (len(arr.shape) - 1)
        if _ZARR_MAJOR >= 3:
            key = arr.metadata.encode_chunk_key(index)
        else:  # pragma: no cover - zarr 2
            key = ".".join(str(i) for i in index)
        return self._path / arr.path / key

    def _arrays(self) -> list[Any]:
        out = [*self._local, *self._global]
        if self._version >= 2:
            out += [self._image_digest, self._row_digest]
        return out

    def _check_chunks(self) -> dict[int, str]:
        """Written rows whose chunk files are missing or of the wrong size (cheap)."""
        n, chunk = self.n_images, self.chunk_images
        for k in range(-(-n // chunk)):
            f = self._chunk_file(self._written, k)
            try:
                found = f.stat().st_size
            except OSError:
                continue  # absent: all unwritten
            if found != chunk:  # one byte per flag
                if self._mode != "r+":
                    raise CacheError(
                        f"feature cache {self._path}: damaged: chunk file {f} of the "
                        f"'written' flags has {found} bytes, expected {chunk}; rerun "
                        "`factortopy extract` to recompute its rows"
                    )
                f.unlink(missing_ok=True)  # its rows read as unwritten: recomputed
        flags = np.asarray(self._written[:], dtype=bool)
        damaged: dict[int, str] = {}
        chunks = np.unique(np.flatnonzero(flags) // chunk)
        for arr in self._arrays():
            size = chunk * int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize
            # the chunk key of (k, 0, ..., 0), built once per array (stat is the cost)
            template = str(self._chunk_file(arr, 987654321)).replace("987654321", "{}")
            for k in chunks:
                f = template.format(int(k))
                try:
                    found = os.stat(f).st_size
                except OSError:
                    found = None
                if found == size:
                    continue
                why = (
                    f"chunk file {f} is missing"
                    if found is None
                    else f"chunk file {f} has {found} bytes, expected {size}"
                )
                rows = np.arange(k * chunk, min((k + 1) * chunk, n))
                for r in rows[flags[rows]]:
                    damaged.setdefault(int(r), why)
        if self._version >= 2 and flags.any():
            try:
                digests = np.asarray(self._row_digest[:])
            except Exception:
                digests = None
            if digests is not None:
                blank = flags & ~digests.any(axis=1)
                for r in np.flatnonzero(blank):
                    damaged.setdefault(int(r), "marked written but it has no row digest")
        return damaged

    def verify(
        self,
        load_images: Callable[[np.ndarray], Sequence[Any]] | None = None,
        *,
        repair: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> CacheReport:
        """Read every written row and compare it with its digest.

        Parameters
        ----------
        load_images : callable, optional
            ``load_images(indices) -> images`` of the dataset the cache was made from:
            each written row's image is decoded again and its digest compared too
            (finds a cache built from other images sharing the names).
        repair : bool
            Mark the damaged rows unwritten (needs mode ``"r+"``), so that the next
            extraction recomputes them.
        progress : callable, optional
            ``progress(done_chunks, total_chunks)`` after each chunk.

        Returns
        -------
        CacheReport
            Damaged rows: missing or short chunk files, unreadable chunks, digest
            mismatches (bit flips), non-finite values, changed image content. Rows of a
            version-1 cache have no digests: only readability and finiteness are checked.

        Raises
        ------
        CacheError
            ``repair=True`` on a read-only cache.
        """
        if repair and self._mode != "r+":
            raise CacheError(f"feature cache {self._path}: open it with mode='r+' to repair it")
        flags = np.asarray(self._written[:], dtype=bool)
        report = CacheReport(self._path, self.n_images, int(flags.sum()))
        damaged = dict(self._damaged)
        damaged.update(self._check_chunks())
        n, chunk = self.n_images, self.chunk_images
        chunks = np.unique(np.flatnonzero(flags) // chunk)
        for done, k in enumerate(chunks, start=1):
            rows = np.arange(k * chunk, min((k + 1) * chunk, n))
            rows = rows[flags[rows]]
            rows = np.asarray([r for r in rows if int(r) not in damaged], np.int64)
            if rows.size:
                self._verify_rows(rows, damaged, load_images)
                report.n_checked += int(rows.size)
            if progress is not None:
                progress(done, len(chunks))
        report.damaged = dict(sorted(damaged.items()))
        if repair and damaged:
            self.mark_unwritten(sorted(damaged))
            report.repaired = True
        return report

    def _verify_rows(
        self, rows: np.ndarray, damaged: dict[int, str], load_images: Callable | None
    ) -> None:
        sel = slice(int(rows[0]), int(rows[-1]) + 1)
        pick = rows - rows[0]
        try:
            arrays = []
            for loc, glo in zip(self._local, self._global, strict=True):
                arrays.append(np.asarray(loc[sel])[pick])
                arrays.append(np.asarray(glo[sel])[pick])
            if self._version >= 2:
                img = np.asarray(self._image_digest[sel])[pick]
                stored = np.asarray(self._row_digest[sel])[pick]
        except Exception as exc:
            for r in rows:
                damaged[int(r)] = f"cannot be read ({type(exc).__name__}: {exc})"
            return
        finite = np.ones(len(rows), bool)
        for a in arrays:
            finite &= np.isfinite(a.reshape(len(rows), -1)).all(axis=1)
        if self._version >= 2:
            found = _row_digests(img, arrays)
            bad = ~(found == stored).all(axis=1)
            for r in rows[bad]:
                damaged[int(r)] = "its features do not match the row digest (a corrupted chunk)"
        for r in rows[~finite]:
            damaged.setdefault(int(r), "non-finite feature values")
        if load_images is not None and self._version >= 2:
            ids = self.image_ids
            images = load_images(rows)
            for j, (r, im) in enumerate(zip(rows, images, strict=True)):
                if img[j].any() and not np.array_equal(image_digest(im), img[j]):
                    damaged.setdefault(
                        int(r),
                        f"image {ids[int(r)]!r} differs from the one its features were "
                        "computed from",
                    )

    def mark_unwritten(self, rows: Sequence[int]) -> None:
        """Mark rows unwritten (damaged rows, before recomputing them).

        Parameters
        ----------
        rows : sequence of int
            Row indices in ``[0, N)``.
        """
        if self._mode != "r+":
            raise CacheError(f"feature cache {self._path}: open it with mode='r+' to change it")
        idx = np.unique(np.asarray(rows, np.int64))
        if idx.size:
            self._written.set_orthogonal_selection((idx,), np.zeros(idx.size, bool))
        for r in idx:
            self._damaged.pop(int(r), None)
