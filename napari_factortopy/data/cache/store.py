"""FeatureCache: create, open and describe a feature cache (the other jobs are mixed in).

:class:`FeatureCache` is assembled from one part per job: writing and reading rows
(:mod:`.rows`), identity checks (:mod:`.identity`), damage checks and repair
(:mod:`.integrity`) and claims (:mod:`.claims`); this module creates and opens it.

Creation is atomic: the group is built in a temporary sibling directory and
renamed into place, so two processes racing in :meth:`FeatureCache.open_or_create`
end up sharing one cache.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_factortopy.core.atomic import remove_stale_temporaries, temporary_name

from .claims import _Claims
from .format import (
    _DIGEST_BYTES,
    _ZARR_MAJOR,
    CACHE_FORMAT,
    CACHE_VERSION,
    CacheError,
    _create_array,
    _full_chunks,
    _is_zarr_group_dir,
    _validate_arrays,
)
from .identity import (
    _IDENTITY_FIELDS,
    _describe_difference,
    _Identity,
    _identity_digest,
    _norm_identity,
    _norm_weights,
    _validate_attrs,
)
from .integrity import _Integrity
from .rows import _Rows

__all__ = ["FeatureCache"]


class FeatureCache(_Rows, _Identity, _Integrity, _Claims):
    """A zarr feature cache of local and global tokens (see :mod:`napari_factortopy.data.cache`).

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
