"""Tests of the zarr feature cache (napari_factortopy.data.cache)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_factortopy.data.cache import CACHE_FORMAT, CACHE_VERSION, CacheError, FeatureCache

LAYERS = ["blocks.3", "blocks.7", "head/out"]
WIDTHS = [4, 6, 3]
GRID = (3, 2)


def _features(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random float32 features: local (n, C_l, h, w) and global (n, C_l) per layer."""
    rng = np.random.default_rng(seed)
    local = [(3 * rng.standard_normal((n, c, *GRID))).astype(np.float32) for c in WIDTHS]
    glob = [(3 * rng.standard_normal((n, c))).astype(np.float32) for c in WIDTHS]
    return local, glob


def _as_f16(arrays: list[np.ndarray]) -> list[np.ndarray]:
    return [a.astype(np.float16).astype(np.float32) for a in arrays]


def _kwargs(n: int, **over) -> dict:
    kw = {
        "backbone": "vit_tiny",
        "layer_names": LAYERS,
        "widths": WIDTHS,
        "grid": GRID,
        "image_ids": [f"img-{i:03d}" for i in range(n)],
        "preprocessing": {"size": 224, "mean": [0.5, 0.5, 0.5]},
    }
    kw.update(over)
    return kw


def _write_range(cache: FeatureCache, local, glob, start: int, stop: int, **kw) -> None:
    cache.write(start, [x[start:stop] for x in local], [x[start:stop] for x in glob], **kw)


def _assert_equal_lists(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ round trips


def test_uneven_batches_out_of_order(tmp_path: Path) -> None:
    n = 23
    local, glob = _features(n)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=5, **_kwargs(n))
    assert cache.missing().tolist() == list(range(n)) and not cache.complete
    for start, stop in [(10, 13), (0, 4), (17, 23), (4, 10), (13, 17)]:
        _write_range(cache, local, glob, start, stop)
    assert cache.complete and cache.missing().size == 0
    assert cache.written.dtype == bool and cache.written.shape == (n,)

    reopened = FeatureCache.open(tmp_path / "c")
    got_local, got_glob = reopened.read(np.arange(n))
    _assert_equal_lists(got_local, _as_f16(local))
    _assert_equal_lists(got_glob, _as_f16(glob))
    assert all(a.dtype == np.float32 for a in got_local + got_glob)

    # The on-disk layout, read with zarr directly.
    group = zarr.open_group(str(tmp_path / "c"), mode="r")
    np.testing.assert_array_equal(group["local/1"][:], local[1].astype(np.float16))
    np.testing.assert_array_equal(group["global/2"][:], glob[2].astype(np.float16))
    assert group["local/0"].dtype == np.float16 and group["local/0"].chunks[0] == 5
    assert group["written"][:].all()
    attrs = dict(group.attrs)
    assert attrs["format"] == CACHE_FORMAT == "factortopy-cache"
    assert attrs["version"] == CACHE_VERSION == 2
    assert attrs["backbone"] == "vit_tiny"
    assert attrs["layer_names"] == LAYERS and attrs["widths"] == WIDTHS
    assert attrs["grid"] == [3, 2] and attrs["n_images"] == n
    assert attrs["image_ids"][7] == "img-007"
    assert attrs["preprocessing"] == {"size": 224, "mean": [0.5, 0.5, 0.5]}
    assert "T" in attrs["created"]


def test_properties(tmp_path: Path) -> None:
    cache = FeatureCache.create(tmp_path / "c", chunk_images=64, **_kwargs(10))
    assert cache.path == tmp_path / "c"
    assert cache.backbone == "vit_tiny"
    assert cache.layer_names == LAYERS and cache.widths == WIDTHS
    assert cache.grid == GRID and cache.n_images == 10 and cache.n_layers == 3
    assert cache.image_ids == [f"img-{i:03d}" for i in range(10)]
    assert cache.preprocessing == {"size": 224, "mean": [0.5, 0.5, 0.5]}
    assert cache.chunk_images == 10  # clipped to N
    cache.layer_names.append("x")  # copies: the cache is not changed
    assert cache.layer_names == LAYERS
    assert "0/10 written" in repr(cache)


