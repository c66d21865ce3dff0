"""Damaged, edited and foreign feature caches: refused by name, never read silently.

The property test applies 200 seeded mutations to a valid cache (a flipped bit, a
truncation or a deletion of any of its files, a field of its zarr.json retyped) and
requires ``FeatureCache.open`` to raise CacheError or ``verify()`` to report the
damage, never another exception and never a silently changed row.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_factortopy.data.cache import CacheError, FeatureCache, image_digest
from napari_factortopy.data.cache import store as cache_mod

N, CHUNK = 10, 4
LAYERS, WIDTHS, GRID = ["a", "b"], [3, 2], (2, 2)
WEIGHTS = {"kind": "pretrained", "sha256": "ab" * 32, "source": {"weights": "w.safetensors"}}
N_MUTATIONS = 200


def _kwargs(**over):
    kw = {
        "backbone": "toy",
        "layer_names": LAYERS,
        "widths": WIDTHS,
        "grid": GRID,
        "image_ids": [f"img{i}" for i in range(N)],
        "preprocessing": {"input_size": 8},
        "chunk_images": CHUNK,
        "weights": WEIGHTS,
    }
    kw.update(over)
    return kw


def _images(n=N, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 5, 4, 3), dtype=np.uint8)


def _build(path: Path, rows=range(N - 1)) -> FeatureCache:
    """A cache with rows 0..8 written (row 9 missing), with image digests."""
    rng = np.random.default_rng(1)
    c = FeatureCache.create(path, **_kwargs())
    imgs = _images()
    rows = np.asarray(list(rows))
    local = [rng.normal(size=(len(rows), w, *GRID)) for w in WIDTHS]
    glob = [rng.normal(size=(len(rows), w)) for w in WIDTHS]
    digests = np.stack([image_digest(imgs[r]) for r in rows])
    c.write(int(rows[0]), local, glob, image_digests=digests)
    return c


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "c.zarr"
    c = _build(path)
    written = c.written
    rows = np.flatnonzero(written)
    return path, {
        "written": written,
        "read": c.read(rows),
        "digests": c.image_digests(rows),
        "identity": {k: getattr(c, k) for k in ("backbone", "layer_names", "widths", "grid",
                                                 "image_ids", "preprocessing", "weights")},
    }  # fmt: skip


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _unchanged(c: FeatureCache, ref: dict) -> bool:
    """True when the cache means what it meant: same identity, rows a subset, same values."""
    ident = {k: getattr(c, k) for k in ref["identity"]}
    if ident != ref["identity"]:
        return False
    written = c.written
    if (written & ~ref["written"]).any():
        return False
    rows = np.flatnonzero(written)
    pos = np.searchsorted(np.flatnonzero(ref["written"]), rows)
    loc, glo = c.read(rows)
    pairs = zip(loc + glo, ref["read"][0] + ref["read"][1], strict=True)
    same = all(np.array_equal(a, b[pos]) for a, b in pairs)
    return same and np.array_equal(c.image_digests(rows), ref["digests"][pos])


_WRONG = {
    int: ["x", 3.5, True, None, [], {}, "4"],
    float: ["x", True, None, [], {}],
    str: [3, 3.5, True, None, [], {}],
    list: ["x", 3, None, {}, True],
    dict: ["x", 3, None, [], True],
    bool: ["x", 3, None, [], {}],
}


def _retype(rng, value):
    pool = _WRONG[type(value)]
    return pool[int(rng.integers(len(pool)))]


def _retype_json(rng, f: Path) -> str:
    """Retype one field of a zarr.json (group attributes or array metadata)."""
    doc = json.loads(f.read_text())
    if doc.get("node_type") == "group" and doc.get("attributes"):
        attrs = doc["attributes"]
        keys = ["format", "version", "backbone", "layer_names", "widths", "grid", "image_ids",
                "preprocessing", "weights", "n_images", "chunk_images", "created",
                "identity_digest"]  # fmt: skip
        key = keys[int(rng.integers(len(keys)))]
        value = attrs[key]
        if isinstance(value, list) and value and rng.random() < 0.5:
            i = int(rng.integers(len(value)))
            value[i] = _retype(rng, value[i])
            what = f"attrs[{key!r}][{i}]"
        elif key == "weights" and rng.random() < 0.5:
            sub = ["sha256", "kind", "source"][int(rng.integers(3))]
            value[sub] = _retype(rng, value[sub])
            what = f"attrs['weights'][{sub!r}]"
        else:
            attrs[key] = _retype(rng, value)
            what = f"attrs[{key!r}]"
        # a consistent (but wrong) writer: the identity digest is recomputed
        if key != "identity_digest" and rng.random() < 0.5:
            try:
                attrs["identity_digest"] = cache_mod._identity_digest(attrs)
                what += " (digest recomputed)"
            except (TypeError, ValueError):
                pass
    elif doc.get("node_type") == "group":
        key = ["node_type", "zarr_format"][int(rng.integers(2))]
        doc[key] = _retype(rng, doc[key]) if rng.random() < 0.5 else "array"
        what = f"subgroup {key}"
    else:
        edits = [
            ("shape", lambda d: d["shape"].__setitem__(0, d["shape"][0] + 1)),
            ("data_type", lambda d: d.__setitem__("data_type", "float32")),
            ("chunks", lambda d: d["chunk_grid"]["configuration"]["chunk_shape"].__setitem__(
                0, 3)),
            ("fill", lambda d: d.__setitem__("fill_value", 1)),
            ("endian", lambda d: d["codecs"][0]["configuration"].__setitem__("endian", "big")),
            ("codec", lambda d: d["codecs"].append({"name": "crc32c"})),
            ("separator", lambda d: d["chunk_key_encoding"]["configuration"].__setitem__(
                "separator", ".")),
            ("retype shape", lambda d: d.__setitem__("shape", "10")),
            ("drop codecs", lambda d: d.pop("codecs")),
        ]  # fmt: skip
        name, edit = edits[int(rng.integers(len(edits)))]
        if name == "endian" and doc.get("data_type") in ("bool", "uint8"):
            name, edit = edits[0]  # endianness means nothing for bytes
        edit(doc)
        what = f"array metadata {name}"
    f.write_text(json.dumps(doc))
    return what


def mutation_trials(src, ref, path, n=N_MUTATIONS, seed=10):
    """Replay the seeded mutations of a pristine cache copied to ``path``; one row each.

    Rows: ``trial``, ``kind`` (flip / truncate / delete / retype), ``what``, ``verdict``
    (``"refused"`` on open, ``"found"`` by verify, or ``"accepted"``), ``message``,
    ``unchanged`` (an accepted cache reads back every written row unchanged).
    ``scripts/bad_input_matrix.py`` writes them into docs/BAD_INPUT_MATRIX.md.
    """
    rng = np.random.default_rng(seed)
    shutil.copytree(src, path)
    files = _files(path)
    for trial in range(n):
        kind = ["flip", "truncate", "delete", "retype"][int(rng.integers(4))]
        if kind == "retype":
            jsons = [f for f in files if f.name == "zarr.json"]
            group = path / "zarr.json"
            f = group if rng.random() < 0.6 else jsons[int(rng.integers(len(jsons)))]
            what = _retype_json(rng, f)
        else:
            f = files[int(rng.integers(len(files)))]
            data = bytearray(f.read_bytes())
            if kind == "flip":
                pos = int(rng.integers(len(data)))
                data[pos] ^= 1 << int(rng.integers(8))
                f.write_bytes(bytes(data))
                what = f"flip byte {pos}"
            elif kind == "truncate":
                cut = int(rng.integers(len(data)))
                f.write_bytes(bytes(data[:cut]))
                what = f"truncate to {cut}"
            else:
                f.unlink()
                what = "delete"
        row = {"trial": trial, "kind": kind, "what": f"{what} of {f.relative_to(path)}"}
        try:
            c = FeatureCache.open(path)
            report = c.verify()
        except CacheError as exc:
            row.update(verdict="refused", message=str(exc), unchanged=False)
        else:
            if report.damaged:
                items = list(report.damaged.items())
                damaged = "; ".join(f"row {k}: {v}" for k, v in items[:2])
                more = f" (+{len(items) - 2} rows)" if len(items) > 2 else ""
                row.update(verdict="found", message=f"verify: {damaged}{more}", unchanged=False)
            else:
                row.update(verdict="accepted", message="", unchanged=_unchanged(c, ref))
        # restore the one file changed (opening read-only writes nothing)
        shutil.copy2(src / f.relative_to(path), f)
        row["files_restored"] = _files(path) == files
        yield row


def test_every_mutation_is_refused_or_found(pristine, tmp_path):
    src, ref = pristine
    counts = {"flip": 0, "truncate": 0, "delete": 0, "retype": 0, "harmless": 0}
    path = tmp_path / "m.zarr"
    for row in mutation_trials(src, ref, path):
        counts[row["kind"]] += 1
        if row["verdict"] == "refused":
            assert str(path) in row["message"], row
        if row["verdict"] == "accepted":
            assert row["unchanged"], (
                f"mutation {row['trial']} ({row['what']}) was accepted silently"
            )
            counts["harmless"] += 1
        assert row["files_restored"]
    assert min(counts[k] for k in ("flip", "truncate", "delete", "retype")) > 30, counts
    assert counts["harmless"] < N_MUTATIONS // 4, counts


# ------------------------------------------------------------------ single faults


def _chunk(path: Path, array: str, k: int) -> Path:
    return path / array / "c" / str(k) / "0" / "0" / "0" if array.startswith("local") else (
        path / array / "c" / str(k) / "0")  # fmt: skip


def test_deleted_chunk_is_refused_then_counted_missing(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    _chunk(path, "local/1", 1).unlink()
    with pytest.raises(CacheError) as info:
        FeatureCache.open(path)
    msg = str(info.value)
    assert str(path) in msg and "local/1/c/1/0/0/0 is missing" in msg and "row 4" in msg
    c = FeatureCache.open(path, mode="r+")
    assert c.missing().tolist() == [4, 5, 6, 7, 9]  # damaged rows join the missing one
    assert sorted(c.damaged) == [4, 5, 6, 7]
    with pytest.raises(CacheError, match="damaged"):
        c.read([5])


def test_truncated_chunk_names_the_file_not_a_reshape(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    f = _chunk(path, "global/0", 0)
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(CacheError) as info:
        FeatureCache.open(path)
    assert f"{f} has 19 bytes, expected 24" in str(info.value)
    assert "reshape" not in str(info.value)


def test_verify_finds_a_flipped_bit_and_repair_marks_it(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    f = _chunk(path, "local/0", 1)
    data = bytearray(f.read_bytes())
    data[40] ^= 0x10
    f.write_bytes(bytes(data))
    c = FeatureCache.open(path)  # same size: the cheap check cannot see it
    seen = []
    report = c.verify(progress=lambda d, t: seen.append((d, t)))
    assert list(report.damaged) == [5] and "row digest" in report.damaged[5]
    assert report.n_checked == 9 and seen[-1] == (3, 3)
    assert "1 damaged" in report.summary() and "row 5" in report.summary()
    with pytest.raises(CacheError, match="mode='r\\+'"):
        c.verify(repair=True)
    report = FeatureCache.open(path, mode="r+").verify(repair=True)
    assert report.repaired and FeatureCache.open(path).missing().tolist() == [5, 9]


def test_verify_against_the_dataset_finds_other_images(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    c = FeatureCache.open(path)
    imgs = _images()
    assert c.verify(lambda idx: [imgs[i] for i in idx]).ok
    other = imgs.copy()
    other[2, 0, 0, 0] ^= 1
    report = c.verify(lambda idx: [other[i] for i in idx])
    assert list(report.damaged) == [2] and "'img2' differs" in report.damaged[2]


def test_weights_identity_is_enforced(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    random = {"kind": "random", "sha256": "cd" * 32, "source": {"weights": "random"}}
    with pytest.raises(CacheError) as info:
        FeatureCache.open_or_create(path, **_kwargs(weights=random))
    msg = str(info.value)
    assert str(path) in msg and "pretrained weights (w.safetensors), sha256 abababababab" in msg
    assert "asks for random weights, sha256 cdcdcdcdcdcd" in msg
    FeatureCache.open_or_create(path, **_kwargs())  # the same weights: resumes
    # a cache made without an identity adopts the first one, if it holds no rows yet
    bare = FeatureCache.create(tmp_path / "bare.zarr", **_kwargs(weights=None))
    bare.check_weights(random)
    assert FeatureCache.open(tmp_path / "bare.zarr").weights == random


def test_version_1_caches_are_read_but_not_extended(tmp_path):
    import zarr

    path = tmp_path / "old.zarr"
    _build(path)
    g = zarr.open_group(str(path), mode="r+")
    attrs = dict(g.attrs)
    for key in ("weights", "identity_digest"):
        del attrs[key]
    attrs["version"] = 1
    g.attrs.put(attrs) if hasattr(g.attrs, "put") else None
    shutil.rmtree(path / "image_digest")
    shutil.rmtree(path / "row_digest")
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"] = attrs
    (path / "zarr.json").write_text(json.dumps(doc))
    c = FeatureCache.open(path, mode="r+")
    assert c.version == 1 and c.read([0])[0][0].shape == (1, 3, 2, 2)
    with pytest.raises(CacheError, match="older napari-factortopy"):
        c.check_weights(WEIGHTS)  # rows would be added
    c.check_weights(WEIGHTS, writing=False)  # reading and resuming nothing is fine
    FeatureCache.open_or_create(path, **_kwargs())


def test_unwritable_places_are_named(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    _build(tmp_path / "c.zarr")
    monkeypatch.setattr(cache_mod.os, "open", read_only)
    with pytest.raises(CacheError) as info:
        FeatureCache.open(tmp_path / "c.zarr", mode="r+")
    assert "cannot write there (it is on a read-only file system" in str(info.value)
    assert str(tmp_path / "c.zarr") in str(info.value)
    FeatureCache.open(tmp_path / "c.zarr")  # reading still works
    monkeypatch.undo()

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(cache_mod.zarr, "open_group", denied)
    with pytest.raises(CacheError) as info:
        FeatureCache.create(tmp_path / "new.zarr", **_kwargs())
    assert "cannot write there (permission denied" in str(info.value)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.zarr")]


def test_claims_refuse_a_second_live_extraction(tmp_path):
    import subprocess
    import sys

    from napari_factortopy.core.host import HOST_ID

    c = _build(tmp_path / "c.zarr")
    with c.claim(0, 8) as refresh:
        refresh()
        with pytest.raises(CacheError) as info:
            with c.claim(4, 10):
                pass
        assert "images 0..7 are being extracted by process" in str(info.value)
        assert "asks for 4..9" in str(info.value)
        with c.claim(8, 10):  # disjoint: fine
            pass
    assert not (tmp_path / "c.zarr" / ".claims").exists()  # released
    # a claim left by a killed process is stale and taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = tmp_path / "c.zarr" / ".claims"
    claims.mkdir()
    (claims / f"0-10.{HOST_ID}-{dead.pid}-deadbeef.json").write_text("{}")
    with c.claim(0, 10):
        pass
    assert not claims.exists()


def test_remove_if_empty_keeps_written_caches(tmp_path):
    c = FeatureCache.create(tmp_path / "e.zarr", **_kwargs())
    assert c.remove_if_empty() and not (tmp_path / "e.zarr").exists()
    c = _build(tmp_path / "w.zarr")
    assert not c.remove_if_empty() and (tmp_path / "w.zarr").exists()


def test_builds_left_by_killed_creators_are_removed(tmp_path):
    import subprocess
    import sys

    from napari_factortopy.core.host import HOST_ID

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".c.zarr.{HOST_ID}-{dead.pid}.0123456789abcdef.tmp"
    (left / "local").mkdir(parents=True)
    (left / "zarr.json").write_text("{}")
    FeatureCache.create(tmp_path / "c.zarr", **_kwargs())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]


def test_a_chunk_truncated_after_opening_is_named_on_read(tmp_path):
    path = tmp_path / "c.zarr"
    _build(path)
    c = FeatureCache.open(path)
    f = _chunk(path, "local/0", 1)
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CacheError) as info:
        c.read([5])
    msg = str(info.value)
    assert str(path) in msg and "cannot read array 'local/0'" in msg and "cache verify" in msg
