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
import hashlib
import itertools
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .backbones import Backbone, resize_tokens
from .cache import CacheError, FeatureCache, image_digest

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


class ExtractionError(RuntimeError):
    """Extraction stopped: an undecodable image, a full disk, a bad range."""


class CacheMismatchError(ExtractionError, ValueError):
    """Refused before computing: the cache holds rows of other weights, preprocessing
    or images than this run would write (bad input, not a failure at run time)."""


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


def weights_identity(backbone: Backbone) -> dict[str, Any]:
    """Identity of a backbone's weights, recorded in feature caches.

    The sha256 of every tensor of the module's ``state_dict`` (name, dtype, shape and
    bytes, in name order), so two runs agree exactly when the networks do. Cost: one
    pass over the weights (about 20 ms for EfficientNet-Lite0's 19 MB; about 0.3 s per
    GB of weights).

    Parameters
    ----------
    backbone : Backbone

    Returns
    -------
    dict
        ``{"kind": "random" | "pretrained" | "module", "sha256": str, "source": dict}``;
        ``kind`` comes from ``backbone.source["weights"]`` (``"random"`` / ``None``:
        random; another value: pretrained; absent: a user module).
    """
    import torch

    h = hashlib.sha256(b"factortopy-weights-1\0")
    state = backbone.module.state_dict()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        if t.numel():
            try:
                raw = t.reshape(-1).view(torch.uint8).numpy()
            except (RuntimeError, TypeError):  # dtypes without a byte view (quantized …)
                raw = t.float().reshape(-1).numpy().view(np.uint8)
            h.update(raw.data)
    src = dict(backbone.source)
    w = src.get("weights", "<module>")
    kind = (
        "module"
        if w == "<module>"
        else ("random" if w in (None, "None", "random") else "pretrained")
    )
    return {"kind": kind, "sha256": h.hexdigest(), "source": src}


def check_images(
    cache: FeatureCache,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    rows: Any = None,
    n_sample: int = 4,
) -> None:
    """Check that written rows were computed from the images the loader gives now.

    Parameters
    ----------
    cache : FeatureCache
    load_images : callable
        As in :func:`extract_features`.
    rows : array-like of int, optional
        Rows to check (default: ``n_sample`` written rows spread over the cache).
    n_sample : int
        How many rows to sample when ``rows`` is not given.

    Raises
    ------
    ExtractionError
        Naming the cache, the row, its image id, the stored and the found digest.
    """
    written = np.flatnonzero(cache.written)
    if rows is None:
        if written.size == 0:
            return
        pick = np.unique(np.linspace(0, written.size - 1, min(n_sample, written.size)).round())
        rows = written[pick.astype(np.int64)]
    rows = np.asarray(rows, np.int64)
    stored = cache.image_digests(rows)
    known = stored.any(axis=1)
    if not known.any():
        return
    rows, stored = rows[known], stored[known]
    try:
        images = list(load_images(rows))
    except Exception:  # undecodable now: extraction reports it where it matters
        return
    for r, im, want in zip(rows, images, stored, strict=True):
        _compare_digest(cache, int(r), image_digest(im), want)