def test_random_index_reads(tmp_path: Path) -> None:
    n = 31
    local, glob = _features(n, seed=1)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=4, **_kwargs(n))
    _write_range(cache, local, glob, 0, n)
    ref_local, ref_glob = _as_f16(local), _as_f16(glob)
    rng = np.random.default_rng(2)
    for _ in range(5):
        idx = rng.integers(0, n, size=rng.integers(1, 40))  # unsorted, with repeats
        got_local, got_glob = cache.read(idx)
        _assert_equal_lists(got_local, [x[idx] for x in ref_local])
        _assert_equal_lists(got_glob, [x[idx] for x in ref_glob])
    # A contiguous, sorted block; selected layers by name and position; float64.
    got_local, got_glob = cache.read(np.arange(8, 17), layers=["head/out", 0], dtype=np.float64)
    assert got_local[0].dtype == np.float64
    _assert_equal_lists(got_local, [ref_local[2][8:17], ref_local[0][8:17]])
    _assert_equal_lists(got_glob, [ref_glob[2][8:17], ref_glob[0][8:17]])
    # Everything (indices=None) and nothing.
    all_local, _ = cache.read()
    _assert_equal_lists(all_local, ref_local)
    empty_local, empty_glob = cache.read(np.array([], dtype=int))
    assert [a.shape for a in empty_local] == [(0, c, *GRID) for c in WIDTHS]
    assert [a.shape for a in empty_glob] == [(0, c) for c in WIDTHS]


def test_nbytes_matches_loaded_arrays(tmp_path: Path) -> None:
    n = 12
    local, glob = _features(n)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=5, **_kwargs(n))
    _write_range(cache, local, glob, 0, n)
    idx = np.array([3, 1, 3, 11, 0])
    got_local, got_glob = cache.read(idx)
    assert cache.nbytes(idx) == sum(a.nbytes for a in got_local + got_glob)
    got_local, got_glob = cache.read(idx, layers=["blocks.7"])
    assert cache.nbytes(idx, layers=["blocks.7"]) == sum(a.nbytes for a in got_local + got_glob)
    # All images: 4 bytes × N × Σ C_l (h·w + 1), computed by hand.
    assert cache.nbytes() == 4 * 12 * (4 * 7 + 6 * 7 + 3 * 7)


def test_torch_input_and_preprocessing_conversion(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    n = 4
    local, glob = _features(n)
    prep = {"size": np.int64(224), "mean": np.array([0.5, 0.25, 0.125]), "crop": (1, 2)}
    cache = FeatureCache.create(tmp_path / "c", **_kwargs(n, preprocessing=prep))
    assert cache.preprocessing == {"size": 224, "mean": [0.5, 0.25, 0.125], "crop": [1, 2]}
    cache.write(
        0,
        [torch.from_numpy(x).to(torch.bfloat16) for x in local],
        [torch.from_numpy(x) for x in glob],
    )
    got_local, got_glob = cache.read(np.arange(n))
    want = [
        torch.from_numpy(x).to(torch.bfloat16).float().numpy().astype(np.float16) for x in local
    ]
    _assert_equal_lists(got_local, [w.astype(np.float32) for w in want])
    _assert_equal_lists(got_glob, _as_f16(glob))
    # The same preprocessing, given as numpy values again, matches on reopening.
    FeatureCache.open_or_create(tmp_path / "c", **_kwargs(n, preprocessing=prep))


# ----------------------------------------------------------------------- resume


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    n = 26
    local, glob = _features(n, seed=3)
    full = FeatureCache.create(tmp_path / "full", chunk_images=6, **_kwargs(n))
    for start in range(0, n, 7):
        _write_range(full, local, glob, start, min(n, start + 7))

    part = FeatureCache.open_or_create(tmp_path / "part", chunk_images=6, **_kwargs(n))
    _write_range(part, local, glob, 0, 7)
    _write_range(part, local, glob, 14, 20)
    del part  # "killed"

    resumed = FeatureCache.open_or_create(tmp_path / "part", chunk_images=6, **_kwargs(n))
    expected_missing = [*range(7, 14), *range(20, 26)]
    assert resumed.missing().tolist() == expected_missing
    assert resumed.missing().dtype == np.int64
    for start, stop in [(7, 14), (20, 26)]:
        _write_range(resumed, local, glob, start, stop)
    assert resumed.complete

    a_local, a_glob = FeatureCache.open(tmp_path / "full").read(np.arange(n))
    b_local, b_glob = FeatureCache.open(tmp_path / "part").read(np.arange(n))
    _assert_equal_lists(b_local, a_local)
    _assert_equal_lists(b_glob, a_glob)
    _assert_equal_lists(b_local, _as_f16(local))


def test_failed_write_leaves_images_unwritten(tmp_path: Path) -> None:
    n = 10
    local, glob = _features(n)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=10, **_kwargs(n))
    _write_range(cache, local, glob, 0, 4)

    class Exploding:
        def __setitem__(self, key, value):
            raise OSError("disk gone")

    real = cache._global[2]
    cache._global[2] = Exploding()  # the last array written: all others succeed first
    with pytest.raises(OSError, match="disk gone"):
        _write_range(cache, local, glob, 4, 8)
    cache._global[2] = real
    assert cache.written.tolist() == [True] * 4 + [False] * 6
    with pytest.raises(CacheError, match=r"indices \[4, 5\]"):
        cache.read([4, 5])
    got_local, _ = cache.read(np.arange(4))  # the images written before are intact
    _assert_equal_lists(got_local, [x[:4] for x in _as_f16(local)])


