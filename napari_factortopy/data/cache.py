"""The on-disk feature cache: backbone tokens of N images for L layers, in zarr.

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

Identity: what made the rows
----------------------------
A cache holds the features of one backbone (``backbone``, ``layer_names``,
``widths``), with one preprocessing and one set of weights, on one grid, of the
images named by ``image_ids``, whose content digests are kept per row. ``weights`` is
``{"kind": "pretrained" | "random" | "module", "sha256": <hex of the state_dict
tensors>, "source": {...}}`` (:func:`napari_factortopy.data.extract.weights_identity`).
Resuming with anything else is refused with a message naming the cache, what it
holds and what was asked (:meth:`FeatureCache.open_or_create`,
:func:`~napari_factortopy.data.extract.extract_features`). Caches of version 1 (before
identities were recorded) are read as before, but extraction refuses to extend them.

Damage
------
:meth:`FeatureCache.open` checks, cheaply (one ``stat`` per chunk), that every chunk
holding written rows exists with its exact size and that every written row has a
digest. Opened read-only, a damaged cache is refused naming the array, the chunk file
and the rows; opened ``"r+"`` (to extract), the damaged rows count as missing, so
extraction recomputes them. :meth:`FeatureCache.verify` reads everything and compares
each row with its digest (bit flips of the same size); ``repair=True`` marks the rows
it finds unwritten, for the next extraction to recompute.

Claims
------
:meth:`FeatureCache.claim` records, in ``<cache>/.claims/``, which image range a
process is extracting (its host and pid, refreshed after every batch). A second
extraction of an overlapping range is refused while the claim lives; a claim whose
process is gone (same host) or that was not refreshed for 15 minutes is stale and
taken over.

Every array is chunked along the image axis only, with the same chunk size
``chunk_images`` (default 64), and stored uncompressed (float16 activations shrink
by < 10 % under zstd, and reading is about 4× faster without it).

Crash safety and concurrent writers
-----------------------------------
zarr's directory stores write each chunk to a temporary file and rename it into
place, so a chunk file always holds either its old or its new content.
:meth:`FeatureCache.write` marks images in ``written`` only after the data of all
layers is stored: a writer killed mid-way leaves those images unwritten (and the
images written before intact), and resuming rewrites them.

Updating part of a chunk reads, modifies and rewrites the whole chunk. One process
may therefore write any ranges in any order, but **several processes writing at the
same time must own disjoint ranges whose boundaries fall on chunk boundaries**
(multiples of :attr:`FeatureCache.chunk_images`, the last range may end at N), and
each of their writes must cover whole chunks. ``written`` is chunked like the data,
so such writers never touch the same ``written`` chunk either. Pass
``concurrent=True`` to :meth:`FeatureCache.write` to have that alignment checked.
Creation is atomic too: the group is built in a temporary sibling directory and
renamed into place, so two processes racing in :meth:`FeatureCache.open_or_create`
end up sharing one cache.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_factortopy.core.atomic import remove_stale_temporaries, temporary_name
from napari_factortopy.core.host import HOST_ID, process_alive
from napari_factortopy.core.modelfile import ModelFileError, to_jsonable

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CacheError",
    "CacheReport",
    "FeatureCache",
    "image_digest",
]

#: Value of the ``format`` attribute of every cache.
CACHE_FORMAT: str = "factortopy-cache"
#: The newest cache layout version this code writes and reads.
CACHE_VERSION: int = 2
#: Seconds after which a claim that was not refreshed is stale.
CLAIM_STALE_SECONDS: float = 15 * 60

_ZARR_MAJOR = int(zarr.__version__.split(".")[0])
_IDENTITY_FIELDS = ("backbone", "layer_names", "widths", "grid", "image_ids", "preprocessing")
_DIGEST_BYTES = 32


class CacheError(ValueError):
    """A feature cache is missing, foreign, damaged, incompatible or misused."""


@dataclass
class CacheReport:
    """What :meth:`FeatureCache.verify` found.

    Attributes
    ----------
    path : pathlib.Path
        The cache.
    n_images, n_written : int
        Rows in the cache, rows marked written.
    n_checked : int
        Written rows whose features were read and compared with their digests.
    damaged : dict of int → str
        Row → what is wrong with it (missing or short chunk, digest mismatch,
        non-finite values, image content changed).
    repaired : bool
        Whether the damaged rows were marked unwritten.
    """

    path: Path
    n_images: int
    n_written: int
    n_checked: int = 0
    damaged: dict[int, str] = dataclasses.field(default_factory=dict)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """No damaged rows."""
        return not self.damaged

    def summary(self) -> str:
        """A few lines: counts, then the first damaged rows and why."""
        head = (
            f"feature cache {self.path}: {self.n_written}/{self.n_images} rows written, "
            f"{self.n_checked} checked, {len(self.damaged)} damaged"
        )
        lines = [head]
        for row, why in list(self.damaged.items())[:10]:
            lines.append(f"  row {row}: {why}")
        if len(self.damaged) > 10:
            lines.append(f"  ... and {len(self.damaged) - 10} more")
        if self.damaged:
            lines.append(
                "  marked unwritten: rerun `factortopy extract` to recompute them"
                if self.repaired
                else "  rerun with --repair (or `factortopy extract ... --verify`) to mark "
                "them unwritten, then extract recomputes them"
            )
        return "\n".join(lines)


def image_digest(image: Any) -> np.ndarray:
    """sha256 of one decoded image, as a dataset loader yields it.

    Parameters
    ----------
    image : PIL image or array
        Usually uint8 ``(H, W, 3)``. PIL images are converted to arrays as they are
        (mode kept), so the digest depends on the pixels, not on the file encoding.

    Returns
    -------
    numpy.ndarray
        uint8 ``(32,)``: sha256 of the dtype, shape and bytes.
    """
    arr = np.ascontiguousarray(np.asarray(image))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
    return np.frombuffer(h.digest(), np.uint8).copy()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _identity_digest(attrs: Mapping[str, Any]) -> str:
    keys = ("format", "version", *_IDENTITY_FIELDS, "weights", "n_images", "chunk_images")
    return hashlib.sha256(_canonical({k: attrs.get(k) for k in keys})).hexdigest()


def _row_digests(image_digests: np.ndarray, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Row digests ``(B, 32)`` of image digests ``(B, 32)`` and per-layer float16 rows."""
    out = np.empty((len(image_digests), _DIGEST_BYTES), np.uint8)
    flat = [np.ascontiguousarray(a).reshape(len(a), -1) for a in arrays]
    for i in range(len(image_digests)):
        h = hashlib.sha256(image_digests[i].tobytes())
        for a in flat:
            h.update(a[i].view(np.uint8).data)
        out[i] = np.frombuffer(h.digest(), np.uint8)
    return out


