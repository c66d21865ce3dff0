"""The disk space an extraction needs: computed by hand, said before any work."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.data import extract_checks
from napari_factortopy.data.cache import FeatureCache
from napari_factortopy.data.extract import ExtractionError, _check_space, disk_space


def _cache(path, n=10, chunk=4):
    return FeatureCache.create(
        path,
        backbone="toy",
        layer_names=["a", "b"],
        widths=[3, 5],
        grid=(2, 2),
        image_ids=[str(i) for i in range(n)],
        chunk_images=chunk,
    )


def test_disk_space_by_hand(tmp_path):
    c = _cache(tmp_path / "c.zarr")
    # per image: float16 tokens (3·(2·2+1) + 5·(2·2+1)) · 2 = 80 bytes, two 32-byte
    # digests, one written flag: 145 bytes; 10 images in chunks of 4 = 3 whole chunks,
    # plus one chunk being written
    need, free = disk_space(c)
    assert need == (3 + 1) * 4 * 145 and free > 0
    rng = np.random.default_rng(0)
    c.write(
        0,
        [rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(4, 5, 2, 2))],
        [rng.normal(size=(4, 3)), rng.normal(size=(4, 5))],
    )
    assert disk_space(c)[0] == (2 + 1) * 4 * 145  # chunk 0 is on disk already
    assert disk_space(c, np.array([9]))[0] == (1 + 1) * 4 * 145


def test_too_little_space_says_how_much_is_needed(tmp_path, monkeypatch):
    c = _cache(tmp_path / "c.zarr")

    class Usage:
        free = 1000

    monkeypatch.setattr(extract_checks.shutil, "disk_usage", lambda _p: Usage)
    with pytest.raises(ExtractionError) as err:
        _check_space(c, c.missing())
    msg = str(err.value)
    assert "10 images need 2.32 kB" in msg and "80 B per image" in msg
    assert "only 1 kB are free" in msg
    assert "chunks of 4" in msg and "nothing was written" in msg
