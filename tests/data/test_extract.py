"""Extraction: resumable, skip/stop on bad images, disk full, concurrent ranges, CLI."""

from __future__ import annotations

import argparse
import errno
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_factortopy.data import extract as extract_mod  # noqa: E402
from napari_factortopy.data.backbones import timm_backbone  # noqa: E402
from napari_factortopy.data.cache import FeatureCache  # noqa: E402
from napari_factortopy.data.extract import (  # noqa: E402
    ExtractionError,
    extract_features,
    plan_ranges,
)

N = 20


@pytest.fixture(scope="module")
def bb():
    return timm_backbone("vit_tiny_patch16_224", weights="random", img_size=32, depth=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 255, (N, 40, 36, 3), dtype=np.uint8)


def _cache(path, bb, chunk=4):
    return FeatureCache.create(
        path,
        backbone=bb.name,
        layer_names=bb.layer_names,
        widths=bb.widths,
        grid=(2, 2),
        image_ids=[f"img{i}" for i in range(N)],
        preprocessing=bb.preprocessing.to_dict(),
        chunk_images=chunk,
    )


def _run(bb, cache, load, **kw):
    records = list(extract_features(bb, load, cache, device="cpu", **kw))
    return records[-1] if records else None


def _same(a: FeatureCache, b: FeatureCache, idx=None):
    la, ga = a.read(idx)
    lb, gb = b.read(idx)
    for x, y in zip(la + ga, lb + gb, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bb, images):
    c = _cache(tmp_path_factory.mktemp("ref") / "ref.zarr", bb)
    rec = _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    assert rec["done"] == N and c.complete
    return c


def test_tokens_match_the_backbone(reference, bb, images):
    from napari_factortopy.data.backbones import resize_tokens

    x = bb.preprocessing([images[i] for i in range(3)])
    local, global_ = bb(x)
    local = resize_tokens(local, (2, 2))
    lr, gr = reference.read([0, 1, 2])
    np.testing.assert_allclose(lr[1], local[1].numpy().astype(np.float16), rtol=1e-3)
    np.testing.assert_allclose(gr[0], global_[0].numpy().astype(np.float16), rtol=1e-3)


def test_killed_run_resumes_to_the_same_cache(tmp_path, bb, images, reference):
    c = _cache(tmp_path / "c.zarr", bb)
    gen = extract_features(bb, lambda idx: [images[i] for i in idx], c, batch_size=3)
    for _ in range(3):
        next(gen)
    gen.close()  # killed mid-way
    c = FeatureCache.open(tmp_path / "c.zarr", mode="r+")
    assert 0 < int(c.written.sum()) < N
    rec = _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    assert rec["total"] < N and c.complete
    _same(c, reference)  # bitwise: batches sit on a fixed grid


def test_bad_image_skip_or_stop(tmp_path, bb, images, reference):
    def load(idx):
        if 6 in idx:
            raise OSError("truncated file")
        return [images[i] for i in idx]

    c = _cache(tmp_path / "skip.zarr", bb)
    rec = _run(bb, c, load, batch_size=4, on_error="skip")
    assert [s["index"] for s in rec["skipped"]] == [6] and rec["skipped"][0]["image_id"] == "img6"
    assert c.missing().tolist() == [6]
    ok = np.delete(np.arange(N), 6)
    # the batch holding image 6 ran with one image fewer: equal up to float rounding
    for x, y in zip(c.read(ok)[0], reference.read(ok)[0], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-2, atol=1e-3)
    c2 = _cache(tmp_path / "stop.zarr", bb)
    with pytest.raises(ExtractionError, match=re.escape("'img6' (index 6) cannot be decoded")):
        _run(bb, c2, load, batch_size=4)
    assert 6 in FeatureCache.open(tmp_path / "stop.zarr").missing()


def test_disk_full_leaves_a_valid_cache(tmp_path, bb, images, reference, monkeypatch):
    c = _cache(tmp_path / "full.zarr", bb)
    calls = {"n": 0}
    real = FeatureCache.write

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(FeatureCache, "write", flaky)
    with pytest.raises(ExtractionError, match="the disk is full"):
        _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    monkeypatch.setattr(FeatureCache, "write", real)
    c = FeatureCache.open(tmp_path / "full.zarr", mode="r+")
    assert not c.complete
    _same(c, reference, np.flatnonzero(c.written))
    _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    _same(c, reference)


def test_space_check_refuses_before_writing(tmp_path, bb, images, monkeypatch):
    c = _cache(tmp_path / "space.zarr", bb)

    class Usage:
        free = 10

    monkeypatch.setattr(extract_mod.shutil, "disk_usage", lambda _p: Usage)
    with pytest.raises(ExtractionError, match="nothing was written"):
        _run(bb, c, lambda idx: [images[i] for i in idx])
    assert c.missing().size == N


def test_concurrent_ranges(tmp_path, bb, images, reference):
    import threading

    assert plan_ranges(N, 4, 3) == [(0, 8), (8, 12), (12, 20)]
    _cache(tmp_path / "par.zarr", bb)
    errors = []

    def work(rng):
        try:
            cache = FeatureCache.open(tmp_path / "par.zarr", mode="r+")
            _run(bb, cache, lambda idx: [images[i] for i in idx], batch_size=3,
                 images=rng, concurrent=True, prefetch=False)  # fmt: skip
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in plan_ranges(N, 4, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _same(FeatureCache.open(tmp_path / "par.zarr"), reference)
    with pytest.raises(ExtractionError, match="chunk boundary"):
        _run(bb, FeatureCache.open(tmp_path / "par.zarr", mode="r+"),
             lambda idx: [images[i] for i in idx], images=(2, 8), concurrent=True)  # fmt: skip


def test_cli_extract_folder_dataset(tmp_path, capsys):
    from napari_factortopy.app.cli_data import add_extract_parser, run_extract
    from napari_factortopy.data.datasets import write_folder

    rng = np.random.default_rng(0)
    imgs = {f"{i}.png": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(5)}
    root = write_folder(tmp_path / "ds", imgs, np.zeros((5, 2)), np.array([1, 2]), 1)
    (root / "images" / "3.png").write_bytes(b"garbage")
    parser = argparse.ArgumentParser()
    add_extract_parser(parser.add_subparsers())
    cache = tmp_path / "f.zarr"
    argv = ["extract", "--backbone", "efficientnet_lite0", "--weights", "random",
            "--dataset", str(root), "--cache", str(cache), "--grid", "2", "2",
            "--batch-size", "2", "--device", "cpu"]  # fmt: skip
    assert run_extract(parser.parse_args(argv)) == 1
    assert "3.png" in capsys.readouterr().err
    assert run_extract(parser.parse_args([*argv, "--on-error", "skip"])) == 0
    assert FeatureCache.open(cache).missing().tolist() == [3]
    assert "3.png" in (tmp_path / "f.zarr.skipped.json").read_text()
    bad = [*argv[:2], "timm:vit_tiny_patch16_22", *argv[3:]]
    assert run_extract(parser.parse_args(bad)) == 1
    assert "vit_tiny_patch16_224" in capsys.readouterr().err
