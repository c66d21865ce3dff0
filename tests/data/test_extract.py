"""Extraction: resumable, skip/stop on bad images, disk full, concurrent ranges, CLI."""

from __future__ import annotations

import argparse
import errno
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_factortopy.data import extract_checks  # noqa: E402
from napari_factortopy.data.backbones import timm_backbone  # noqa: E402
from napari_factortopy.data.cache import FeatureCache  # noqa: E402
from napari_factortopy.data.extract import (  # noqa: E402
    CacheMismatchError,
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

    monkeypatch.setattr(extract_checks.shutil, "disk_usage", lambda _p: Usage)
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
    assert run_extract(parser.parse_args(bad)) == 2  # bad input
    assert "vit_tiny_patch16_224" in capsys.readouterr().err


# ------------------------------------------------------------- nothing silent


def _partial(path, bb, images, batches=2):
    c = _cache(path, bb)
    gen = extract_features(bb, lambda idx: [images[i] for i in idx], c, batch_size=3)
    for _ in range(batches):
        next(gen)
    gen.close()
    return FeatureCache.open(path, mode="r+")


def test_other_weights_are_refused(tmp_path, bb, images):
    c = _partial(tmp_path / "w.zarr", bb, images)
    before = c.written.copy()
    other = timm_backbone("vit_tiny_patch16_224", weights="random", img_size=32, depth=2)
    with pytest.raises(CacheMismatchError) as info:
        _run(other, c, lambda idx: [images[i] for i in idx], batch_size=3)
    msg = str(info.value)
    assert str(tmp_path / "w.zarr") in msg and "holds features of" in msg
    assert "this run asks for random weights" in msg
    np.testing.assert_array_equal(c.written, before)  # nothing was added
    assert not (tmp_path / "w.zarr" / ".claims").exists()


def test_other_images_with_the_same_names_are_refused(tmp_path, bb, images):
    c = _partial(tmp_path / "i.zarr", bb, images)
    before = c.written.copy()
    other = images.copy()
    other[:, 0, 0, 0] ^= 1  # the same names, one pixel different
    with pytest.raises(CacheMismatchError, match="computed from other image content"):
        _run(bb, c, lambda idx: [other[i] for i in idx], batch_size=3)
    np.testing.assert_array_equal(c.written, before)


def test_deleted_and_flipped_chunks_are_recomputed(tmp_path, bb, images, reference):
    from napari_factortopy.data.cache import CacheError

    c = _cache(tmp_path / "d.zarr", bb)
    _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    chunk = tmp_path / "d.zarr" / "local" / "1" / "c" / "2" / "0" / "0" / "0"
    chunk.unlink()
    with pytest.raises(CacheError, match="is missing"):
        FeatureCache.open(tmp_path / "d.zarr")
    c = FeatureCache.open(tmp_path / "d.zarr", mode="r+")
    rec = _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=3)
    assert rec["total"] == 4 and c.complete
    _same(FeatureCache.open(tmp_path / "d.zarr"), reference)
    # a flipped bit keeps the file size: found by verify, recomputed with verify=True
    data = bytearray(chunk.read_bytes())
    data[7] ^= 0x40
    chunk.write_bytes(bytes(data))
    c = FeatureCache.open(tmp_path / "d.zarr", mode="r+")
    records = list(extract_features(bb, lambda idx: [images[i] for i in idx], c,
                                    device="cpu", batch_size=3, verify=True))  # fmt: skip
    assert list(records[0]["damaged"]) == [8] and records[-1]["total"] == 1
    assert FeatureCache.open(tmp_path / "d.zarr").verify().ok
    _same(FeatureCache.open(tmp_path / "d.zarr"), reference)


