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
pass ``images=(start, stop)`` and ``concurrent=True``.
"""

from __future__ import annotations

import errno
import itertools
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .backbones import Backbone, resize_tokens
from .cache import CacheError, FeatureCache

__all__ = ["ExtractionError", "extract_features", "plan_ranges"]


class ExtractionError(RuntimeError):
    """Extraction stopped: an undecodable image, a full disk, a bad range."""


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

    Yields
    ------
    dict
        ``{"stage": "extract", "done": int, "total": int, "elapsed": float,
        "eta": float, "images_per_s": float, "skipped": list of dict}`` after each
        batch; ``skipped`` holds ``{"index", "image_id", "error"}`` of every image
        skipped so far.

    Raises
    ------
    ExtractionError
        Undecodable image with ``on_error="stop"``, a full disk (the cache stays
        valid: rerun to resume), a misaligned concurrent range, not enough space.
    """
    import torch

    from ..core.runtime import resolve_device

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip'; found {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; found {batch_size}")
    cache.check_compatible(
        layer_names=backbone.layer_names,
        widths=backbone.widths,
        backbone=backbone.name,
        source=f"backbone {backbone.name}",
    )
    n, chunk = cache.n_images, cache.chunk_images
    start, stop = (0, n) if images is None else (int(images[0]), int(images[1]))
    if not 0 <= start <= stop <= n:
        raise ExtractionError(
            f"feature cache {cache.path}: image range {start}..{stop} is outside 0..{n}"
        )
    if concurrent and (start % chunk or (stop % chunk and stop != n)):
        raise ExtractionError(
            f"feature cache {cache.path}: with concurrent writers each range must start and "
            f"end on a chunk boundary (multiples of {chunk}, or {n}); found {start}..{stop}. "
            f"Use plan_ranges({n}, {chunk}, workers)"
        )
    todo = cache.missing()
    todo = todo[(todo >= start) & (todo < stop)]
    total = len(todo)
    if check_space and total:
        _check_space(cache, total)
    dev = resolve_device(device)
    backbone.to(dev)
    use_amp = autocast and dev.type == "cuda"
    image_ids = cache.image_ids
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

    def fetch(idx: np.ndarray) -> tuple[np.ndarray, Any]:
        """Decode + preprocess; returns the indices actually kept and the tensor."""
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
                    skipped.append(
                        {"index": int(i), "image_id": image_ids[int(i)], "error": str(exc)}
                    )
                    continue
                keep_l.append(int(i))
                imgs.append(im)
            keep = np.asarray(keep_l, np.int64)
        if len(keep) == 0:
            return keep, None
        return keep, backbone.preprocessing(imgs)

    pool = ThreadPoolExecutor(max_workers=2) if prefetch else None
    pending_fetch: Future | None = None
    pending_write: Future | None = None
    # per-unit buffers: unit position → {index: (local list, global list)}
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
        buf = buffers.pop(u)
        idx = np.asarray(sorted(buf), np.int64)
        # contiguous sub-runs (skipped images split a unit)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
            local = [
                np.stack([buf[int(i)][0][k] for i in run]) for k in range(len(buf[run[0]][0]))
            ]
            glob = [np.stack([buf[int(i)][1][k] for i in run]) for k in range(len(buf[run[0]][1]))]
            r0, r1 = int(run[0]), int(run[-1]) + 1
            whole = r0 % chunk == 0 and (r1 % chunk == 0 or r1 == n)
            _write(cache, r0, local, glob, concurrent=concurrent and whole)

    def flush(units_ready: list[int]) -> Future | None:
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

    try:
        pending_fetch = submit_fetch(0)
        for b in range(len(batches)):
            keep, x = pending_fetch.result()
            pending_fetch = submit_fetch(b + 1)
            batch_idx = batches[b][wanted[batches[b]]]
            lost = np.setdiff1d(batch_idx, keep)
            for i in lost:
                failed[unit_of[i]] += 1
            ready: list[int] = []
            if x is not None:
                with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
                    local, global_ = backbone(x.to(dev, non_blocking=True))
                    local = resize_tokens(local, cache.grid)
                loc16 = [t.float().cpu().numpy().astype(np.float16) for t in local]
                glo16 = [t.float().cpu().numpy().astype(np.float16) for t in global_]
                for j, i in enumerate(keep):
                    if not wanted[i]:
                        continue
                    u = int(unit_of[i])
                    buffers.setdefault(u, {})[int(i)] = (
                        [a[j] for a in loc16],
                        [a[j] for a in glo16],
                    )
                    filled[u] += 1
            touched = {int(unit_of[i]) for i in batch_idx}
            for u in sorted(touched):
                if filled[u] + failed[u] == len(units[u]):
                    if filled[u]:
                        ready.append(u)
                    else:
                        buffers.pop(u, None)
            if pending_write is not None:
                pending_write.result()
            pending_write = flush(ready)
            done += len(batch_idx)
            elapsed = time.perf_counter() - t0
            rate = done / max(elapsed, 1e-9)
            yield {
                "stage": "extract",
                "done": done,
                "total": total,
                "elapsed": elapsed,
                "eta": (total - done) / max(rate, 1e-9),
                "images_per_s": rate,
                "skipped": list(skipped),
            }
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


def _write(cache: FeatureCache, start: int, local: list, glob: list, *, concurrent: bool) -> None:
    try:
        cache.write(start, local, glob, concurrent=concurrent)
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


def _check_space(cache: FeatureCache, n_missing: int) -> None:
    need = cache.nbytes(np.zeros(n_missing, np.int64)) // 2  # stored as float16
    try:
        free = shutil.disk_usage(cache.path).free
    except OSError:  # pragma: no cover
        return
    if need > free:
        raise ExtractionError(
            f"feature cache {cache.path}: {n_missing} images need about "
            f"{need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free on its disk; free "
            "space or choose another location (nothing was written)"
        )
