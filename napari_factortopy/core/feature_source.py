"""Feature sources for training and prediction: in device memory, or streamed.

A feature source hands out the tokens of any set of images as torch tensors on the
training device: :class:`InMemoryFeatures` holds them (float16) on the device;
:class:`StreamedFeatures` reads them from a feature cache at every request.
:func:`feature_source` picks one by a memory limit.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Tokens read from a :class:`~napari_factortopy.data.cache.FeatureCache` per request.

    Parameters
    ----------
    cache : FeatureCache
    device : torch.device or str
    """

    def __init__(self, cache: Any, device: Any = "cpu") -> None:
        self.cache = cache
        self.device = torch.device(device)
        self.widths = tuple(int(c) for c in cache.widths)
        self.grid = tuple(int(g) for g in cache.grid)

    def get(self, indices: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        local, global_ = self.cache.read(np.asarray(indices, np.int64))
        return (
            [torch.from_numpy(a).to(self.device) for a in local],
            [torch.from_numpy(a).to(self.device) for a in global_],
        )


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


def feature_source(
    cache: Any, indices: np.ndarray, device: Any = "cpu", memory_limit: int | None = None
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
    return StreamedFeatures(cache, device=dev)


def _total_ram() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30