def _describe_weights(w: Any) -> str:
    if not isinstance(w, Mapping):
        return "weights not recorded"
    src = w.get("source") or {}
    where = src.get("weights") if isinstance(src, Mapping) else None
    kind = w.get("kind", "?")
    extra = f" ({where})" if where and where not in (kind, "None", "random") else ""
    return f"{kind} weights{extra}, sha256 {str(w.get('sha256', '?'))[:12]}…"


# ------------------------------------------------------------------- helpers


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


def _to_numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def _short(value: Any, limit: int = 6) -> str:
    """Repr of a value, lists longer than ``limit`` abbreviated."""
    if isinstance(value, (list, tuple)) and len(value) > limit:
        head = ", ".join(repr(v) for v in value[:limit])
        return f"[{head}, ...] ({len(value)} items)"
    return repr(value)


def _describe_difference(expected: Any, found: Any) -> str:
    if (
        isinstance(expected, list)
        and isinstance(found, list)
        and (len(expected) > 6 or len(found) > 6)
    ):
        if len(expected) != len(found):
            return (
                f"expected {len(expected)} items {_short(expected)}, "
                f"found {len(found)} items {_short(found)}"
            )
        i = next(i for i, (a, b) in enumerate(zip(expected, found, strict=True)) if a != b)
        return (
            f"{len(expected)} items each, first difference at index {i}: "
            f"expected {expected[i]!r}, found {found[i]!r}"
        )
    return f"expected {expected!r}, found {found!r}"


