"""Feature extraction: images → backbone tokens → the zarr feature cache.

:func:`extract_features` is a generator of progress records, so the CLI, the napari
widget and the tests drive the same code. It only computes the images the cache
does not have yet: a killed run, rerun, finishes the rest, and the result equals an
uninterrupted run (the cache marks images written only after all their layers are
stored).

Throughput: images of the next batch are decoded and preprocessed in a background
thread while the network runs, and the cache writes of one batch overlap the next
forward pass. Writes are gathered per cache chunk, so each chunk is written once.

Several processes may fill one cache at the same time when each owns a disjoint image
range whose ends are multiples of the cache's ``chunk_images`` (the last may end at N):
pass ``images=(start, stop)`` and ``concurrent=True``. Each run claims its range
(:meth:`FeatureCache.claim`): a second run of an overlapping range is refused while
the first lives.

Nothing silent: before computing, the run checks that the cache was made with this
backbone's preprocessing and weights (:func:`weights_identity`, recorded by the first
extraction) and that a sample of already written rows still comes from the same image
content (:func:`check_images`); every image decoded on the way is compared with its
row's digest too. Rows found damaged when the cache is opened (a missing or short
chunk file) count as missing and are recomputed; ``verify=True`` first reads the whole
cache (:meth:`FeatureCache.verify`) and marks corrupted rows for recomputation.
"""

from __future__ import annotations

import errno
import functools
import itertools
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .backbones import Backbone, resize_tokens
from .cache import CacheError, FeatureCache, image_digest
from .extract_checks import (
    CacheMismatchError,
    ExtractionError,
    _check_space,
    _compare_digest,
    check_images,
    disk_space,
    size_text,
    weights_identity,
)

__all__ = [
    "CacheMismatchError",
    "ExtractionError",
    "check_images",
    "disk_space",
    "extract_features",
    "plan_ranges",
    "size_text",
    "weights_identity",
]