def test_a_range_another_process_extracts_is_refused(tmp_path, bb, images):
    from napari_factortopy.core.host import HOST_ID

    c = _cache(tmp_path / "r.zarr", bb)
    claims = tmp_path / "r.zarr" / ".claims"
    claims.mkdir()
    # pid 1 is alive: another process extracting images 0..7 right now
    (claims / f"0-8.{HOST_ID}-1-0badc0de.json").write_text("{}")
    with pytest.raises(ExtractionError, match=r"images 0\.\.7 are being extracted by process 1"):
        _run(bb, c, lambda idx: [images[i] for i in idx], images=(0, 8), concurrent=True)
    rec = _run(bb, c, lambda idx: [images[i] for i in idx], images=(8, 20), concurrent=True)
    assert rec["total"] == 12 and c.missing().tolist() == list(range(8))


def test_identical_ranges_at_once_compute_once(tmp_path, bb, images):
    import threading

    _cache(tmp_path / "t.zarr", bb)
    barrier = threading.Barrier(2)
    outcome = []

    def load(idx):
        return [images[i] for i in idx]

    def work():
        cache = FeatureCache.open(tmp_path / "t.zarr", mode="r+")
        gen = extract_features(bb, load, cache, device="cpu", batch_size=4, images=(0, 8),
                               concurrent=True, prefetch=False)  # fmt: skip
        barrier.wait()
        try:
            outcome.append(list(gen)[-1]["total"])
        except ExtractionError as exc:
            outcome.append(str(exc))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcome))[0] == "8", outcome  # one computed all 8 ...
    assert sum("being extracted" in str(o) or o == 0 for o in outcome) == 1, outcome


def _folder(tmp_path, n=3):
    from napari_factortopy.data.datasets import write_folder

    rng = np.random.default_rng(0)
    imgs = {f"{i}.png": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(n)}
    return write_folder(tmp_path / "ds", imgs, np.zeros((n, 2)), np.array([1, 2]), 1)


def _cli(argv):
    from napari_factortopy.app.cli_data import add_extract_parser, run_extract

    parser = argparse.ArgumentParser()
    add_extract_parser(parser.add_subparsers())
    return run_extract(parser.parse_args(argv))


def test_cli_random_rerun_on_a_pretrained_cache_is_refused(tmp_path, capsys):
    root, cache = _folder(tmp_path), tmp_path / "p.zarr"
    argv = ["extract", "--backbone", "efficientnet_lite0", "--dataset", str(root),
            "--cache", str(cache), "--grid", "1", "1", "--device", "cpu"]  # fmt: skip
    assert _cli(argv) == 0
    capsys.readouterr()
    assert _cli([*argv, "--weights", "random"]) == 2  # bad input
    err = capsys.readouterr().err
    assert str(cache) in err and "pretrained weights (packaged)" in err
    assert "this run asks for random weights" in err
    assert FeatureCache.open(cache).complete


def test_cli_refused_extraction_leaves_nothing(tmp_path, capsys, monkeypatch):
    root, cache = _folder(tmp_path), tmp_path / "n.zarr"

    class Usage:
        free = 10

    monkeypatch.setattr(extract_checks.shutil, "disk_usage", lambda _p: Usage)
    argv = ["extract", "--backbone", "efficientnet_lite0", "--weights", "random",
            "--dataset", str(root), "--cache", str(cache), "--grid", "1", "1",
            "--device", "cpu"]  # fmt: skip
    assert _cli(argv) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and f"{cache} removed" in err
    assert not cache.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_cli_unwritable_folder_is_named(tmp_path, capsys, monkeypatch):
    import pathlib

    root = _folder(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):  # what a read-only mount answers
        if str(self).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    argv = ["extract", "--backbone", "efficientnet_lite0", "--weights", "random",
            "--dataset", str(root), "--cache", str(ro / "f.zarr"), "--grid", "1", "1",
            "--device", "cpu"]  # fmt: skip
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot write there (it is on a read-only file system" in err
    assert str(ro / "f.zarr") in err
    assert list(ro.iterdir()) == []


def test_cli_cache_verify(tmp_path, capsys, bb, images):
    from napari_factortopy.app.cli_data import add_cache_parser, run_cache_verify

    parser = argparse.ArgumentParser()
    add_cache_parser(parser.add_subparsers())
    c = _cache(tmp_path / "v.zarr", bb)
    _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=5)
    assert run_cache_verify(parser.parse_args(["cache", "verify", str(c.path)])) == 0
    assert "20/20 rows written, 20 checked, 0 damaged" in capsys.readouterr().out
    chunk = c.path / "global" / "0" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 1
    chunk.write_bytes(bytes(data))
    assert run_cache_verify(parser.parse_args(["cache", "verify", str(c.path)])) == 1
    err = capsys.readouterr().err
    assert "1 damaged" in err and "row 4:" in err and "--repair" in err
    argv = ["cache", "verify", str(c.path), "--repair"]
    assert run_cache_verify(parser.parse_args(argv)) == 1
    assert "marked unwritten" in capsys.readouterr().err
    assert FeatureCache.open(c.path).missing().tolist() == [4]