def _norm_identity(
    path: Path,
    *,
    backbone: Any,
    layer_names: Any,
    widths: Any,
    grid: Any,
    image_ids: Any,
    preprocessing: Any,
    strict: bool = False,
) -> dict[str, Any]:
    """Validate and normalise the identifying metadata of a cache (JSON-able).

    ``strict`` (stored attributes): widths and grid must be ints and image ids str
    already; nothing is converted.
    """
    where = f"feature cache {path}"
    if strict:
        is_int = [isinstance(x, int) and not isinstance(x, bool) for x in (*widths, *grid)] if (
            isinstance(widths, list) and isinstance(grid, list)
        ) else [False]  # fmt: skip
        if not all(is_int):
            raise CacheError(
                f"{where}: widths and grid must be lists of ints, found widths={widths!r}, "
                f"grid={grid!r}"
            )
        if not isinstance(image_ids, list) or not all(isinstance(i, str) for i in image_ids):
            raise CacheError(
                f"{where}: image_ids must be a list of str, found {_short(image_ids)}"
            )
    if not isinstance(backbone, str) or not backbone:
        raise CacheError(f"{where}: backbone must be a non-empty str, found {backbone!r}")
    if isinstance(layer_names, str) or not isinstance(layer_names, Sequence):
        raise CacheError(f"{where}: layer_names must be a list of str, found {layer_names!r}")
    names = list(layer_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise CacheError(f"{where}: layer_names must be non-empty strs, found {names!r}")
    if len(set(names)) != len(names):
        raise CacheError(f"{where}: layer_names must be unique, found {names!r}")
    try:
        widths_list = [int(c) for c in widths]
        grid_list = [int(g) for g in grid]
    except (TypeError, ValueError):
        raise CacheError(
            f"{where}: widths and grid must be integers, found widths={widths!r}, grid={grid!r}"
        ) from None
    if len(widths_list) != len(names) or min(widths_list) < 1:
        raise CacheError(
            f"{where}: widths must be {len(names)} positive ints (one per layer), "
            f"found {widths_list!r}"
        )
    if len(grid_list) != 2 or min(grid_list) < 1:
        raise CacheError(f"{where}: grid must be [h, w], two positive ints, found {grid!r}")
    if isinstance(image_ids, str) or not isinstance(image_ids, Sequence | np.ndarray):
        raise CacheError(f"{where}: image_ids must be a list of str, found {image_ids!r}")
    ids = [str(i) for i in image_ids]
    if not ids:
        raise CacheError(f"{where}: image_ids is empty; a cache holds at least one image")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise CacheError(f"{where}: image_ids must be unique; {dup!r} appears twice or more")
    if preprocessing is None:
        preprocessing = {}
    if not isinstance(preprocessing, Mapping):
        raise CacheError(f"{where}: preprocessing must be a dict, found {preprocessing!r}")
    try:
        prep = to_jsonable(preprocessing, where="preprocessing")
    except ModelFileError as exc:
        raise CacheError(f"{where}: {exc}") from None
    return {
        "backbone": backbone,
        "layer_names": names,
        "widths": widths_list,
        "grid": grid_list,
        "image_ids": ids,
        "preprocessing": json.loads(json.dumps(prep)),
    }


# ---------------------------------------------------------------------- cache


class FeatureCache:
    """A zarr feature cache of local and global tokens (see the module docstring).

    Create one with :meth:`create` or :meth:`open_or_create`, open an existing one with
    :meth:`open`; the constructor is internal.

    Attributes
    ----------
    path : pathlib.Path
        The cache directory.
    mode : str
        ``"r"`` (read only) or ``"r+"`` (read and write).
    """

    def __init__(self, path: Path, group: Any, attrs: dict[str, Any], mode: str) -> None:
        self._path = path
        self._group = group
        self._attrs = attrs
        self._mode = mode
        n_layers = len(attrs["layer_names"])
        self._local = [_full_chunks(group[f"local/{i}"]) for i in range(n_layers)]
        self._global = [_full_chunks(group[f"global/{i}"]) for i in range(n_layers)]
        self._written = group["written"]
        self._version = int(attrs["version"])
        if self._version >= 2:
            self._image_digest = _full_chunks(group["image_digest"])
            self._row_digest = _full_chunks(group["row_digest"])
        #: row → why it is damaged (found on open; rewriting the row clears it)
        self._damaged: dict[int, str] = {}

    # ------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        backbone: str,
        layer_names: Sequence[str],
        widths: Sequence[int],
        grid: Sequence[int],
        image_ids: Sequence[Any],
        preprocessing: Mapping[str, Any] | None = None,
        chunk_images: int = 64,
        overwrite: bool = False,
        weights: Mapping[str, Any] | None = None,
    ) -> FeatureCache:
        """Create an empty cache (nothing written yet) and open it for writing.

        Parameters
        ----------
        path : str or PathLike
            The cache directory to create. Its parent must exist.
        backbone : str
            Name of the backbone the features come from.
        layer_names : sequence of str
            The L layer names, unique.
        widths : sequence of int
            The L channel counts ``C_l``.
        grid : sequence of int
            ``(h, w)``, the local-token grid.
        image_ids : sequence
            The N image ids (converted with ``str``), unique; row i of every array
            belongs to ``image_ids[i]``.
        preprocessing : Mapping, optional
            JSON-able description of how images were prepared (resize, normalisation…).
        chunk_images : int
            Images per chunk (default 64; at most N is used).
        overwrite : bool
            Replace an existing cache at ``path``. A directory that is not a
            feature cache is never deleted.
        weights : Mapping, optional
            Identity of the network weights
            (:func:`~napari_factortopy.data.extract.weights_identity`); ``None``: the
            first extraction records it.

        Returns
        -------
        FeatureCache
            The new cache, mode ``"r+"``.

        Raises
        ------
        CacheError
            If the metadata is invalid, ``path`` exists (and ``overwrite`` is false or
            it is not a cache), its parent folder is missing or not writable.
        """
        path = Path(path)
        weights = _norm_weights(path, weights)
        identity = _norm_identity(
            path,
            backbone=backbone,
            layer_names=layer_names,
            widths=widths,
            grid=grid,
            image_ids=image_ids,
            preprocessing=preprocessing,
        )
        _check_chunk(path, chunk_images)
        if path.exists() and not _is_empty_dir(path):
            if not overwrite:
                raise CacheError(
                    f"feature cache {path}: already exists; pass overwrite=True to replace "
                    "it, or use FeatureCache.open_or_create to resume it"
                )
            _refuse_unless_cache(path)
        tmp = _build(path, {**identity, "weights": weights}, chunk_images)
        if overwrite and path.exists() and not _is_empty_dir(path):
            trash = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                # Typically: another process created it meanwhile (ENOTEMPTY / EEXIST).
                shutil.rmtree(tmp, ignore_errors=True)
                raise CacheError(
                    f"feature cache {path}: already exists (created by another process "
                    f"meanwhile?): {exc}"
                ) from exc
        return cls.open(path, mode="r+")

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        *,
        backbone: str,
        layer_names: Sequence[str],
        widths: Sequence[int],
        grid: Sequence[int],
        image_ids: Sequence[Any],
        preprocessing: Mapping[str, Any] | None = None,
        chunk_images: int = 64,
        weights: Mapping[str, Any] | None = None,
    ) -> FeatureCache:
        """Open an existing cache with this exact metadata for resuming, or create it.

        Parameters
        ----------
        path, backbone, layer_names, widths, grid, image_ids, preprocessing, chunk_images
            As in :meth:`create`. For an existing cache, ``chunk_images`` is ignored
            (the cache keeps its own chunking).
        weights : Mapping, optional
            As in :meth:`create`; compared with an existing cache's (see
            :meth:`check_weights`).

        Returns
        -------
        FeatureCache
            Opened with mode ``"r+"``; :meth:`missing` tells which images remain.

        Raises
        ------
        CacheError
            If an existing cache differs in backbone, layer_names, widths, grid,
            image_ids, preprocessing or weights (the message names the first differing
            field, what the cache holds and what was asked), or ``path`` is something
            else.
        """
        path = Path(path)
        kwargs = {
            "backbone": backbone,
            "layer_names": layer_names,
            "widths": widths,
            "grid": grid,
            "image_ids": image_ids,
            "preprocessing": preprocessing,
        }
        identity = _norm_identity(path, **kwargs)
        if not path.exists() or _is_empty_dir(path):
            try:
                return cls.create(path, chunk_images=chunk_images, weights=weights, **kwargs)
            except CacheError:
                if not _is_zarr_group_dir(path):  # not a lost creation race: a real error
                    raise
        cache = cls.open(path, mode="r+")
        for field in _IDENTITY_FIELDS:
            found = cache._attrs[field]
            if found != identity[field]:
                raise CacheError(
                    f"feature cache {path}: exists with a different {field}: "
                    f"{_describe_difference(identity[field], found)} (delete it, choose "
                    "another path, or create it with overwrite=True)"
                )
        if weights is not None:
            cache.check_weights(weights, writing=False)  # extraction adopts it if needed
        return cache

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], mode: str = "r", *, allow_damaged: bool = False
    ) -> FeatureCache:
        """Open an existing cache and validate its layout.

        Parameters
        ----------
        path : str or PathLike
            The cache directory.
        mode : {"r", "r+"}
            Read only, or read and write.
        allow_damaged : bool
            Open a read-only cache with missing or short chunk files anyway (to
            :meth:`verify` it); their rows count as not written. In mode ``"r+"``
            this is always so (extraction recomputes them).

        Returns
        -------
        FeatureCache

        Raises
        ------
        CacheError
            If ``path`` is missing or not a feature cache, was written by a newer
            version, its attributes or arrays are damaged or disagree, written rows lie
            in missing or short chunk files (mode ``"r"``), or it is not writable
            (mode ``"r+"``).
        """
        path = Path(path)
        if mode not in ("r", "r+"):
            raise CacheError(f"feature cache {path}: mode must be 'r' or 'r+', found {mode!r}")
        if not path.exists():
            raise CacheError(f"feature cache {path}: no such directory")
        if not _is_zarr_group_dir(path):
            hint = ""
            if _ZARR_MAJOR < 3 and (path / "zarr.json").exists():  # pragma: no cover
                hint = " (it is zarr format 3: upgrade to zarr >= 3 to read it)"
            raise CacheError(
                f"feature cache {path}: not a feature cache (expected a zarr group "
                f"directory){hint}"
            )
        try:
            group = zarr.open_group(str(path), mode=mode)
            attrs = dict(group.attrs)
        except Exception as exc:
            raise CacheError(f"feature cache {path}: cannot open the zarr group: {exc}") from exc
        attrs = _validate_attrs(path, attrs)
        _validate_arrays(path, group, attrs)
        cache = cls(path, group, attrs, mode)
        cache._damaged = cache._check_chunks()
        if cache._damaged and mode == "r" and not allow_damaged:
            rows = sorted(cache._damaged)
            raise CacheError(
                f"feature cache {path}: damaged: {len(rows)} written rows cannot be read "
                f"(row {rows[0]}: {cache._damaged[rows[0]]}); rerun `factortopy extract` "
                "with the same arguments to recompute them"
            )
        if mode == "r+":
            _probe_writable(path)
        return cache

    # ---------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        """The cache directory."""
        return self._path

    @property
    def mode(self) -> str:
        """``"r"`` or ``"r+"``."""
        return self._mode

    @property
    def backbone(self) -> str:
        """Name of the backbone."""
        return self._attrs["backbone"]

    @property
    def layer_names(self) -> list[str]:
        """The L layer names."""
        return list(self._attrs["layer_names"])

    @property
    def widths(self) -> list[int]:
        """The L channel counts ``C_l``."""
        return list(self._attrs["widths"])

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)``, the local-token grid."""
        h, w = self._attrs["grid"]
        return (h, w)

    @property
    def image_ids(self) -> list[str]:
        """The N image ids; row i belongs to ``image_ids[i]``."""
        return list(self._attrs["image_ids"])

    @property
    def n_images(self) -> int:
        """N."""
        return int(self._attrs["n_images"])

    @property
    def n_layers(self) -> int:
        """L."""
        return len(self._attrs["layer_names"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing description (a copy)."""
        return copy.deepcopy(self._attrs["preprocessing"])

    @property
    def created(self) -> str:
        """Creation time, ISO 8601 (UTC)."""
        return str(self._attrs.get("created", ""))

    @property
    def chunk_images(self) -> int:
        """Images per chunk: the alignment unit for concurrent writers."""
        return int(self._written.chunks[0])

    @property
    def written(self) -> np.ndarray:
        """bool ``(N,)``: which images are complete, read afresh from disk (rows found
        damaged on open count as not written)."""
        flags = np.asarray(self._written[:], dtype=bool)
        if self._damaged:
            flags[list(self._damaged)] = False
        return flags

    @property
    def damaged(self) -> dict[int, str]:
        """Row → why: written rows whose chunks were missing or short on open (mode
        ``"r+"``; read-only opening refuses such a cache). They count as missing."""
        return dict(self._damaged)

    @property
    def version(self) -> int:
        """The cache layout version (1: no digests and no weights identity)."""
        return self._version

    @property
    def weights(self) -> dict[str, Any] | None:
        """Identity of the weights the rows were computed with (``None``: not recorded)."""
        w = self._attrs.get("weights")
        return copy.deepcopy(w) if w is not None else None

    def image_digests(self, indices: Any = None) -> np.ndarray:
        """Stored image digests, uint8 ``(n, 32)`` (all zeros: not recorded)."""
        idx = np.arange(self.n_images) if indices is None else np.asarray(indices, np.int64)
        if self._version < 2:
            return np.zeros((len(idx), _DIGEST_BYTES), np.uint8)
        return np.asarray(self._image_digest.get_orthogonal_selection((idx, slice(None))))

    @property
    def complete(self) -> bool:
        """Whether every image is written."""
        return bool(self.written.all())

    def missing(self) -> np.ndarray:
        """Indices of the images not written yet.

        Returns
        -------
        numpy.ndarray
            int64 ``(m,)``, ascending.
        """
        return np.flatnonzero(~self.written).astype(np.int64)

    def __repr__(self) -> str:
        n_written = int(self.written.sum())
        return (
            f"FeatureCache({str(self._path)!r}, backbone={self.backbone!r}, "
            f"layers={self.n_layers}, grid={self.grid}, images={n_written}/{self.n_images} "
            f"written, mode={self._mode!r})"
        )

    # ---------------------------------------------------------- write/read

    def write(
        self,
        start: int,
        local: Sequence[Any],
        global_: Sequence[Any],
        *,
        concurrent: bool = False,
        image_digests: Any = None,
    ) -> None:
        """Store the features of images ``start .. start + B - 1`` and mark them written.

        Parameters
        ----------
        start : int
            Index of the first image.
        local : sequence of L arrays
            Layer l: ``(B, C_l, h, w)``, float (numpy or torch); stored as float16.
        global_ : sequence of L arrays
            Layer l: ``(B, C_l)``.
        concurrent : bool
            Declare that other processes may write this cache at the same time: then
            ``start`` must be a multiple of :attr:`chunk_images` and ``start + B`` too
            (or equal N), or a :class:`CacheError` is raised before anything is written.
        image_digests : array of shape (B, 32), uint8, optional
            :func:`image_digest` of each image (default: not recorded, zeros).

        Raises
        ------
        CacheError
            If the cache is read-only, a shape disagrees with the cache (the message
            names the layer, the expected and the found shape), the range falls outside
            ``[0, N)``, values are not finite or overflow float16, or alignment fails.
        """
        where = f"feature cache {self._path}: write(start={start})"
        if self._mode != "r+":
            raise CacheError(f"{where}: the cache is open read-only; open it with mode='r+'")
        n_layers = self.n_layers
        if len(local) != n_layers or len(global_) != n_layers:
            raise CacheError(
                f"{where}: expected {n_layers} local and {n_layers} global arrays (one per "
                f"layer), found {len(local)} and {len(global_)}"
            )
        locs = [_to_numpy(x) for x in local]
        globs = [_to_numpy(x) for x in global_]
        if locs[0].ndim < 1:
            raise CacheError(f"{where}: local[0] is a scalar; expected (B, C, h, w)")
        b = int(locs[0].shape[0])
        h, w = self.grid
        for i, (name, c) in enumerate(zip(self.layer_names, self.widths, strict=True)):
            for kind, arr, exp in (
                ("local", locs[i], (b, c, h, w)),
                ("global_", globs[i], (b, c)),
            ):
                if tuple(arr.shape) != exp:
                    raise CacheError(
                        f"{where}: {kind}[{i}] (layer {name!r}) has shape {tuple(arr.shape)}, "
                        f"expected {exp} (B, C_l{', h, w' if kind == 'local' else ''})"
                    )
        start = int(start)
        stop = start + b
        n = self.n_images
        if start < 0 or stop > n:
            raise CacheError(f"{where}: images {start}..{stop - 1} fall outside 0..{n - 1}")
        if b == 0:
            return
        chunk = self.chunk_images
        if concurrent and (start % chunk or (stop % chunk and stop != n)):
            raise CacheError(
                f"{where}: with concurrent writers, writes must cover whole chunks of "
                f"{chunk} images (start and start + B multiples of {chunk}, or start + B = "
                f"{n}); found images {start}..{stop - 1}"
            )
        arrays16: list[tuple[Any, np.ndarray]] = []
        for i, name in enumerate(self.layer_names):
            for kind, arr, target in (
                ("local", locs[i], self._local[i]),
                ("global_", globs[i], self._global[i]),
            ):
                with np.errstate(over="ignore", invalid="ignore"):
                    x16 = np.asarray(arr, dtype=np.float16)
                if not np.isfinite(x16).all():
                    src = np.asarray(arr, dtype=np.float64)
                    if not np.isfinite(src).all():
                        why = f"{int((~np.isfinite(src)).sum())} non-finite values"
                    else:
                        why = f"values up to {np.abs(src).max():.6g} overflow float16 (max 65504)"
                    raise CacheError(f"{where}: {kind}[{i}] (layer {name!r}) has {why}")
                arrays16.append((target, x16))
        if self._version >= 2:
            if image_digests is None:
                digests = np.zeros((b, _DIGEST_BYTES), np.uint8)
            else:
                digests = np.asarray(image_digests)
                if digests.shape != (b, _DIGEST_BYTES) or digests.dtype != np.uint8:
                    raise CacheError(
                        f"{where}: image_digests must be uint8 ({b}, {_DIGEST_BYTES}), found "
                        f"{digests.dtype} {digests.shape}"
                    )
            ordered = [x for _, x in arrays16]  # layer by layer: local, then global
            arrays16.append((self._image_digest, digests))
            arrays16.append((self._row_digest, _row_digests(digests, ordered)))
        for target, x16 in arrays16:
            target[start:stop] = x16
        # Only now, with the data of every layer stored, are the images complete.
        self._written[start:stop] = np.ones(b, dtype=bool)
        for row in [r for r in self._damaged if start <= r < stop]:
            del self._damaged[row]

    def read(
        self,
        indices: Any = None,
        layers: Sequence[int | str] | None = None,
        dtype: Any = np.float32,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Read the features of some images, loading only the chunks that hold them.

        Parameters
        ----------
        indices : array-like of int, shape (n,), optional
            Image indices in ``[0, N)``, any order, repeats allowed. ``None``: all images.
        layers : sequence of int or str, optional
            Layers by position or name; ``None``: all, in order.
        dtype : numpy dtype
            dtype of the returned arrays (default float32).

        Returns
        -------
        local : list of numpy.ndarray
            One per requested layer: ``(n, C_l, h, w)``, row k for ``indices[k]``.
        global_ : list of numpy.ndarray
            One per requested layer: ``(n, C_l)``.

        Raises
        ------
        CacheError
            If an index is out of range or not written yet (the first few are named),
            or a layer is unknown.
        """
        where = f"feature cache {self._path}"
        n = self.n_images
        layer_idx = self._layer_indices(layers)
        if indices is None:
            idx = np.arange(n)
        else:
            idx = np.asarray(indices)
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise CacheError(
                    f"{where}: indices must be a 1-D integer array, found dtype "
                    f"{idx.dtype} and shape {idx.shape}"
                )
            idx = idx.astype(np.int64)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise CacheError(
                f"{where}: image indices {_short(bad.tolist())} are outside 0..{n - 1}"
            )
        written = self.written
        not_written = np.unique(idx[~written[idx]])
        hurt = [int(i) for i in not_written if int(i) in self._damaged]
        if hurt:
            raise CacheError(
                f"{where}: {len(hurt)} of the requested images are damaged (row {hurt[0]}: "
                f"{self._damaged[hurt[0]]}); rerun `factortopy extract` to recompute them"
            )
        if not_written.size:
            raise CacheError(
                f"{where}: {not_written.size} of the requested images are not written yet "
                f"(indices {_short(not_written.tolist())}); finish the feature "
                "extraction first"
            )
        h, w = self.grid
        if idx.size == 0:
            return (
                [np.zeros((0, self.widths[i], h, w), dtype) for i in layer_idx],
                [np.zeros((0, self.widths[i]), dtype) for i in layer_idx],
            )
        uniq, inverse = np.unique(idx, return_inverse=True)
        contiguous = int(uniq[-1] - uniq[0]) + 1 == uniq.size
        selection: Any = slice(int(uniq[0]), int(uniq[-1]) + 1) if contiguous else uniq
        same_order = uniq.size == idx.size and bool(np.all(inverse == np.arange(idx.size)))

        def _get(arr: Any) -> np.ndarray:
            try:
                if contiguous:
                    data = arr[selection]
                else:
                    data = arr.get_orthogonal_selection((selection,))
            except Exception as exc:  # a chunk damaged since the cache was opened
                raise CacheError(
                    f"{where}: cannot read array {arr.path!r} ({type(exc).__name__}: {exc}); "
                    "run `factortopy cache verify` on it, then `factortopy extract` to "
                    "recompute the damaged rows"
                ) from exc
            data = np.asarray(data)
            if not same_order:
                data = data[inverse]
            return data.astype(dtype, copy=False)

        return [_get(self._local[i]) for i in layer_idx], [
            _get(self._global[i]) for i in layer_idx
        ]

    def _layer_indices(self, layers: Sequence[int | str] | None) -> list[int]:
        if layers is None:
            return list(range(self.n_layers))
        if isinstance(layers, (str, int, np.integer)):
            layers = [layers]
        names = self.layer_names
        out = []
        for layer in layers:
            if isinstance(layer, str) and layer in names:
                out.append(names.index(layer))
            elif isinstance(layer, (int, np.integer)) and 0 <= int(layer) < len(names):
                out.append(int(layer))
            else:
                raise CacheError(
                    f"feature cache {self._path}: unknown layer {layer!r}; the cache has "
                    f"{names!r} (or positions 0..{len(names) - 1})"
                )
        return out

    # ------------------------------------------------------- identity

    def check_weights(self, weights: Mapping[str, Any], *, writing: bool = True) -> None:
        """Refuse to add rows computed with other weights than the cache's.

        Parameters
        ----------
        weights : Mapping
            Identity of the weights about to be used
            (:func:`~napari_factortopy.data.extract.weights_identity`).
        writing : bool
            Rows are about to be written: a cache without a recorded identity then
            adopts ``weights`` if it holds no rows yet (and is refused otherwise), and
            a version-1 cache (no identities at all) is refused. Without writing, only
            a recorded identity that differs is refused.

        Raises
        ------
        CacheError
            Naming the cache, the weights it holds and the weights asked for.
        """
        asked = _norm_weights(self._path, weights)
        held = self._attrs.get("weights")
        fix = "use another --cache, or --overwrite to replace it"
        if self._version < 2:
            if not writing:
                return
            raise CacheError(
                f"feature cache {self._path}: made by an older napari-factortopy (cache "
                f"version {self._version}) that did not record the weights or the images "
                f"its rows come from, so rows of {_describe_weights(asked)} cannot be added "
                f"safely; {fix}"
            )
        if held is None:
            if not writing:
                return
            if self.written.any() or self._damaged:
                raise CacheError(
                    f"feature cache {self._path}: holds {int(self.written.sum())} rows of "
                    f"unrecorded weights; refusing to add rows of {_describe_weights(asked)}; "
                    f"{fix}"
                )
            self._set_attrs(weights=asked)
            return
        if held.get("sha256") != asked.get("sha256"):
            raise CacheError(
                f"feature cache {self._path}: holds features of {self.backbone} with "
                f"{_describe_weights(held)}; this run asks for {_describe_weights(asked)}. "
                f"Mixing them would give rows of two networks; {fix}"
            )

    def _set_attrs(self, **changes: Any) -> None:
        attrs = {**self._attrs, **changes}
        attrs["identity_digest"] = _identity_digest(attrs)
        try:
            self._group.attrs.update({**changes, "identity_digest": attrs["identity_digest"]})
        except OSError as exc:
            raise CacheError(f"feature cache {self._path}: cannot update it: {exc}") from exc
        self._attrs = attrs

    # ------------------------------------------------------- damage

    def _chunk_file(self, arr: Any, k: int) -> Path:
        index = (k,) + (0,) * (len(arr.shape) - 1)
        if _ZARR_MAJOR >= 3:
            key = arr.metadata.encode_chunk_key(index)
        else:  # pragma: no cover - zarr 2
            key = ".".join(str(i) for i in index)
        return self._path / arr.path / key

    def _arrays(self) -> list[Any]:
        out = [*self._local, *self._global]
        if self._version >= 2:
            out += [self._image_digest, self._row_digest]
        return out

    def _check_chunks(self) -> dict[int, str]:
        """Written rows whose chunk files are missing or of the wrong size (cheap)."""
        n, chunk = self.n_images, self.chunk_images
        for k in range(-(-n // chunk)):
            f = self._chunk_file(self._written, k)
            try:
                found = f.stat().st_size
            except OSError:
                continue  # absent: all unwritten
            if found != chunk:  # one byte per flag
                if self._mode != "r+":
                    raise CacheError(
                        f"feature cache {self._path}: damaged: chunk file {f} of the "
                        f"'written' flags has {found} bytes, expected {chunk}; rerun "
                        "`factortopy extract` to recompute its rows"
                    )
                f.unlink(missing_ok=True)  # its rows read as unwritten: recomputed
        flags = np.asarray(self._written[:], dtype=bool)
        damaged: dict[int, str] = {}
        chunks = np.unique(np.flatnonzero(flags) // chunk)
        for arr in self._arrays():
            size = chunk * int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize
            # the chunk key of (k, 0, ..., 0), built once per array (stat is the cost)
            template = str(self._chunk_file(arr, 987654321)).replace("987654321", "{}")
            for k in chunks:
                f = template.format(int(k))
                try:
                    found = os.stat(f).st_size
                except OSError:
                    found = None
                if found == size:
                    continue
                why = (
                    f"chunk file {f} is missing"
                    if found is None
                    else f"chunk file {f} has {found} bytes, expected {size}"
                )
                rows = np.arange(k * chunk, min((k + 1) * chunk, n))
                for r in rows[flags[rows]]:
                    damaged.setdefault(int(r), why)
        if self._version >= 2 and flags.any():
            try:
                digests = np.asarray(self._row_digest[:])
            except Exception:
                digests = None
            if digests is not None:
                blank = flags & ~digests.any(axis=1)
                for r in np.flatnonzero(blank):
                    damaged.setdefault(int(r), "marked written but it has no row digest")
        return damaged

    def verify(
        self,
        load_images: Callable[[np.ndarray], Sequence[Any]] | None = None,
        *,
        repair: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> CacheReport:
        """Read every written row and compare it with its digest.

        Parameters
        ----------
        load_images : callable, optional
            ``load_images(indices) -> images`` of the dataset the cache was made from:
            each written row's image is decoded again and its digest compared too
            (finds a cache built from other images sharing the names).
        repair : bool
            Mark the damaged rows unwritten (needs mode ``"r+"``), so that the next
            extraction recomputes them.
        progress : callable, optional
            ``progress(done_chunks, total_chunks)`` after each chunk.

        Returns
        -------
        CacheReport
            Damaged rows: missing or short chunk files, unreadable chunks, digest
            mismatches (bit flips), non-finite values, changed image content. Rows of a
            version-1 cache have no digests: only readability and finiteness are checked.

        Raises
        ------
        CacheError
            ``repair=True`` on a read-only cache.
        """
        if repair and self._mode != "r+":
            raise CacheError(f"feature cache {self._path}: open it with mode='r+' to repair it")
        flags = np.asarray(self._written[:], dtype=bool)
        report = CacheReport(self._path, self.n_images, int(flags.sum()))
        damaged = dict(self._damaged)
        damaged.update(self._check_chunks())
        n, chunk = self.n_images, self.chunk_images
        chunks = np.unique(np.flatnonzero(flags) // chunk)
        for done, k in enumerate(chunks, start=1):
            rows = np.arange(k * chunk, min((k + 1) * chunk, n))
            rows = rows[flags[rows]]
            rows = np.asarray([r for r in rows if int(r) not in damaged], np.int64)
            if rows.size:
                self._verify_rows(rows, damaged, load_images)
                report.n_checked += int(rows.size)
            if progress is not None:
                progress(done, len(chunks))
        report.damaged = dict(sorted(damaged.items()))
        if repair and damaged:
            self.mark_unwritten(sorted(damaged))
            report.repaired = True
        return report

    def _verify_rows(
        self, rows: np.ndarray, damaged: dict[int, str], load_images: Callable | None
    ) -> None:
        sel = slice(int(rows[0]), int(rows[-1]) + 1)
        pick = rows - rows[0]
        try:
            arrays = []
            for loc, glo in zip(self._local, self._global, strict=True):
                arrays.append(np.asarray(loc[sel])[pick])
                arrays.append(np.asarray(glo[sel])[pick])
            if self._version >= 2:
                img = np.asarray(self._image_digest[sel])[pick]
                stored = np.asarray(self._row_digest[sel])[pick]
        except Exception as exc:
            for r in rows:
                damaged[int(r)] = f"cannot be read ({type(exc).__name__}: {exc})"
            return
        finite = np.ones(len(rows), bool)
        for a in arrays:
            finite &= np.isfinite(a.reshape(len(rows), -1)).all(axis=1)
        if self._version >= 2:
            found = _row_digests(img, arrays)
            bad = ~(found == stored).all(axis=1)
            for r in rows[bad]:
                damaged[int(r)] = "its features do not match the row digest (a corrupted chunk)"
        for r in rows[~finite]:
            damaged.setdefault(int(r), "non-finite feature values")
        if load_images is not None and self._version >= 2:
            ids = self.image_ids
            images = load_images(rows)
            for j, (r, im) in enumerate(zip(rows, images, strict=True)):
                if img[j].any() and not np.array_equal(image_digest(im), img[j]):
                    damaged.setdefault(
                        int(r),
                        f"image {ids[int(r)]!r} differs from the one its features were "
                        "computed from",
                    )

    def mark_unwritten(self, rows: Sequence[int]) -> None:
        """Mark rows unwritten (damaged rows, before recomputing them).

        Parameters
        ----------
        rows : sequence of int
            Row indices in ``[0, N)``.
        """
        if self._mode != "r+":
            raise CacheError(f"feature cache {self._path}: open it with mode='r+' to change it")
        idx = np.unique(np.asarray(rows, np.int64))
        if idx.size:
            self._written.set_orthogonal_selection((idx,), np.zeros(idx.size, bool))
        for r in idx:
            self._damaged.pop(int(r), None)

    # ------------------------------------------------------- claims

    @contextmanager
    def claim(self, start: int, stop: int) -> Iterator[Callable[[], None]]:
        """Claim images ``start .. stop-1`` for one extraction (module docstring).

        Yields
        ------
        callable
            ``refresh()``: call it now and then (every batch) to keep the claim alive.

        Raises
        ------
        CacheError
            If another live process claims an overlapping range (the message names
            its host, pid and range).
        """
        folder = self._path / ".claims"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise CacheError(f"feature cache {self._path}: cannot write there: {exc}") from exc
        me = f"{HOST_ID}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        mine = folder / f"{int(start)}-{int(stop)}.{me}.json"
        body = {"start": int(start), "stop": int(stop), "host": socket.gethostname(),
                "pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat()}  # fmt: skip
        mine.write_text(json.dumps(body), encoding="utf-8")
        try:
            for other in folder.iterdir():
                if other == mine:
                    continue
                m = re.match(r"^(\d+)-(\d+)\.([0-9a-f]{8})-(\d+)-[0-9a-f]+\.json$", other.name)
                if m is None:
                    continue
                a, b, host, pid = int(m[1]), int(m[2]), m[3], int(m[4])
                if b <= start or a >= stop:
                    continue
                if _claim_stale(other, host, pid):
                    other.unlink(missing_ok=True)
                    continue
                try:  # simultaneous claims: the earlier one wins, the later refuses
                    if (mine.stat().st_mtime_ns, mine.name) < (
                        other.stat().st_mtime_ns,
                        other.name,
                    ):
                        continue
                except OSError:  # the other claim ended meanwhile
                    continue
                raise CacheError(
                    f"feature cache {self._path}: images {a}..{b - 1} are being extracted "
                    f"by process {pid} (host {host}, claim {other.name}); this run asks for "
                    f"{start}..{stop - 1}. Not computing them twice: wait for it, or give "
                    "each process its own --range (plan_ranges)"
                )
        except BaseException:
            mine.unlink(missing_ok=True)
            raise

        def refresh() -> None:
            try:
                os.utime(mine)
            except OSError:
                pass

        try:
            yield refresh
        finally:
            mine.unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass

    def remove_if_empty(self) -> bool:
        """Delete the cache directory if no row was ever written (a refused extraction).

        Returns
        -------
        bool
            Whether it was removed.
        """
        if np.asarray(self._written[:], dtype=bool).any() or self._damaged:
            return False
        claims = self._path / ".claims"
        if claims.is_dir() and any(claims.iterdir()):
            return False
        shutil.rmtree(self._path, ignore_errors=True)
        return not self._path.exists()

    # ---------------------------------------------------------- other

    def check_compatible(
        self,
        layer_names: Sequence[str] | None = None,
        widths: Sequence[int] | None = None,
        grid: Sequence[int] | None = None,
        *,
        backbone: str | None = None,
        source: str = "the request",
    ) -> None:
        """Check that the cache matches what a model or run expects.

        Parameters
        ----------
        layer_names, widths, grid, backbone : optional
            The expected values; ``None`` skips a field.
        source : str
            What the expectation comes from, for the message (e.g. a model file path).

        Raises
        ------
        CacheError
            Naming the cache path, the field, the expected and the found value.
        """
        expected: dict[str, Any] = {}
        if backbone is not None:
            expected["backbone"] = backbone
        if layer_names is not None:
            expected["layer_names"] = list(layer_names)
        if widths is not None:
            expected["widths"] = [int(c) for c in widths]
        if grid is not None:
            expected["grid"] = [int(g) for g in grid]
        for field, exp in expected.items():
            found = self._attrs[field]
            if found != exp:
                raise CacheError(
                    f"feature cache {self._path} does not match {source}: {field} "
                    f"{_describe_difference(exp, found)} in the cache"
                )

    def nbytes(self, indices: Any = None, layers: Sequence[int | str] | None = None) -> int:
        """Bytes that :meth:`read` of these images would occupy as float32.

        Parameters
        ----------
        indices : array-like of int, shape (n,), optional
            As in :meth:`read` (repeats count); ``None``: all N images.
        layers : sequence of int or str, optional
            As in :meth:`read`.

        Returns
        -------
        int
            ``4 · n · Σ_l C_l · (h·w + 1)`` over the chosen layers.
        """
        n = self.n_images if indices is None else int(np.asarray(indices).size)
        h, w = self.grid
        widths = self.widths
        per_image = sum(widths[i] * (h * w + 1) for i in self._layer_indices(layers))
        return 4 * n * per_image


# ----------------------------------------------------------- module helpers


def _full_chunks(arr: Any) -> Any:
    """The array, set to store chunks even when they hold only zeros.

    zarr skips all-fill chunks by default; a missing chunk file must mean damage.
    """
    if _ZARR_MAJOR >= 3:
        return arr.with_config({"write_empty_chunks": True})
    return arr  # pragma: no cover - zarr 2 writes empty chunks by default


def _norm_weights(path: Path, weights: Any) -> dict[str, Any] | None:
    if weights is None:
        return None
    if (
        not isinstance(weights, Mapping)
        or not isinstance(weights.get("sha256"), str)
        or weights.get("kind", "module") not in ("random", "pretrained", "module")
        or not isinstance(weights.get("source", {}), Mapping)
    ):
        raise CacheError(
            f"feature cache {path}: weights must be a dict with a 'sha256' str, a 'kind' "
            "('random', 'pretrained' or 'module') and a 'source' dict (see "
            f"extract.weights_identity), found {weights!r}"
        )
    try:
        return json.loads(json.dumps(to_jsonable(weights, where="weights")))
    except ModelFileError as exc:
        raise CacheError(f"feature cache {path}: {exc}") from None


def _claim_stale(claim: Path, host: str, pid: int) -> bool:
    try:
        age = time.time() - claim.stat().st_mtime
    except OSError:
        return True
    if host == HOST_ID and pid != os.getpid() and not process_alive(pid):
        return True
    return age > CLAIM_STALE_SECONDS


def _unwritable(path: Path, exc: OSError) -> CacheError:
    why = {
        errno.EROFS: "it is on a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "the disk is full",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheError(
        f"feature cache {path}: cannot write there ({why}: {exc.filename or path}); choose "
        "a writable location for --cache"
    )


def _probe_writable(path: Path) -> None:
    """Raise a clear CacheError unless files can be created in ``path``."""
    probe = path / f".write-probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _unwritable(path, exc) from exc


def _check_chunk(path: Path, chunk_images: Any) -> None:
    if isinstance(chunk_images, bool) or not isinstance(chunk_images, (int, np.integer)):
        raise CacheError(
            f"feature cache {path}: chunk_images must be an int, found {chunk_images!r}"
        )
    if chunk_images < 1:
        raise CacheError(f"feature cache {path}: chunk_images must be >= 1, found {chunk_images}")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _refuse_unless_cache(path: Path) -> None:
    """Raise unless ``path`` is a feature cache (the only thing overwrite may delete)."""
    fmt = None
    if _is_zarr_group_dir(path):
        try:
            fmt = dict(zarr.open_group(str(path), mode="r").attrs).get("format")
        except Exception:
            fmt = None
    if fmt != CACHE_FORMAT:
        raise CacheError(
            f"feature cache {path}: exists and is not a feature cache; refusing to "
            "overwrite it (remove it yourself or choose another path)"
        )


def _build(path: Path, identity: dict[str, Any], chunk_images: int) -> Path:
    """Build a complete empty cache in a temporary sibling directory; return it."""
    parent = path.parent
    if not parent.is_dir():
        raise CacheError(f"feature cache {path}: folder {parent} does not exist")
    remove_stale_temporaries(path)  # builds of killed processes (core/atomic.py's rule)
    tmp = temporary_name(path)
    n = len(identity["image_ids"])
    chunk = int(min(chunk_images, n))
    h, w = identity["grid"]
    try:
        group = zarr.open_group(str(tmp), mode="w-")
        loc = group.require_group("local")
        glo = group.require_group("global")
        for i, c in enumerate(identity["widths"]):
            _create_array(loc, str(i), shape=(n, c, h, w), chunks=(chunk, c, h, w), dtype="f2")
            _create_array(glo, str(i), shape=(n, c), chunks=(chunk, c), dtype="f2")
        _create_array(group, "written", shape=(n,), chunks=(chunk,), dtype="bool")
        for name in ("image_digest", "row_digest"):
            shape, chunks = (n, _DIGEST_BYTES), (chunk, _DIGEST_BYTES)
            _create_array(group, name, shape=shape, chunks=chunks, dtype="u1")
        attrs = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            **identity,
            "n_images": n,
            "chunk_images": chunk,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        attrs["identity_digest"] = _identity_digest(attrs)
        group.attrs.update(attrs)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(path, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _validate_attrs(path: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    where = f"feature cache {path}"
    fmt = attrs.get("format")
    if fmt != CACHE_FORMAT:
        raise CacheError(
            f"{where}: not a feature cache (expected attribute format {CACHE_FORMAT!r}, "
            f"found {fmt!r})"
        )
    version = attrs.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CacheError(f"{where}: damaged cache: version {version!r} is not an integer")
    if version > CACHE_VERSION:
        raise CacheError(
            f"{where}: written by a newer napari-factortopy (cache version {version}); "
            f"this version reads up to {CACHE_VERSION}; upgrade napari-factortopy"
        )
    missing = [k for k in (*_IDENTITY_FIELDS, "n_images") if k not in attrs]
    if missing:
        raise CacheError(f"{where}: damaged cache: attributes {missing} are missing")
    try:
        identity = _norm_identity(path, strict=True, **{k: attrs[k] for k in _IDENTITY_FIELDS})
    except CacheError as exc:
        raise CacheError(f"{exc} (damaged cache attributes)") from None
    if attrs["n_images"] != len(identity["image_ids"]):
        raise CacheError(
            f"{where}: damaged cache: n_images is {attrs['n_images']!r} but image_ids "
            f"holds {len(identity['image_ids'])} ids"
        )
    if version >= 2:
        for key in ("weights", "chunk_images", "identity_digest", "created"):
            if key not in attrs:
                raise CacheError(f"{where}: damaged cache: attribute {key!r} is missing")
        for key, kind in (("chunk_images", int), ("identity_digest", str), ("created", str)):
            value = attrs[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise CacheError(
                    f"{where}: damaged cache: attribute {key!r} must be a {kind.__name__}, "
                    f"found {value!r}"
                )
        try:
            _norm_weights(path, attrs["weights"])
            expected = _identity_digest(attrs)
        except (CacheError, TypeError, ValueError) as exc:
            raise CacheError(
                f"{where}: damaged cache: attribute 'weights' is invalid: {exc}"
            ) from None
        if attrs["identity_digest"] != expected:
            raise CacheError(
                f"{where}: damaged cache: its attributes (zarr.json) do not match the "
                f"identity digest recorded with them (expected {expected[:16]}…, found "
                f"{str(attrs['identity_digest'])[:16]}…); it was edited or corrupted. "
                "Re-extract it (factortopy extract --overwrite)"
            )
    return {**attrs, **identity}


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