def plan_ranges(n_images: int, chunk_images: int, n_workers: int) -> list[tuple[int, int]]:
    """Split ``0..n_images`` into ``n_workers`` chunk-aligned ranges for parallel writers.

    Returns
    -------
    list of (start, stop)
        Disjoint, covering all images, every boundary a multiple of ``chunk_images``
        (or ``n_images``); fewer ranges when there are fewer chunks than workers.
    """
    n_chunks = -(-n_images // chunk_images)
    n_workers = max(1, min(n_workers, n_chunks))
    bounds = np.linspace(0, n_chunks, n_workers + 1).round().astype(int)
    return [
        (int(a) * chunk_images, min(int(b) * chunk_images, n_images))
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]


def _units(todo: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Contiguous runs of missing images, each inside one cache chunk."""
    if len(todo) == 0:
        return []
    breaks = np.flatnonzero((np.diff(todo) != 1) | (np.diff(todo // chunk) != 0)) + 1
    return np.split(todo, breaks)


def extract_features(
    backbone: Backbone,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    device: str | None = "auto",
    autocast: bool = True,
    on_error: str = "stop",
    images: tuple[int, int] | None = None,
    concurrent: bool = False,
    prefetch: bool = True,
    check_space: bool = True,
    verify: bool = False,
) -> Iterator[dict]:
    """Fill the missing images of ``cache`` with ``backbone``'s tokens.

    Parameters
    ----------
    backbone : Backbone
        The network; its layers and widths must match the cache.
    load_images : callable
        ``load_images(indices (n,) int) -> sequence of n images`` (PIL or uint8
        (H, W, 3) arrays), in cache order. It may raise for undecodable images.
    cache : FeatureCache
        Opened for writing. Images already written are skipped.
    batch_size : int
        Images per forward pass.
    device : str
        ``"auto"`` (CUDA > MPS > CPU) or a torch device name.
    autocast : bool
        bf16 autocast on CUDA.
    on_error : {"stop", "skip"}
        An image that cannot be decoded: stop with :class:`ExtractionError` naming it,
        or skip it (left unwritten in the cache) and record it in the progress records.
    images : (start, stop), optional
        Only fill images ``start .. stop-1`` (default: all).
    concurrent : bool
        Other processes fill other ranges of this cache at the same time: ``images``
        must then be chunk-aligned (checked before anything runs).
    prefetch : bool
        Decode the next batch and write the previous one in background threads.
    check_space : bool
        Refuse to start when the disk cannot hold the missing images.
    verify : bool
        First read the whole cache and mark corrupted rows unwritten
        (:meth:`FeatureCache.verify`), so that they are recomputed.

    Yields
    ------
    dict
        ``{"stage": "extract", "done": int, "total": int, "elapsed": float,
        "eta": float, "images_per_s": float, "skipped": list of dict}`` after each
        batch; ``skipped`` holds ``{"index", "image_id", "error"}`` of every image
        skipped so far. With ``verify=True`` and damage found, one record
        ``{"stage": "verify", "damaged": {row: why}}`` comes first.

    Raises
    ------
    ExtractionError
        Undecodable image with ``on_error="stop"``, a full disk (the cache stays
        valid: rerun to resume), a misaligned concurrent range, not enough space,
        other weights or preprocessing than the cache's, other image content than the
        written rows', a range another live process is extracting.
    """

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip'; found {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; found {batch_size}")
    if cache.mode != "r+":
        raise ExtractionError(
            f"feature cache {cache.path}: opened read-only; open it with mode='r+' to extract"
        )
    cache.check_compatible(
        layer_names=backbone.layer_names,
        widths=backbone.widths,
        backbone=backbone.name,
        source=f"backbone {backbone.name}",
    )
    prep = backbone.preprocessing.to_dict()
    if cache.preprocessing != prep:
        raise CacheMismatchError(
            f"feature cache {cache.path}: holds features preprocessed with "
            f"{cache.preprocessing}; this run preprocesses with {prep}. Use another "
            "--cache, or --overwrite to replace it"
        )
    n, chunk = cache.n_images, cache.chunk_images
    start, stop = (0, n) if images is None else (int(images[0]), int(images[1]))
    if not 0 <= start <= stop <= n:
        raise ExtractionError(
            f"feature cache {cache.path}: image range {start}..{stop} is outside 0..{n}"
        )
    pending = cache.missing()
    writing = verify or bool(((pending >= start) & (pending < stop)).any())
    try:  # a complete cache of an older version is still usable: nothing is added
        cache.check_weights(weights_identity(backbone), writing=writing)
    except CacheError as exc:
        raise CacheMismatchError(str(exc)) from None
    if concurrent and (start % chunk or (stop % chunk and stop != n)):
        raise ExtractionError(
            f"feature cache {cache.path}: with concurrent writers each range must start and "
            f"end on a chunk boundary (multiples of {chunk}, or {n}); found {start}..{stop}. "
            f"Use plan_ranges({n}, {chunk}, workers)"
        )
    claim = cache.claim(start, stop)  # held while this generator runs
    try:
        refresh = claim.__enter__()
    except CacheError as exc:
        raise ExtractionError(str(exc)) from None
    try:
        yield from _extract(
            backbone, load_images, cache, start, stop, refresh,
            batch_size=batch_size, device=device, autocast=autocast, on_error=on_error,
            concurrent=concurrent, prefetch=prefetch, check_space=check_space, verify=verify,
        )  # fmt: skip
    finally:
        claim.__exit__(None, None, None)


def _extract(
    backbone: Backbone,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    cache: FeatureCache,
    start: int,
    stop: int,
    refresh: Callable[[], None],
    *,
    batch_size: int,
    device: str | None,
    autocast: bool,
    on_error: str,
    concurrent: bool,
    prefetch: bool,
    check_space: bool,
    verify: bool,
) -> Iterator[dict]:
    """The body of :func:`extract_features`, run while the range is claimed."""
    from ..core.runtime import resolve_device

    n, chunk = cache.n_images, cache.chunk_images
    todo = yield from _todo(
        cache, load_images, start, stop, check_space=check_space, verify=verify
    )
    total = len(todo)
    dev = resolve_device(device)
    backbone.to(dev)
    use_amp = autocast and dev.type == "cuda"
    units = _units(todo, chunk)
    # Forward batches sit on a fixed grid (images k·B .. k·B+B-1), whatever is missing:
    # a resumed or split run feeds the network exactly the batches of an uninterrupted
    # one, so the cache ends bitwise equal (only written images are stored).
    batches = [
        np.arange(k * batch_size, min((k + 1) * batch_size, n), dtype=np.int64)
        for k in np.unique(todo // batch_size)
    ]
    wanted = np.zeros(n, bool)
    wanted[todo] = True
    skipped: list[dict] = []
    stored_digests = cache.image_digests()
    written_now = cache.written

    fetch = functools.partial(
        _fetch_batch,
        backbone=backbone,
        load_images=load_images,
        cache=cache,
        image_ids=cache.image_ids,
        wanted=wanted,
        on_error=on_error,
        skipped=skipped,
        stored_digests=stored_digests,
        written_now=written_now,
    )

    pool = ThreadPoolExecutor(max_workers=2) if prefetch else None
    pending_fetch: Future | None = None
    pending_write: Future | None = None
    # per-unit buffers: unit position → {index: (local list, global list, digest)}
    unit_of = np.empty(n, np.int64) if total else np.empty(0, np.int64)
    for u, run in enumerate(units):
        unit_of[run] = u
    buffers: dict[int, dict[int, tuple[list, list]]] = {}
    filled = np.zeros(len(units), np.int64)
    failed = np.zeros(len(units), np.int64)
    done = 0
    t0 = time.perf_counter()

    def submit_fetch(b: int) -> Any:
        if b >= len(batches):
            return None
        if pool is None:
            f: Future = Future()
            f.set_result(fetch(batches[b]))
            return f
        return pool.submit(fetch, batches[b])

    def write_unit(u: int) -> None:
        _write_unit(cache, buffers.pop(u), concurrent=concurrent)

    flush = functools.partial(_flush, pool, write_unit)

    try:
        pending_fetch = submit_fetch(0)
        for b in range(len(batches)):
            keep, x, digests = pending_fetch.result()
            pending_fetch = submit_fetch(b + 1)
            batch_idx = batches[b][wanted[batches[b]]]
            lost = np.setdiff1d(batch_idx, keep)
            for i in lost:
                failed[unit_of[i]] += 1
            if x is not None:
                loc16, glo16 = _forward(backbone, x, dev, cache.grid, use_amp=use_amp)
                _buffer(buffers, filled, keep, wanted, unit_of, loc16, glo16, digests)
            ready = _units_ready(batch_idx, unit_of, units, filled, failed, buffers)
            if pending_write is not None:
                pending_write.result()
            pending_write = flush(ready)
            done += len(batch_idx)
            refresh()
            yield _progress(done, total, t0, skipped)
        if pending_write is not None:
            pending_write.result()
            pending_write = None
    finally:
        if pending_write is not None:
            try:
                pending_write.result()
            except BaseException:
                pass
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _todo(
    cache: FeatureCache,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    start: int,
    stop: int,
    *,
    check_space: bool,
    verify: bool,
) -> Generator[dict, None, np.ndarray]:
    """Before :func:`_extract` computes anything: repair the cache (``verify``,
    yielding the damage found), check that written rows' images still match, and
    find the range's missing images (refused when the disk cannot hold them).
    Returns the missing indices (n,) int."""
    if verify:
        report = cache.verify(repair=True)
        if report.damaged:
            yield {"stage": "verify", "damaged": dict(report.damaged)}
    # images of written rows: one in this range, and a sample spread over the cache
    in_range = np.flatnonzero(cache.written)
    check_images(cache, load_images, in_range[(in_range >= start) & (in_range < stop)][:1])
    check_images(cache, load_images)
    todo = cache.missing()
    todo = todo[(todo >= start) & (todo < stop)]
    total = len(todo)
    if check_space and total:
        _check_space(cache, todo)
    return todo


def _fetch_batch(
    idx: np.ndarray,
    *,
    backbone: Backbone,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    cache: FeatureCache,
    image_ids: list[str],
    wanted: np.ndarray,
    on_error: str,
    skipped: list[dict],
    stored_digests: np.ndarray,
    written_now: np.ndarray,
) -> tuple[np.ndarray, Any, Any]:
    """Decode + preprocess a batch of :func:`_extract`; returns the indices actually
    kept, the tensor and the kept images' digests (``None, None`` when none is kept).
    Undecodable wanted images stop the run or, with ``on_error="skip"``, are appended
    to ``skipped``; kept images of rows already written must match their digests."""
    try:
        imgs = list(load_images(idx))
        keep = idx
    except Exception:
        keep_l, imgs = [], []
        for i in idx:
            try:
                im = load_images(np.asarray([i]))[0]
            except Exception as exc:
                if not wanted[int(i)]:  # already written: just leave it out
                    continue
                if on_error == "stop":
                    raise ExtractionError(
                        f"image {image_ids[int(i)]!r} (index {int(i)}) cannot be decoded: "
                        f"{exc}. Fix or remove it, or rerun with on_error='skip' "
                        "(--on-error skip) to skip it and record it"
                    ) from exc
                skipped.append({"index": int(i), "image_id": image_ids[int(i)], "error": str(exc)})
                continue
            keep_l.append(int(i))
            imgs.append(im)
        keep = np.asarray(keep_l, np.int64)
    if len(keep) == 0:
        return keep, None, None
    digests = np.stack([image_digest(im) for im in imgs])
    for i, d in zip(keep, digests, strict=True):  # neighbours already written
        if written_now[int(i)]:
            _compare_digest(cache, int(i), d, stored_digests[int(i)], before=False)
    return keep, backbone.preprocessing(imgs), digests


def _forward(backbone: Backbone, x: Any, dev: Any, grid, *, use_amp: bool):
    """One forward pass of a preprocessed batch; the local tokens resized to the
    cache's ``grid``. Returns the local and global tokens per layer, float16 numpy
    arrays (n, C, h, w) and (n, C)."""
    import torch

    with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
        local, global_ = backbone(x.to(dev, non_blocking=True))
        mode = getattr(backbone, "token_resize", "antialias")
        local = resize_tokens(local, grid, mode)
    loc16 = [t.float().cpu().numpy().astype(np.float16) for t in local]
    glo16 = [t.float().cpu().numpy().astype(np.float16) for t in global_]
    return loc16, glo16


def _buffer(
    buffers: dict,
    filled: np.ndarray,
    keep: np.ndarray,
    wanted: np.ndarray,
    unit_of: np.ndarray,
    loc16: list,
    glo16: list,
    digests: np.ndarray,
) -> None:
    """Buffer a batch's wanted rows in their write units (``buffers``:
    unit → {index: (local list, global list, digest)}) and count them in ``filled``."""
    for j, i in enumerate(keep):
        if not wanted[i]:
            continue
        u = int(unit_of[i])
        buffers.setdefault(u, {})[int(i)] = (
            [a[j] for a in loc16],
            [a[j] for a in glo16],
            digests[j],
        )
        filled[u] += 1


def _flush(
    pool: ThreadPoolExecutor | None, write_unit: Callable[[int], None], units_ready: list[int]
) -> Future | None:
    """Write the ready units: in ``pool``'s background thread, or now (without a
    pool, as a finished Future that holds the error if one was raised)."""
    if not units_ready:
        return None
    if pool is None:
        f: Future = Future()
        try:
            for u in units_ready:
                write_unit(u)
            f.set_result(None)
        except BaseException as exc:
            f.set_exception(exc)
        return f
    return pool.submit(lambda us=units_ready: [write_unit(u) for u in us])


def _units_ready(
    batch_idx: np.ndarray,
    unit_of: np.ndarray,
    units: list[np.ndarray],
    filled: np.ndarray,
    failed: np.ndarray,
    buffers: dict,
) -> list[int]:
    """The write units a batch completed (every image filled or failed) that have
    something to write; completed units with nothing to write are dropped from
    ``buffers``."""
    ready: list[int] = []
    touched = {int(unit_of[i]) for i in batch_idx}
    for u in sorted(touched):
        if filled[u] + failed[u] == len(units[u]):
            if filled[u]:
                ready.append(u)
            else:
                buffers.pop(u, None)
    return ready


def _write_unit(cache: FeatureCache, buf: dict, *, concurrent: bool) -> None:
    """Write one unit's buffered rows ``{index: (local list, global list, digest)}``,
    one contiguous run at a time (skipped images split a unit)."""
    n, chunk = cache.n_images, cache.chunk_images
    idx = np.asarray(sorted(buf), np.int64)
    # contiguous sub-runs (skipped images split a unit)
    for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
        local = [np.stack([buf[int(i)][0][k] for i in run]) for k in range(len(buf[run[0]][0]))]
        glob = [np.stack([buf[int(i)][1][k] for i in run]) for k in range(len(buf[run[0]][1]))]
        digests = np.stack([buf[int(i)][2] for i in run])
        r0, r1 = int(run[0]), int(run[-1]) + 1
        whole = r0 % chunk == 0 and (r1 % chunk == 0 or r1 == n)
        _write(cache, r0, local, glob, digests, concurrent=concurrent and whole)


def _progress(done: int, total: int, t0: float, skipped: list[dict]) -> dict:
    """The progress record :func:`extract_features` yields after a batch."""
    elapsed = time.perf_counter() - t0
    rate = done / max(elapsed, 1e-9)
    return {
        "stage": "extract",
        "done": done,
        "total": total,
        "elapsed": elapsed,
        "eta": (total - done) / max(rate, 1e-9),
        "images_per_s": rate,
        "skipped": list(skipped),
    }


def _write(
    cache: FeatureCache,
    start: int,
    local: list,
    glob: list,
    digests: np.ndarray,
    *,
    concurrent: bool,
) -> None:
    try:
        cache.write(start, local, glob, concurrent=concurrent, image_digests=digests)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
        what = "the disk is full" if full else f"writing failed ({exc})"
        raise ExtractionError(
            f"feature cache {cache.path}: {what} while writing images {start}.."
            f"{start + len(local[0]) - 1}. The images written before are intact and these "
            "are marked unwritten; free space (or fix the disk) and rerun to resume"
        ) from exc
    except CacheError as exc:
        raise ExtractionError(str(exc)) from exc
