"""Responses read from their files by rows (ResponseRows) against the matrix in memory."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.responses import ResponseRows, row_blocks


def _parts(tmp_path, n=13, widths=(5, 7), dtypes=(np.float32, np.float64)):
    rng = np.random.default_rng(0)
    arrays, maps = [], []
    for i, (w, dt) in enumerate(zip(widths, dtypes, strict=True)):
        a = rng.standard_normal((n, w)).astype(dt)
        np.save(tmp_path / f"p{i}.npy", a)
        arrays.append(a)
        maps.append(np.load(tmp_path / f"p{i}.npy", mmap_mode="r"))
    return np.concatenate(arrays, 1).astype(np.float32), maps


def test_rows_read_from_files_equal_the_matrix_in_memory(tmp_path):
    """Rows by index arrays (repeats, any order, negative), masks, slices, single ints
    and (rows, columns) pairs give numpy's own indexing of the concatenated matrix."""
    full, maps = _parts(tmp_path)
    r = ResponseRows(maps)
    assert r.shape == full.shape and len(r) == 13 and r.ndim == 2 and r.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(r), full)
    for rows in ([3, 1, 2, 12, 3, 0], [-1, 4], np.arange(13)[::-1], [], [7]):
        np.testing.assert_array_equal(r[np.asarray(rows, np.int64)], full[np.asarray(rows, int)])
    mask = np.arange(13) % 3 == 1
    np.testing.assert_array_equal(r[mask], full[mask])
    np.testing.assert_array_equal(r[2:9:2], full[2:9:2])
    np.testing.assert_array_equal(r[5], full[5])
    np.testing.assert_array_equal(r[np.array([4, 2]), 6:9], full[[4, 2], 6:9])
    with pytest.raises(IndexError, match="outside"):
        r[np.array([13])]


def test_subsets_of_rows_and_columns_compose(tmp_path):
    """Row and column subsets, taken in either order and twice, read what numpy's
    indexing of the matrix gives; nothing is read until asked for."""
    full, maps = _parts(tmp_path)
    cols = np.array([0, 3, 4, 5, 9, 11])  # both files
    rows = np.array([12, 0, 5, 6, 7])
    a = ResponseRows(maps).subset_columns(cols).subset_rows(rows)
    b = ResponseRows(maps).subset_rows(rows).subset_columns(np.isin(np.arange(12), cols))
    for got in (a, b):
        assert got.shape == (5, 6)
        np.testing.assert_array_equal(np.asarray(got), full[rows][:, cols])
    twice = a.subset_rows(np.array([True, False, True, True, False])).subset_columns([1, 4])
    np.testing.assert_array_equal(np.asarray(twice), full[rows[[0, 2, 3]]][:, cols[[1, 4]]])
    blocks = list(row_blocks(a, max_bytes=2 * 6 * 4))
    assert [sl.stop - sl.start for sl, _ in blocks] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([v for _, v in blocks]), np.asarray(a))


def test_bad_files_are_refused(tmp_path):
    full, maps = _parts(tmp_path)
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((13, 4), np.float32)))
    with pytest.raises(ValueError, match="C-ordered"):
        ResponseRows([np.load(tmp_path / "f.npy", mmap_mode="r")])
    np.save(tmp_path / "short.npy", np.zeros((12, 4), np.float32))
    with pytest.raises(ValueError, match="12 rows"):
        ResponseRows([maps[0], np.load(tmp_path / "short.npy", mmap_mode="r")])
    with pytest.raises(ValueError, match="memory-mapped"):
        ResponseRows([full])
