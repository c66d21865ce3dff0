"""Feature sources for training and prediction: in device memory, or streamed.

A feature source hands out the tokens of any set of images as torch tensors on the
training device: :class:`InMemoryFeatures` holds them (float16) on the device;
:class:`StreamedFeatures` reads them from a feature cache in whole chunks, in the
training order, ahead of use on a background thread. :func:`feature_source` picks one
by a memory limit. A source may offer ``epoch_order(indices, rng)`` (a batch order
that reads well) and ``plan(indices)`` (the order training will follow);
:func:`~napari_factortopy.core.training.train` uses them when present.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "FeatureSource",
    "InMemoryFeatures",
    "RowMappedFeatures",
    "StreamedFeatures",
    "feature_source",
]


class FeatureSource(Protocol):
    """Tokens of images by index: ``get(indices) -> (local, global_)``."""

    widths: tuple[int, ...]
    grid: tuple[int, int]

    def get(self, indices: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]: ...


class InMemoryFeatures:
    """Tokens of a set of images held as float16 tensors on one device.

    Parameters
    ----------
    local : sequence of L arrays or tensors of shape (n, C_l, h, w)
    global_ : sequence of L arrays or tensors of shape (n, C_l)
        Tensors already on ``device`` are converted there (no host copy).
    image_index : array of shape (n,), optional
        The image index of each row (defaults to ``0..n-1``); :meth:`get` takes
        these image indices.
    device : torch.device or str
    """

    def __init__(
        self,
        local: Sequence[Any],
        global_: Sequence[Any],
        image_index: np.ndarray | None = None,
        device: Any = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.local = [_half_on(a, self.device) for a in local]
        self.global_ = [_half_on(a, self.device) for a in global_]
        n = self.local[0].shape[0]
        image_index = np.arange(n) if image_index is None else np.asarray(image_index)
        if len(image_index) != n:
            raise ValueError(f"image_index has {len(image_index)} entries for {n} feature rows")
        size = int(image_index.max()) + 1 if n else 0
        lookup = np.full(size, -1, np.int64)
        lookup[image_index] = np.arange(n)
        self._lookup = lookup
        self.widths = tuple(int(t.shape[1]) for t in self.local)
        self.grid = tuple(int(s) for s in self.local[0].shape[2:])

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Feature rows (n,) of image indices (n,); KeyError for images not loaded."""
        idx = np.asarray(indices, np.int64)
        n = len(self._lookup)
        if idx.size and (
            idx.min() < 0 or idx.max() >= n or (self._lookup[np.clip(idx, 0, n - 1)] < 0).any()
        ):
            missing = idx[(idx < 0) | (idx >= n) | (self._lookup[np.clip(idx, 0, n - 1)] < 0)]
            raise KeyError(f"features of images {missing[:5].tolist()} are not loaded")
        return self._lookup[idx]

    def get(self, indices: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tokens of images ``indices`` (n,) as float32 tensors on the device.

        Returns
        -------
        local : list of L tensors (n, C_l, h, w); global_ : list of L tensors (n, C_l)
        """
        rows = torch.as_tensor(self.rows(indices), device=self.device)
        return (
            [t.index_select(0, rows).float() for t in self.local],
            [t.index_select(0, rows).float() for t in self.global_],
        )


def _half_on(a: Any, device: torch.device) -> torch.Tensor:
    """A numpy array or a tensor (on any device) as float16 on ``device``."""
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(device=device, dtype=torch.float16)


class StreamedFeatures:
    """Tokens streamed from a :class:`~napari_factortopy.data.cache.FeatureCache` whose
    features do not fit in the memory limit: whole chunks, in the training order, read
    ahead on a background thread.

    A cache stores images in chunks of ``chunk_images`` (zarr reads a chunk whole), so a
    random batch of 8 images would read 8 chunks of 64 for 8 rows. Instead:

    - :meth:`epoch_order` (called by :func:`~napari_factortopy.core.training.train` for
      every epoch) shuffles the chunks, cuts them into *windows* of ``window_chunks``
      chunks and shuffles the images within each window: batches stay random within a
      window (a shuffle buffer of ``window_chunks · chunk_images`` images), and a window
      is read once, whole, as a sorted selection;
    - while training draws from window w, window w + 1 is read on a background thread
      (the first window of an epoch, whose order is drawn when the epoch starts, is read
      when asked for);
    - ``resident`` images (the validation split, asked for at every validation) are held
      in memory when they take at most a third of the limit or leave room for windows
      of two chunks (else a warning: each validation then reads their chunks again);
    - other requests (evaluation, calibration, test; training resumed from an order this
      source did not plan) read the chunks they touch, whole, into a small
      least-recently-used store, so a pass in sorted order reads each chunk once.

    Memory on the device: resident images + two windows + the chunk store, within
    ``memory_limit`` (one window and the store never less than one chunk each).

    Parameters
    ----------
    cache : FeatureCache
        Or any object with ``read(indices, dtype=)``, ``nbytes(indices)``, ``widths``,
        ``grid``, and optionally ``chunk_images`` (default 64).
    device : torch.device or str
    indices : array of shape (n,), optional
        Every image that will be asked for (default: all of the cache's).
    memory_limit : int, optional
        Bytes the features may take on the device (float16). Default: four chunks.
    resident : array, optional
        Images to hold in memory when they fit (see above).
    """

    def __init__(
        self,
        cache: Any,
        device: Any = "cpu",
        *,
        indices: np.ndarray | None = None,
        memory_limit: int | None = None,
        resident: np.ndarray | None = None,
    ) -> None:
        self.cache = cache
        self.device = torch.device(device)
        self.widths = tuple(int(c) for c in cache.widths)
        self.grid = tuple(int(g) for g in cache.grid)
        n = int(getattr(cache, "n_images", 0) or 0)
        eligible = np.arange(n) if indices is None else np.unique(np.asarray(indices, np.int64))
        self.eligible = eligible
        self._ok = np.zeros(int(eligible.max()) + 1 if eligible.size else 0, bool)
        self._ok[eligible] = True
        self.chunk_images = max(1, int(getattr(cache, "chunk_images", 64) or 64))
        self.image_bytes = int(cache.nbytes(np.zeros(1, np.int64))) // 2  # float16
        chunk_bytes = self.chunk_images * self.image_bytes
        limit = 4 * chunk_bytes if memory_limit is None else max(0, int(memory_limit))
        self._lock = threading.Lock()  # one cache read at a time
        self.reads = 0  # cache reads, and the images they read (for tests and benchmarks)
        self.images_read = 0
        self.read_seconds_total = 0.0  # wall time inside the cache's reads, and their bytes
        self.bytes_read = 0
        self._resident_images = np.zeros(0, np.int64)
        self.resident: InMemoryFeatures | None = None
        held = 0
        if resident is not None:
            keep = np.intersect1d(np.asarray(resident, np.int64), eligible)
            need = keep.size * self.image_bytes
            # held when they take at most a third of the limit, or leave windows of two
            # chunks: validation images are spread over every chunk, so a validation
            # streamed instead reads the whole cache (11 GiB at Algonauts' size)
            if keep.size and (need <= limit // 3 or need + 8 * chunk_bytes <= limit):
                local, global_ = self._read(keep)
                self.resident = InMemoryFeatures(local, global_, keep, self.device)
                self._resident_images = keep
                held = need
            elif keep.size:
                warnings.warn(
                    f"the {keep.size} validation images' features ({need / 2**30:.2f} GiB) "
                    f"do not fit in the memory limit ({limit / 2**30:.2f} GiB) beside the "
                    "training windows: every validation reads the cache's chunks again; a "
                    f"limit of {(need + 8 * chunk_bytes) / 2**30:.1f} GiB keeps them in "
                    "memory",
                    stacklevel=2,
                )
        # up to three windows (the one in use, the one before it while a batch straddles
        # both, the one read ahead) and the store of loose chunks
        self.window_chunks = max(1, (limit - held) // 4 // max(chunk_bytes, 1))
        self.store_chunks = max(1, self.window_chunks)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="factortopy-prefetch")
        self._windows: list[np.ndarray] = []  # images of each window of the plan
        self._planned = np.zeros(0, np.int64)  # the images training asks for, in order
        self._pos_window = np.zeros(0, np.int64)  # window of each position of the plan
        self._cursor = 0  # where in the plan the next training batch starts
        self._loaded: dict[int, Future] = {}  # window -> InMemoryFeatures (future)
        self._store: OrderedDict[int, InMemoryFeatures] = OrderedDict()  # chunk -> rows

    # ------------------------------------------------------------------ planning
    def epoch_order(
        self, indices: np.ndarray, rng: np.random.Generator, images: np.ndarray | None = None
    ) -> np.ndarray:
        """A random order of ``indices`` (n,) grouped into windows of whole chunks.

        ``images`` (n,) names the image of each index (default: the indices themselves,
        for response rows that are images). The order becomes this source's plan.
        """
        idx = np.asarray(indices, np.int64)
        img = idx if images is None else np.asarray(images, np.int64)
        chunk = img // self.chunk_images
        chunks = rng.permutation(np.unique(chunk))
        parts = []
        for lo in range(0, len(chunks), self.window_chunks):
            members = np.flatnonzero(np.isin(chunk, chunks[lo : lo + self.window_chunks]))
            parts.append(members[rng.permutation(len(members))])
        pos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.plan(img[pos])
        return idx[pos]

    def plan(self, images: np.ndarray) -> None:
        """The images training will ask for, in order: cut into windows of at most
        ``window_chunks`` chunks (any order works; :meth:`epoch_order`'s reads best)."""
        images = np.asarray(images, np.int64)
        chunk = images // self.chunk_images
        pos_window = np.zeros(len(images), np.int64)
        w, seen = 0, set()
        for i, c in enumerate(chunk.tolist()):
            if c not in seen and len(seen) == self.window_chunks:
                w, seen = w + 1, set()
            seen.add(c)
            pos_window[i] = w
        self._drop_windows()
        self._planned, self._pos_window, self._cursor = images, pos_window, 0
        n_windows = int(pos_window[-1]) + 1 if len(images) else 0
        self._windows = [np.unique(images[pos_window == k]) for k in range(n_windows)]

    # ------------------------------------------------------------------- access
    def get(self, indices: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tokens of images ``indices`` (n,) as float32 tensors on the device."""
        idx = np.asarray(indices, np.int64)
        n = len(self._ok)
        ok = (idx >= 0) & (idx < n)
        ok[ok] = self._ok[idx[ok]]
        if not ok.all():
            raise KeyError(f"features of images {idx[~ok][:5].tolist()} are not loaded")
        if self.resident is not None:
            try:
                return self.resident.get(idx)
            except KeyError:
                pass
        c, n = self._cursor, len(idx)
        if n and c + n <= len(self._planned) and np.array_equal(self._planned[c : c + n], idx):
            self._cursor += n  # the next training batch of the plan: from its window(s)
            win = self._pos_window[c : c + n]
            parts = {int(w): self._window(int(w)) for w in np.unique(win)}
            self._prefetch(int(win.max()) + 1)
            return _gather(parts, win, idx)
        return self._from_chunks(idx)

    def _window(self, w: int) -> InMemoryFeatures:
        if w not in self._loaded:
            self._loaded[w] = self._pool.submit(self._load, self._windows[w])
        for old in [k for k in self._loaded if k < w - 1]:  # behind us: free it
            del self._loaded[old]
        return self._loaded[w].result()

    def _prefetch(self, w: int) -> None:
        if w < len(self._windows) and w not in self._loaded:
            self._loaded[w] = self._pool.submit(self._load, self._windows[w])

    def _drop_windows(self) -> None:
        for fut in self._loaded.values():
            fut.cancel()
        self._loaded = {}

    def _load(self, images: np.ndarray) -> InMemoryFeatures:
        local, global_ = self._read(images)
        return InMemoryFeatures(local, global_, images, self.device)

    def _read(self, images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        with self._lock:
            t0 = time.perf_counter()
            out = self.cache.read(np.asarray(images, np.int64), dtype=np.float16)
            self.read_seconds_total += time.perf_counter() - t0
            # what the cache read: the chunks these images are in, whole (a scattered
            # read, as of the validation images, touches nearly every chunk)
            self.bytes_read += self._chunk_images(images) * self.image_bytes
            self.reads += 1
            self.images_read += len(images)
            return out

    def read_seconds(self, indices: np.ndarray) -> float:
        """Seconds to read the features of images ``indices`` (n,) that are not held in
        memory, at the speed this source has read the cache so far: whole chunks, as a
        pass in sorted order reads them (the test scores at a run's end). 0 before any
        read (nothing to go by) and for images held in memory.

        The run's time budget reserves this for the end
        (:func:`~napari_factortopy.core.budget.end_read_seconds`): at Algonauts' size
        the test images' chunks took 31 s to read, and a 480-s run overshot by 18 s.
        """
        idx = np.unique(np.asarray(indices, np.int64))
        idx = idx[~np.isin(idx, self._resident_images)]
        if not idx.size or self.bytes_read <= 0 or self.read_seconds_total <= 0:
            return 0.0
        return (
            self._chunk_images(idx) * self.image_bytes * self.read_seconds_total / self.bytes_read
        )

    def _chunk_images(self, images: np.ndarray) -> int:
        """How many of this source's images the chunks holding ``images`` (n,) hold."""
        chunks = np.unique(np.asarray(images, np.int64) // self.chunk_images)
        return int(np.isin(self.eligible // self.chunk_images, chunks).sum())

    def _from_chunks(self, idx: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Rows read chunk by chunk through a store of whole chunks (least recently used
        dropped first): a pass in sorted order reads each chunk once, and a request
        spread over many chunks holds only ``store_chunks`` of them at a time."""
        chunk = idx // self.chunk_images
        parts: dict[int, InMemoryFeatures] = {}
        for c in np.unique(chunk).tolist():
            if c not in self._store:
                lo, hi = np.searchsorted(
                    self.eligible, [c * self.chunk_images, (c + 1) * self.chunk_images]
                )
                self._store[c] = self._load(self.eligible[lo:hi])
            self._store.move_to_end(c)
            mine = idx[chunk == c]
            parts[c] = _as_block(self._store[c].get(mine), mine, self.device)
            while len(self._store) > self.store_chunks:
                self._store.popitem(last=False)
        return _gather(parts, chunk, idx)

    def close(self) -> None:
        """Stop the read-ahead thread (pending reads are dropped)."""
        self._drop_windows()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _as_block(tokens, images: np.ndarray, device: torch.device) -> InMemoryFeatures:
    """Tokens got for ``images`` (unique or not) as a block addressable by image."""
    uniq, first = np.unique(images, return_index=True)
    r = torch.as_tensor(first, device=device)
    local = [t.index_select(0, r) for t in tokens[0]]
    global_ = [t.index_select(0, r) for t in tokens[1]]
    return InMemoryFeatures(local, global_, uniq, device)


def _gather(parts, key: np.ndarray, idx: np.ndarray):
    """Rows ``idx`` (n,) from ``parts[key[i]]`` (InMemoryFeatures), in ``idx``'s order."""
    keys = np.unique(key)
    if len(keys) == 1:
        return parts[int(keys[0])].get(idx)
    pieces = [(np.flatnonzero(key == k), parts[int(k)].get(idx[key == k])) for k in keys]
    back = np.argsort(np.concatenate([p for p, _ in pieces]), kind="stable")
    out = []
    for part in (0, 1):  # local, then global
        layers = []
        for li in range(len(pieces[0][1][part])):
            cat = torch.cat([got[part][li] for _, got in pieces])
            layers.append(cat[torch.as_tensor(back, device=cat.device)])
        out.append(layers)
    return out[0], out[1]


class RowMappedFeatures:
    """Response rows → image rows: for datasets where an image has several responses.

    Parameters
    ----------
    inner : FeatureSource
        Tokens indexed by image (cache row).
    image_index : array of shape (N,)
        The image of each response row.
    """

    def __init__(self, inner: Any, image_index: np.ndarray) -> None:
        self.inner = inner
        self.image_index = np.asarray(image_index, np.int64)
        self.widths, self.grid = inner.widths, inner.grid

    def get(self, indices: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tokens of response rows ``indices`` (n,)."""
        return self.inner.get(self.image_index[np.asarray(indices, np.int64)])

    def epoch_order(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The inner source's order of rows ``indices`` (by their images), or a
        permutation when it has none (in memory: every order reads alike)."""
        idx = np.asarray(indices, np.int64)
        inner = getattr(self.inner, "epoch_order", None)
        if inner is None:
            return rng.permutation(idx)
        return inner(idx, rng, images=self.image_index[idx])

    def plan(self, indices: np.ndarray) -> None:
        """Tell the inner source the rows training will ask for, in order."""
        if hasattr(self.inner, "plan"):
            self.inner.plan(self.image_index[np.asarray(indices, np.int64)])

    @property
    def resident(self):
        """The inner source's images held in memory (None when it holds none; a source
        entirely in memory answers itself)."""
        return getattr(self.inner, "resident", self.inner)

    def read_seconds(self, indices: np.ndarray) -> float:
        """The inner source's time to read the images of response rows ``indices``
        (0 for an inner source in memory)."""
        inner = getattr(self.inner, "read_seconds", None)
        if inner is None:
            return 0.0
        return float(inner(self.image_index[np.asarray(indices, np.int64)]))


def feature_source(
    cache: Any,
    indices: np.ndarray,
    device: Any = "cpu",
    memory_limit: int | None = None,
    resident: np.ndarray | None = None,
) -> InMemoryFeatures | StreamedFeatures:
    """Load ``indices`` of ``cache`` onto ``device`` when they fit, else stream.

    Parameters
    ----------
    cache : FeatureCache
    indices : array of shape (n,)
        Images that training and evaluation will ask for.
    device : torch.device or str
    memory_limit : int, optional
        Bytes the features may occupy on the device (float16). Default: 40 % of the
        free CUDA memory on CUDA, 25 % of the machine's RAM otherwise.
    resident : array, optional
        When streaming: images to hold in memory if they fit (the validation split's);
        see :class:`StreamedFeatures`.
    """
    dev = torch.device(device)
    need = cache.nbytes(indices) // 2  # stored as float16 on the device
    if memory_limit is None:
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            memory_limit = int(0.4 * free)
        else:
            memory_limit = int(0.25 * _total_ram())
    if need <= memory_limit:
        idx = np.unique(np.asarray(indices, np.int64))
        local, global_ = cache.read(idx, dtype=np.float16)
        return InMemoryFeatures(local, global_, image_index=idx, device=dev)
    return StreamedFeatures(
        cache, dev, indices=indices, memory_limit=memory_limit, resident=resident
    )


def _total_ram() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30
