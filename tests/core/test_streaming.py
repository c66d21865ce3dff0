"""Streaming a feature cache larger than the memory limit: windows of whole chunks in
the training order, read ahead; the same numbers as reading the cache directly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_factortopy.core.budget import end_read_seconds
from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
from napari_factortopy.core.feature_source import (
    InMemoryFeatures,
    RowMappedFeatures,
    StreamedFeatures,
    feature_source,
)
from napari_factortopy.core.model import FactorTopy
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import predict, train
from napari_factortopy.data.cache import FeatureCache

N, CHUNK, WIDTHS, GRID = 200, 16, (3, 5), (2, 2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    rng = np.random.default_rng(0)
    c = FeatureCache.create(
        tmp_path_factory.mktemp("s") / "c.zarr",
        backbone="toy",
        layer_names=["a", "b"],
        widths=list(WIDTHS),
        grid=GRID,
        image_ids=[str(i) for i in range(N)],
        chunk_images=CHUNK,
    )
    local = [rng.normal(size=(N, w, *GRID)).astype(np.float32) for w in WIDTHS]
    glob = [rng.normal(size=(N, w)).astype(np.float32) for w in WIDTHS]
    c.write(0, local, glob)
    return FeatureCache.open(c.path), local, glob


def _limit(chunks_per_window: int, resident: int = 0) -> int:
    per_image = sum(w * (GRID[0] * GRID[1] + 1) for w in WIDTHS) * 2  # float16 bytes
    return (4 * chunks_per_window * CHUNK + resident) * per_image


def _same(got, local, glob, idx):
    for li in range(len(WIDTHS)):
        np.testing.assert_array_equal(got[0][li].numpy(), local[li][idx].astype(np.float16))
        np.testing.assert_array_equal(got[1][li].numpy(), glob[li][idx].astype(np.float16))


def test_an_epoch_reads_each_window_once_whole_and_ahead(cache):
    c, local, glob = cache
    split = make_split(N, seed=0)
    src = feature_source(
        c, np.arange(N), "cpu", memory_limit=_limit(2, len(split.val)), resident=split.val
    )
    assert isinstance(src, StreamedFeatures) and src.window_chunks == 2
    assert src.resident is not None and src.reads == 1  # the validation images, at once
    order = src.epoch_order(split.train, np.random.default_rng(1))
    assert sorted(order.tolist()) == sorted(split.train.tolist())
    # consecutive windows of the order span at most 2 chunks each
    n_windows = len(src._windows)
    assert all(len(np.unique(w // CHUNK)) <= 2 for w in src._windows)
    assert n_windows == int(np.ceil(len(np.unique(split.train // CHUNK)) / 2))
    for lo in range(0, len(order) - 7, 8):
        batch = order[lo : lo + 8]
        _same(src.get(batch), local, glob, batch)
    # one read per window (plus the resident validation images), not one per batch
    assert src.reads == 1 + n_windows
    assert src.images_read == len(split.val) + len(split.train)
    _same(src.get(split.val[:5]), local, glob, split.val[:5])  # resident: no read
    assert src.reads == 1 + n_windows
    src.close()


def test_validation_images_stay_in_memory_when_windows_of_two_chunks_still_fit(cache):
    """100 of 200 images to hold, a limit of 100 images + 8 chunks: more than a third of
    the limit (once refused: at Algonauts' size every validation then read all 11 GiB of
    the cache), but windows of two chunks remain. Too small a limit says so."""
    c, local, glob = cache
    val = np.arange(0, N, 2)  # spread over every chunk, as a random split is
    src = StreamedFeatures(
        c, "cpu", indices=np.arange(N), memory_limit=_limit(2, len(val)), resident=val
    )
    assert 3 * len(val) > 4 * 2 * CHUNK + len(val)  # beyond the third of the limit
    assert src.resident is not None and src.window_chunks == 2 and src.reads == 1
    for lo in range(0, len(val), 32):  # a validation pass: no read at all
        _same(src.get(val[lo : lo + 32]), local, glob, val[lo : lo + 32])
    assert src.reads == 1 and src.images_read == len(val)
    src.close()
    with pytest.warns(UserWarning, match=r"100 validation images.*every validation reads"):
        small = StreamedFeatures(
            c, "cpu", indices=np.arange(N), memory_limit=_limit(1, len(val)), resident=val
        )
    assert small.resident is None and small.reads == 0
    small.close()


def test_other_requests_read_whole_chunks_once_per_sorted_pass(cache):
    c, local, glob = cache
    src = StreamedFeatures(c, "cpu", indices=np.arange(N), memory_limit=_limit(1))
    idx = np.arange(3, N, 7)  # a sorted pass, in batches that split chunks
    for lo in range(0, len(idx), 5):
        _same(src.get(idx[lo : lo + 5]), local, glob, idx[lo : lo + 5])
    touched = np.isin(np.arange(N) // CHUNK, idx // CHUNK)
    assert src.images_read == touched.sum()  # each chunk once, whole
    rand = np.array([150, 2, 2, 77, 199])  # any order, repeats
    _same(src.get(rand), local, glob, rand)
    with pytest.raises(KeyError, match=r"\[-1\]"):
        src.get(np.array([-1]))
    src.close()


def test_rows_mapped_to_images_stream_by_their_images(cache):
    c, local, glob = cache
    image_index = np.r_[np.arange(N), np.arange(0, N, 2)]  # every other image twice
    rows = RowMappedFeatures(
        StreamedFeatures(c, "cpu", indices=np.arange(N), memory_limit=_limit(1)), image_index
    )
    order = rows.epoch_order(np.arange(len(image_index)), np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(image_index)))
    for lo in range(0, len(order) - 9, 10):
        _same(rows.get(order[lo : lo + 10]), local, glob, image_index[order[lo : lo + 10]])


def _model(seed=1):
    torch.manual_seed(seed)
    coords = np.random.default_rng(0).normal(size=(12, 3))
    return FactorTopy(coords, FactorTopyConfig(WIDTHS, GRID, bottleneck=4, hidden=8))


def test_training_streams_and_resumes_like_an_uninterrupted_run(cache, tmp_path):
    c, local, glob = cache
    y = np.random.default_rng(2).normal(size=(N, 12)).astype(np.float32)
    split = make_split(N, seed=0)
    cfg = TrainConfig(batch_size=8, steps_per_epoch=10, max_epochs=4, lr=5e-3, soup=False)

    def source():
        return feature_source(c, np.arange(N), "cpu", _limit(1, len(split.val)), split.val)

    full_src = source()
    full = list(train(_model(), full_src, y, split, cfg))[-1]["result"]
    assert full.steps == 40 and full_src.reads < full.steps  # windows, not batches
    gen = train(_model(), source(), y, split, cfg, checkpoint_dir=tmp_path)
    for rec in gen:
        if rec["kind"] == "step" and rec["step"] == 25:  # stopped mid-epoch
            gen.close()
            break
    resumed = list(
        train(_model(seed=9), source(), y, split, cfg, checkpoint_dir=tmp_path, resume=True)
    )[-1]["result"]
    for k in full.state:
        np.testing.assert_allclose(resumed.state[k], full.state[k], rtol=1e-5, atol=1e-6)
    # predictions read through the stream equal those from memory
    mem = InMemoryFeatures(local, glob)
    m = _model()
    m.load_state_dict(full.state)
    np.testing.assert_allclose(
        predict(m, source(), split.test), predict(m, mem, split.test), rtol=1e-5, atol=1e-6
    )


class _SlowCache:
    """The cache on a slow disk: ``delay`` seconds per image of every chunk a read
    touches (a chunk is read whole, as zarr does)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def read(self, indices, dtype=None):
        chunks = {int(i) // CHUNK for i in indices}
        time.sleep(self.delay * sum(1 for i in range(N) if i // CHUNK in chunks))
        return self.inner.read(indices, dtype=dtype)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_read_time_follows_the_speed_the_cache_was_read_at(cache):
    c, _local, _glob = cache
    split = make_split(N, seed=0)
    delay = 0.004
    src = feature_source(
        _SlowCache(c, delay), np.arange(N), "cpu", _limit(1, len(split.val)), split.val
    )
    assert isinstance(src, StreamedFeatures) and src.resident is not None
    # held in memory: nothing to read; the validation images' read (scattered over
    # nearly every chunk) gave the speed, counted by the chunks it read
    assert src.read_seconds(split.val) == 0.0
    src.get(np.sort(split.test)[:3])  # one more read, of a whole chunk
    test = np.setdiff1d(split.test, split.val)
    # a plain count: the images of every chunk a test image is in
    chunks = {int(i) // CHUNK for i in test}
    images = sum(1 for i in range(N) if i // CHUNK in chunks)
    want = images * delay
    assert src.read_seconds(split.test) == pytest.approx(want, rel=0.2)
    assert end_read_seconds(src, split) == pytest.approx(want, rel=0.2)
    # rows mapped to images: the same chunks, by the rows' images
    rows = RowMappedFeatures(src, np.arange(N))
    assert rows.read_seconds(split.test) == pytest.approx(src.read_seconds(split.test))
    assert end_read_seconds(rows, split) == pytest.approx(src.read_seconds(split.test))
    # in memory, or a validation that streams too (its timing carries the reading): 0
    assert end_read_seconds(InMemoryFeatures(_local, _glob), split) == 0.0
    streamed_val = feature_source(_SlowCache(c, delay), np.arange(N), "cpu", _limit(1))
    streamed_val.get(np.sort(split.test)[:3])
    assert streamed_val.resident is None and end_read_seconds(streamed_val, split) == 0.0


def test_a_budgeted_streamed_run_ends_within_its_budget(cache):
    """The test scores read their chunks from the cache at the end; the budget reserves
    that reading (it did not: at Algonauts' size a 480-s run overshot by 18 s)."""
    c, _local, _glob = cache
    y = np.random.default_rng(2).normal(size=(N, 12)).astype(np.float32)
    split = make_split(N, seed=0)
    delay = 0.012  # ≈ 2.3 s to read the test images' chunks at the end
    src = feature_source(
        _SlowCache(c, delay), np.arange(N), "cpu", _limit(1, len(split.val)), split.val
    )
    budget = 7.0
    cfg = TrainConfig(
        batch_size=8, steps_per_epoch=5, max_epochs=10_000, lr=5e-3, soup=False,
        max_seconds=budget, calibrate=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = list(train(_model(), src, y, split, cfg))[-1]["result"]
    took = time.perf_counter() - t0
    reserve = end_read_seconds(src, split)
    assert reserve > 1.0  # the end's reading was reserved
    assert result.steps > 10
    # unreserved, the end's reading (≈ 2.3 s) came on top: 9.5 s of the 7-s budget
    assert took <= budget + 1.0, f"the run took {took:.1f} s of a {budget:.0f}-s budget"