# ------------------------------------------------------------- metadata errors


@pytest.mark.parametrize(
    ("field", "value", "fragments"),
    [
        ("backbone", "resnet50", ["'resnet50'", "'vit_tiny'"]),
        ("layer_names", ["blocks.3", "blocks.8", "head/out"], ["blocks.8", "blocks.7"]),
        ("widths", [4, 6, 5], ["[4, 6, 5]", "[4, 6, 3]"]),
        ("grid", (8, 8), ["[8, 8]", "[3, 2]"]),
        ("image_ids", [f"img-{i:03d}" for i in range(1, 21)], ["index 0", "'img-001'"]),
        ("image_ids", [f"img-{i:03d}" for i in range(19)], ["19 items", "20 items"]),
        ("preprocessing", {"size": 256}, ["256", "224"]),
    ],
)
def test_open_or_create_mismatch_names_field(
    tmp_path: Path, field: str, value, fragments: list[str]
) -> None:
    FeatureCache.create(tmp_path / "c", **_kwargs(20))
    with pytest.raises(CacheError) as info:
        FeatureCache.open_or_create(tmp_path / "c", **_kwargs(20, **{field: value}))
    msg = str(info.value)
    assert str(tmp_path / "c") in msg and f"different {field}" in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_check_compatible(tmp_path: Path) -> None:
    cache = FeatureCache.create(tmp_path / "c", **_kwargs(5))
    cache.check_compatible(LAYERS, WIDTHS, GRID, backbone="vit_tiny", source="model m.ftopy")
    cache.check_compatible()  # nothing to check
    cases = [
        ({"layer_names": ["a"]}, "layer_names expected ['a'], found ['blocks.3'"),
        ({"widths": [4, 6, 4]}, "widths expected [4, 6, 4], found [4, 6, 3]"),
        ({"grid": (8, 8)}, "grid expected [8, 8], found [3, 2]"),
        ({"backbone": "clip"}, "backbone expected 'clip', found 'vit_tiny'"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(CacheError) as info:
            cache.check_compatible(**kwargs, source="model m.ftopy")
        msg = str(info.value)
        assert str(tmp_path / "c") in msg and "model m.ftopy" in msg and fragment in msg, msg


def test_invalid_create_arguments(tmp_path: Path) -> None:
    bad = [
        ({"layer_names": ["a", "a", "b"]}, "unique"),
        ({"widths": [4, 6]}, "widths must be 3 positive ints"),
        ({"widths": [4, 0, 3]}, "widths must be 3 positive ints"),
        ({"grid": (3,)}, "grid must be"),
        ({"image_ids": ["a", "b", "a"]}, "'a' appears twice"),
        ({"image_ids": []}, "image_ids is empty"),
        ({"backbone": ""}, "backbone must be"),
        ({"preprocessing": {"f": object()}}, "preprocessing['f']"),
    ]
    for over, fragment in bad:
        with pytest.raises(CacheError) as info:
            FeatureCache.create(tmp_path / "c", **_kwargs(3, **over))
        assert fragment in str(info.value), str(info.value)
    with pytest.raises(CacheError, match="chunk_images must be >= 1"):
        FeatureCache.create(tmp_path / "c", chunk_images=0, **_kwargs(3))
    with pytest.raises(CacheError, match="does not exist"):
        FeatureCache.create(tmp_path / "no" / "c", **_kwargs(3))
    assert list(tmp_path.iterdir()) == []  # nothing left behind


# ------------------------------------------------------------ read/write errors


def test_read_errors(tmp_path: Path) -> None:
    n = 30
    local, glob = _features(n)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=8, **_kwargs(n))
    _write_range(cache, local, glob, 0, 10)
    with pytest.raises(CacheError) as info:
        cache.read([3, 29, 12, 11, 13, 14, 15, 16, 17, 12])
    msg = str(info.value)
    assert str(tmp_path / "c") in msg and "8 of the requested images are not written" in msg
    assert "[11, 12, 13, 14, 15, 16, ...]" in msg
    with pytest.raises(CacheError, match=r"outside 0\.\.29"):
        cache.read([0, 30])
    with pytest.raises(CacheError, match=r"outside 0\.\.29"):
        cache.read([-1])
    with pytest.raises(CacheError, match="1-D integer"):
        cache.read(np.array([0.5]))
    with pytest.raises(CacheError, match="unknown layer 'nope'"):
        cache.read([0], layers=["nope"])
    with pytest.raises(CacheError, match="unknown layer 3"):
        cache.read([0], layers=[3])


def test_write_errors(tmp_path: Path) -> None:
    n = 20
    local, glob = _features(n)
    cache = FeatureCache.create(tmp_path / "c", chunk_images=8, **_kwargs(n))
    sl = [x[:4] for x in local]
    sg = [x[:4] for x in glob]

    wrong = list(sl)
    wrong[1] = np.zeros((4, 6, 2, 3))
    with pytest.raises(CacheError) as info:
        cache.write(0, wrong, sg)
    msg = str(info.value)
    assert "local[1] (layer 'blocks.7')" in msg and "(4, 6, 2, 3)" in msg and "(4, 6, 3, 2)" in msg
    wrong_g = list(sg)
    wrong_g[2] = np.zeros((3, 3))
    with pytest.raises(CacheError, match=r"global_\[2\] \(layer 'head/out'\).*expected \(4, 3\)"):
        cache.write(0, sl, wrong_g)
    with pytest.raises(CacheError, match="expected 3 local and 3 global"):
        cache.write(0, sl[:2], sg)
    with pytest.raises(CacheError, match=r"images 18\.\.21 fall outside 0\.\.19"):
        cache.write(18, sl, sg)
    nan_l = [x.copy() for x in sl]
    nan_l[0][1, 0, 0, 0] = np.nan
    with pytest.raises(CacheError, match=r"local\[0\].*1 non-finite"):
        cache.write(0, nan_l, sg)
    big_g = [x.copy() for x in sg]
    big_g[1][0, 0] = 1e6
    with pytest.raises(CacheError, match="overflow float16"):
        cache.write(0, sl, big_g)
    # Concurrent writes must cover whole chunks (8 images; the last may end at N = 20).
    with pytest.raises(CacheError, match="whole chunks of 8 images"):
        cache.write(0, sl, sg, concurrent=True)
    with pytest.raises(CacheError, match="whole chunks of 8 images"):
        _write_range(cache, local, glob, 4, 12, concurrent=True)
    assert not cache.written.any()  # nothing was marked by the failures
    _write_range(cache, local, glob, 16, 20, concurrent=True)
    _write_range(cache, local, glob, 0, 16, concurrent=True)
    assert cache.complete

    ro = FeatureCache.open(tmp_path / "c")
    with pytest.raises(CacheError, match="read-only"):
        ro.write(0, sl, sg)


# ------------------------------------------------------------ create/open errors


def test_create_refuses_and_overwrites(tmp_path: Path) -> None:
    n = 6
    local, glob = _features(n)
    first = FeatureCache.create(tmp_path / "c", **_kwargs(n))
    _write_range(first, local, glob, 0, n)
    with pytest.raises(CacheError, match="already exists"):
        FeatureCache.create(tmp_path / "c", **_kwargs(n))
    again = FeatureCache.create(tmp_path / "c", overwrite=True, **_kwargs(n, backbone="other"))
    assert again.backbone == "other" and not again.written.any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp or trash left

    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("do not delete")
    with pytest.raises(CacheError, match="not a feature cache; refusing"):
        FeatureCache.create(foreign, overwrite=True, **_kwargs(n))
    assert (foreign / "thesis.txt").read_text() == "do not delete"
    with pytest.raises(CacheError, match="not a feature cache"):
        FeatureCache.open_or_create(foreign, **_kwargs(n))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert FeatureCache.create(empty, **_kwargs(n)).n_images == n


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no such directory") as info:
        FeatureCache.open(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)

    with pytest.raises(CacheError, match="not a feature cache"):
        FeatureCache.open(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match="not a feature cache"):
        FeatureCache.open(tmp_path / "file")
    g = zarr.open_group(str(tmp_path / "other"), mode="w")
    g.attrs.update({"format": "something-else"})
    with pytest.raises(CacheError, match="found 'something-else'"):
        FeatureCache.open(tmp_path / "other")
    with pytest.raises(CacheError, match="mode must be"):
        FeatureCache.open(tmp_path / "other", mode="w")

    FeatureCache.create(tmp_path / "new", **_kwargs(4))
    zarr.open_group(str(tmp_path / "new"), mode="r+").attrs.update({"version": 3})
    with pytest.raises(CacheError, match=r"newer napari-factortopy \(cache version 3\)"):
        FeatureCache.open(tmp_path / "new")

    FeatureCache.create(tmp_path / "bad", **_kwargs(4))
    zarr.open_group(str(tmp_path / "bad"), mode="r+").attrs.update({"widths": [4, 7, 3]})
    with pytest.raises(CacheError) as info:
        FeatureCache.open(tmp_path / "bad")
    assert "do not match the identity digest" in str(info.value)  # an edited zarr.json

    FeatureCache.create(tmp_path / "ids", **_kwargs(4))
    grp = zarr.open_group(str(tmp_path / "ids"), mode="r+")
    grp.attrs.update({"image_ids": ["a", "b", "c"]})
    with pytest.raises(CacheError, match="n_images is 4 but image_ids holds 3"):
        FeatureCache.open(tmp_path / "ids")


# ------------------------------------------------------------ two processes


def _worker(path: str, n: int, chunk: int, ranges: list[tuple[int, int]]) -> list[int]:
    """Open or create the cache and write the given chunk-aligned ranges (own process)."""
    local, glob = _features(n, seed=7)
    cache = FeatureCache.open_or_create(path, chunk_images=chunk, **_kwargs(n))
    for start, stop in ranges:
        _write_range(cache, local, glob, start, stop, concurrent=True)
    return cache.written.nonzero()[0].tolist()


def test_two_processes_disjoint_chunk_aligned(tmp_path: Path) -> None:
    n, chunk = 38, 8
    local, glob = _features(n, seed=7)
    single = FeatureCache.create(tmp_path / "single", chunk_images=chunk, **_kwargs(n))
    _write_range(single, local, glob, 0, n)

    # Interleaved chunk ownership: both processes touch neighbouring chunks, and both
    # race to create the cache.
    ranges_a = [(0, 8), (16, 24), (32, 38)]
    ranges_b = [(8, 16), (24, 32)]
    path = str(tmp_path / "multi")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = [
            pool.submit(_worker, path, n, chunk, ranges_a),
            pool.submit(_worker, path, n, chunk, ranges_b),
        ]
        for f in futures:
            f.result(timeout=120)

    multi = FeatureCache.open(path)
    assert multi.complete
    a_local, a_glob = single.read()
    b_local, b_glob = multi.read()
    _assert_equal_lists(b_local, a_local)
    _assert_equal_lists(b_glob, a_glob)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi", "single"]


def test_creation_race_keeps_the_winner(tmp_path: Path, monkeypatch) -> None:
    """Another process creating the cache while we build ours: we open theirs."""
    from napari_factortopy.data.cache import store as cache_mod

    n = 8
    local, glob = _features(n)
    path = tmp_path / "c"
    real_build = cache_mod._build

    def racing_build(*args, **kwargs):
        tmp = real_build(*args, **kwargs)
        monkeypatch.setattr(cache_mod, "_build", real_build)
        other = FeatureCache.create(path, chunk_images=4, **_kwargs(n))  # the "winner"
        _write_range(other, local, glob, 0, 4)
        return tmp

    monkeypatch.setattr(cache_mod, "_build", racing_build)
    cache = FeatureCache.open_or_create(path, chunk_images=4, **_kwargs(n))
    monkeypatch.undo()
    assert cache.written.tolist() == [True] * 4 + [False] * 4  # the winner's data kept
    got_local, _ = cache.read(np.arange(4))
    _assert_equal_lists(got_local, [x[:4] for x in _as_f16(local)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # our temp build removed
