"""The feature cache on disk: its zarr arrays and attributes, and checks of their layout.

Layout
------
A cache is a directory holding one zarr group (zarr format 3 when written with
zarr 3, format 2 with zarr 2; zarr 3 reads both):

``local/<l>``
    float16 ``(N, C_l, h, w)``, the local tokens of layer ``l`` (``l`` is the layer's
    0-based position in ``layer_names``, so any layer name is allowed);
``global/<l>``
    float16 ``(N, C_l)``, the global token of layer ``l``;
``written``
    bool ``(N,)``, which images are complete (all layers written);
``image_digest``
    uint8 ``(N, 32)``, the sha256 of the decoded image each row was computed from
    (:func:`image_digest`; all zeros: not recorded);
``row_digest``
    uint8 ``(N, 32)``, sha256 of the row's image digest and its float16 features of
    every layer (local, then global), written with the row: :meth:`FeatureCache.verify`
    recomputes it to find corrupted chunks;
attributes
    ``format`` (``"factortopy-cache"``), ``version`` (:data:`CACHE_VERSION`),
    ``backbone``, ``layer_names``, ``widths`` (the ``C_l``), ``grid`` (``[h, w]``),
    ``image_ids`` (N str), ``preprocessing`` (dict), ``weights`` (the identity of the
    network weights, see below, or ``null`` until the first extraction records it),
    ``n_images``, ``chunk_images``, ``created`` (ISO 8601 time, UTC) and
    ``identity_digest`` (sha256 of all the others but ``created``: an edited or
    damaged attribute file is refused).

Every array is chunked along the image axis only, with the same chunk size
``chunk_images`` (default 64), and stored uncompressed (float16 activations shrink
by < 10 % under zstd, and reading is about 4× faster without it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "CacheError"]

#: Value of the ``format`` attribute of every cache.
CACHE_FORMAT: str = "factortopy-cache"
#: The newest cache layout version this code writes and reads.
CACHE_VERSION: int = 2

_ZARR_MAJOR = int(zarr.__version__.split(".")[0])
_DIGEST_BYTES = 32


class CacheError(ValueError):
    """A feature cache is missing, foreign, damaged, incompatible or misused."""


def _create_array(
    group: Any, name: str, *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str
) -> Any:
    """Create an uncompressed array, zero/False-filled, with zarr 3 or zarr 2."""
    if _ZARR_MAJOR >= 3:
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, compressors=None
        )
    return group.create_dataset(  # pragma: no cover - zarr 2
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, compressor=None
    )


def _is_zarr_group_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


def _full_chunks(arr: Any) -> Any:
    """The array, set to store chunks even when they hold only zeros.

    zarr skips all-fill chunks by default; a missing chunk file must mean damage.
    """
    if _ZARR_MAJOR >= 3:
        return arr.with_config({"write_empty_chunks": True})
    return arr  # pragma: no cover - zarr 2 writes empty chunks by default


def _validate_arrays(path: Path, group: Any, attrs: dict[str, Any]) -> None:
    where = f"feature cache {path}"
    n = attrs["n_images"]
    h, w = attrs["grid"]
    expected: list[tuple[str, tuple[int, ...], str]] = [("written", (n,), "bool")]
    for i, c in enumerate(attrs["widths"]):
        expected.append((f"local/{i}", (n, c, h, w), "float16"))
        expected.append((f"global/{i}", (n, c), "float16"))
    if attrs["version"] >= 2:
        expected.append(("image_digest", (n, _DIGEST_BYTES), "uint8"))
        expected.append(("row_digest", (n, _DIGEST_BYTES), "uint8"))
    for sub in ("local", "global"):
        try:
            node = group[sub]
        except KeyError:
            raise CacheError(f"{where}: damaged cache: group {sub!r} is missing") from None
        except Exception as exc:
            raise CacheError(
                f"{where}: damaged cache: the metadata of group {sub!r} ({path / sub}) cannot "
                f"be read: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(node, zarr.Group):
            raise CacheError(f"{where}: damaged cache: {sub!r} is not a group")
    chunk = None
    for name, shape, dtype in expected:
        try:
            arr = group[name]
            found_shape = tuple(arr.shape)
            found_dtype = np.dtype(arr.dtype)
            found_chunk = int(arr.chunks[0])
        except KeyError:
            raise CacheError(f"{where}: damaged cache: array {name!r} is missing") from None
        except Exception as exc:
            raise CacheError(
                f"{where}: damaged cache: the metadata of array {name!r} ({path / name}) "
                f"cannot be read: {type(exc).__name__}: {exc}"
            ) from None
        _check_layout(where, name, arr)
        if found_shape != shape:
            raise CacheError(
                f"{where}: damaged cache: array {name!r} has shape {found_shape}, but the "
                f"attributes (n_images, widths, grid) say {shape}"
            )
        if found_dtype != np.dtype(dtype):
            raise CacheError(
                f"{where}: damaged cache: array {name!r} has dtype {found_dtype}, expected {dtype}"
            )
        if chunk is None:
            chunk = found_chunk
        elif found_chunk != chunk:
            raise CacheError(
                f"{where}: damaged cache: array {name!r} is chunked by {found_chunk} images, "
                f"'written' by {chunk}; all arrays must share one chunk size"
            )
        if name != "written" and tuple(arr.chunks[1:]) != shape[1:]:
            raise CacheError(
                f"{where}: damaged cache: array {name!r} has chunks {tuple(arr.chunks)}, "
                f"expected whole rows {(chunk, *shape[1:])}"
            )
    if attrs.get("chunk_images", chunk) != chunk:
        raise CacheError(
            f"{where}: damaged cache: attribute chunk_images is {attrs['chunk_images']!r} but "
            f"the arrays are chunked by {chunk} images"
        )


def _check_layout(where: str, name: str, arr: Any) -> None:
    """Refuse array metadata that would change how the bytes are read."""
    if _ZARR_MAJOR < 3:  # pragma: no cover - zarr 2
        return
    meta = arr.metadata
    try:
        codecs = [c.to_dict() for c in meta.codecs]
        fill = float(np.asarray(meta.fill_value, dtype=np.float64))
        encoding = meta.chunk_key_encoding.to_dict()
    except Exception as exc:  # pragma: no cover - defensive
        raise CacheError(f"{where}: damaged cache: array {name!r}: {exc}") from None
    endian = {"name": "bytes", "configuration": {"endian": "little"}}
    single = len(codecs) == 1 and codecs[0]["name"] == "bytes"
    if not single or (np.dtype(arr.dtype).itemsize > 1 and codecs[0] != endian):
        raise CacheError(
            f"{where}: damaged cache: array {name!r} is encoded with {codecs}, expected "
            "plain little-endian bytes"
        )
    if fill != 0 or encoding != {"name": "default", "configuration": {"separator": "/"}}:
        raise CacheError(
            f"{where}: damaged cache: array {name!r} has fill value {fill} and chunk keys "
            f"{encoding}, expected 0 and the default '/' keys"
        )
    if len(meta.storage_transformers):
        raise CacheError(f"{where}: damaged cache: array {name!r} has storage transformers")
