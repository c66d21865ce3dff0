"""Extraction's checks before and while it writes, and its errors.

Nothing silent: :func:`~napari_factortopy.data.extract.extract_features` first checks
that the cache was made with this backbone's weights (:func:`weights_identity`,
recorded by the first extraction), that a sample of already written rows still comes
from the same image content (:func:`check_images`; every image decoded on the way is
compared with its row's digest too, :func:`_compare_digest`) and that the disk can
hold the missing images (:func:`disk_space`, :func:`size_text` for messages). All
are importable from :mod:`napari_factortopy.data.extract` as well.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backbones import Backbone
from .cache import FeatureCache, image_digest

__all__ = [
    "CacheMismatchError",
    "ExtractionError",
    "check_images",
    "disk_space",
    "size_text",
    "weights_identity",
]


class ExtractionError(RuntimeError):
    """Extraction stopped: an undecodable image, a full disk, a bad range."""


class CacheMismatchError(ExtractionError, ValueError):
    """Refused before computing: the cache holds rows of other weights, preprocessing
    or images than this run would write (bad input, not a failure at run time)."""


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