def _compare_digest(
    cache: FeatureCache, row: int, found: np.ndarray, want: np.ndarray, *, before: bool = True
) -> None:
    if want.any() and not np.array_equal(found, want):
        after = (
            "nothing was written"
            if before
            else "rows written so far in this run are recorded with their own images' "
            "digests; `factortopy cache verify CACHE --dataset …` lists every row whose "
            "image changed"
        )
        raise CacheMismatchError(
            f"feature cache {cache.path}: row {row} (image {cache.image_ids[row]!r}) was "
            f"computed from other image content (sha256 {want.tobytes().hex()[:12]}…) "
            f"than the dataset gives now ({found.tobytes().hex()[:12]}…): the cache was "
            "built from different images sharing these names. Use another --cache, or "
            f"--overwrite to replace it ({after})"
        )


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
    import torch

    from ..core.runtime import resolve_device

    n, chunk = cache.n_images, cache.chunk_images
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
    stored_digests = cache.image_digests()
    written_now = cache.written

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
            return keep, None, None
        digests = np.stack([image_digest(im) for im in imgs])
        for i, d in zip(keep, digests, strict=True):  # neighbours already written
            if written_now[int(i)]:
                _compare_digest(cache, int(i), d, stored_digests[int(i)], before=False)
        return keep, backbone.preprocessing(imgs), digests

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
        buf = buffers.pop(u)
        idx = np.asarray(sorted(buf), np.int64)
        # contiguous sub-runs (skipped images split a unit)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
            local = [
                np.stack([buf[int(i)][0][k] for i in run]) for k in range(len(buf[run[0]][0]))
            ]
            glob = [np.stack([buf[int(i)][1][k] for i in run]) for k in range(len(buf[run[0]][1]))]
            digests = np.stack([buf[int(i)][2] for i in run])
            r0, r1 = int(run[0]), int(run[-1]) + 1
            whole = r0 % chunk == 0 and (r1 % chunk == 0 or r1 == n)
            _write(cache, r0, local, glob, digests, concurrent=concurrent and whole)

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
            keep, x, digests = pending_fetch.result()
            pending_fetch = submit_fetch(b + 1)
            batch_idx = batches[b][wanted[batches[b]]]
            lost = np.setdiff1d(batch_idx, keep)
            for i in lost:
                failed[unit_of[i]] += 1
            ready: list[int] = []
            if x is not None:
                with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
                    local, global_ = backbone(x.to(dev, non_blocking=True))
                    mode = getattr(backbone, "token_resize", "antialias")
                    local = resize_tokens(local, cache.grid, mode)
                loc16 = [t.float().cpu().numpy().astype(np.float16) for t in local]
                glo16 = [t.float().cpu().numpy().astype(np.float16) for t in global_]
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
            refresh()
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


def disk_space(cache: FeatureCache, images: np.ndarray | None = None) -> tuple[int, int | None]:
    """Bytes the cache's missing images will take on disk, and the bytes free there.

    zarr stores whole chunks of ``chunk_images`` images (the last one too), uncompressed
    float16, with each row's two sha256 digests and its ``written`` flag; a chunk is
    written to a temporary file, then renamed, so one more chunk is needed while it is
    written. Chunks that hold a written row exist already and are rewritten in place.

    Parameters
    ----------
    cache : FeatureCache
    images : int array, optional
        The images to extract (default: every missing one).

    Returns
    -------
    need : int
        Bytes the new chunks take, plus one chunk.
    free : int or None
        Free bytes on the cache's disk (None when the system cannot say).
    """
    todo = cache.missing() if images is None else np.asarray(images, np.int64)
    chunk = cache.chunk_images
    per_image = cache.nbytes(np.zeros(1, np.int64)) // 2 + 2 * 32 + 1
    existing = set((np.flatnonzero(cache.written) // chunk).tolist())
    new = [c for c in np.unique(todo // chunk).tolist() if c not in existing]
    need = (len(new) + (1 if len(todo) else 0)) * chunk * per_image
    try:
        free = shutil.disk_usage(cache.path).free
    except OSError:  # pragma: no cover
        free = None
    return int(need), free


def _check_space(cache: FeatureCache, todo: np.ndarray) -> None:
    need, free = disk_space(cache, todo)
    if free is not None and need > free:
        per_image = cache.nbytes(np.zeros(1, np.int64)) // 2
        raise ExtractionError(
            f"feature cache {cache.path}: {len(todo)} images need {size_text(need)} on disk "
            f"({size_text(per_image)} per image, in chunks of {cache.chunk_images}) but "
            f"only {size_text(free)} are free there; free space or choose another location "
            "(nothing was written)"
        )


def size_text(n_bytes: float) -> str:
    """Bytes for a person: ``"12.1 GB"``, ``"580 MB"``, ``"145 B"`` (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return (
                f"{n_bytes / scale:.3g} {unit}"
                if n_bytes < 100 * scale
                else (f"{n_bytes / scale:.0f} {unit}")
            )
    return f"{int(n_bytes)} B"