def test_other_preprocessing_is_refused(tmp_path, bb, images):
    from dataclasses import replace

    c = _partial(tmp_path / "p.zarr", bb, images)
    other = replace(bb, preprocessing=replace(bb.preprocessing, crop_pct=1.0))
    with pytest.raises(ExtractionError) as info:
        _run(other, c, lambda idx: [images[i] for i in idx], batch_size=3)
    msg = str(info.value)
    assert str(tmp_path / "p.zarr") in msg and "'crop_pct': 0.9" in msg
    assert "this run preprocesses with" in msg and "'crop_pct': 1.0" in msg


def test_cli_cache_verify_exit_status_2_for_what_is_not_a_cache(tmp_path, capsys):
    from napari_factortopy.app.cli_data import add_cache_parser, run_cache_verify

    parser = argparse.ArgumentParser()
    add_cache_parser(parser.add_subparsers())
    (tmp_path / "x.zarr").mkdir()
    assert run_cache_verify(parser.parse_args(["cache", "verify", str(tmp_path / "x.zarr")])) == 2
    assert "not a feature cache" in capsys.readouterr().err


def test_weights_identity(bb):
    import torch

    from napari_factortopy.data.backbones import efficientnet_lite0
    from napari_factortopy.data.extract import weights_identity

    a, b = weights_identity(efficientnet_lite0("packaged")), weights_identity(efficientnet_lite0())
    assert a == b and a["kind"] == "pretrained" and len(a["sha256"]) == 64
    r = weights_identity(efficientnet_lite0(None))
    assert r["kind"] == "random" and r["sha256"] != a["sha256"]
    v = weights_identity(bb)
    p = next(bb.module.parameters())
    saved = p.detach().clone()
    with torch.no_grad():
        p.view(-1)[0] += 1  # one weight changed
    try:
        assert weights_identity(bb)["sha256"] != v["sha256"]
    finally:
        with torch.no_grad():
            p.copy_(saved)
    assert weights_identity(bb) == v


def _as_version_1(path):
    """Rewrite a cache as napari-factortopy wrote it before identities (layout 1)."""
    import json
    import shutil

    doc = json.loads((path / "zarr.json").read_text())
    attrs = doc["attributes"]
    for key in ("weights", "identity_digest"):
        attrs.pop(key)
    attrs["version"] = 1
    (path / "zarr.json").write_text(json.dumps(doc))
    shutil.rmtree(path / "image_digest")
    shutil.rmtree(path / "row_digest")


def test_old_caches_finish_nothing_silently(tmp_path, bb, images):
    c = _cache(tmp_path / "old.zarr", bb)
    _run(bb, c, lambda idx: [images[i] for i in idx], batch_size=5)
    _as_version_1(tmp_path / "old.zarr")
    c = FeatureCache.open(tmp_path / "old.zarr", mode="r+")
    assert _run(bb, c, lambda idx: [images[i] for i in idx]) is None  # complete: nothing to do
    c.mark_unwritten([3])
    with pytest.raises(CacheMismatchError, match="cache version 1"):
        _run(bb, c, lambda idx: [images[i] for i in idx])
