"""Feature extraction: images → backbone tokens → the zarr feature cache.

:func:`extract_features` is a generator of progress records, so the CLI, the napari
widget and the tests drive the same code. It only computes the images the cache
does not have yet: a killed run, rerun, finishes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .backbones import Backbone, resize_tokens
from .cache import FeatureCache

__all__ = ["extract_features"]


def extract_features(
    backbone: Backbone,
    load_images: Callable[[np.ndarray], Sequence[Any]],
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    device: str | None = "auto",
    autocast: bool = True,
) -> Iterator[dict]:
    """Fill the missing images of ``cache`` with ``backbone``'s tokens.

    Parameters
    ----------
    backbone : Backbone
        The network; its layers and widths must match the cache.
    load_images : callable
        ``load_images(indices (n,) int) -> sequence of n images`` (PIL or uint8
        (H, W, 3) arrays), in cache order.
    cache : FeatureCache
        Opened for writing. Images already written are skipped.
    batch_size : int
        Images per forward pass. Batches are aligned to the cache's chunks.
    device : str
        ``"auto"`` (CUDA > MPS > CPU) or a torch device name.
    autocast : bool
        bf16 autocast on CUDA.

    Yields
    ------
    dict
        ``{"stage": "extract", "done": int, "total": int, "elapsed": float,
        "eta": float, "images_per_s": float}`` after each batch.
    """
    import torch

    from ..core.runtime import resolve_device

    cache.check_compatible(
        layer_names=backbone.layer_names,
        widths=backbone.widths,
        backbone=backbone.name,
        source=f"backbone {backbone.name}",
    )
    dev = resolve_device(device)
    backbone.to(dev)
    todo = cache.missing()
    total = len(todo)
    t0 = time.perf_counter()
    done = 0
    use_amp = autocast and dev.type == "cuda"
    for start, stop in _aligned_runs(todo, batch_size, cache.chunk_images):
        idx = np.arange(start, stop)
        x = backbone.preprocessing(load_images(idx)).to(dev)
        with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
            local, global_ = backbone(x)
            local = resize_tokens(local, cache.grid)
        cache.write(
            start,
            [t.float().cpu().numpy() for t in local],
            [t.float().cpu().numpy() for t in global_],
        )
        done += len(idx)
        elapsed = time.perf_counter() - t0
        rate = done / max(elapsed, 1e-9)
        yield {
            "stage": "extract",
            "done": done,
            "total": total,
            "elapsed": elapsed,
            "eta": (total - done) / max(rate, 1e-9),
            "images_per_s": rate,
        }


def _aligned_runs(todo: np.ndarray, batch: int, chunk: int) -> Iterator[tuple[int, int]]:
    """Split sorted missing indices into contiguous runs of at most ``batch`` images,
    never crossing a chunk boundary needlessly (boundaries every ``chunk`` images)."""
    if len(todo) == 0:
        return
    todo = np.sort(todo)
    breaks = np.flatnonzero(np.diff(todo) != 1) + 1
    for run in np.split(todo, breaks):
        pos, end = int(run[0]), int(run[-1]) + 1
        while pos < end:
            nxt = min(end, pos + batch)
            boundary = (pos // chunk + 1) * chunk
            if boundary < nxt and boundary - pos >= batch // 2:
                nxt = boundary
            yield pos, nxt
            pos = nxt
