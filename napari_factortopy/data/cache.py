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
attributes
    ``format`` (``"factortopy-cache"``), ``version`` (:data:`CACHE_VERSION`),
    ``backbone``, ``layer_names``, ``widths`` (the ``C_l``), ``grid`` (``[h, w]``),
    ``image_ids`` (N str), ``preprocessing`` (dict), ``n_images``, ``chunk_images``
    and ``created`` (ISO 8601 time, UTC).

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
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_factortopy.core.modelfile import ModelFileError, to_jsonable

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "CacheError", "FeatureCache"]

#: Value of the ``format`` attribute of every cache.
CACHE_FORMAT: str = "factortopy-cache"
#: The newest cache layout version this code writes and reads.
CACHE_VERSION: int = 1

_ZARR_MAJOR = int(zarr.__version__.split(".")[0])
_IDENTITY_FIELDS = ("backbone", "layer_names", "widths", "grid", "image_ids", "preprocessing")


class CacheError(ValueError):
    """A feature cache is missing, foreign, damaged, incompatible or misused."""


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
) -> dict[str, Any]:
    """Validate and normalise the identifying metadata of a cache (JSON-able)."""
    where = f"feature cache {path}"
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
        self._local = [group["local"][str(i)] for i in range(len(attrs["layer_names"]))]
        self._global = [group["global"][str(i)] for i in range(len(attrs["layer_names"]))]
        self._written = group["written"]

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

        Returns
        -------
        FeatureCache
            The new cache, mode ``"r+"``.

        Raises
        ------
        CacheError
            If the metadata is invalid, ``path`` exists (and ``overwrite`` is false or
            it is not a cache), or its parent folder is missing.
        """
        path = Path(path)
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
        tmp = _build(path, identity, chunk_images)
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
    ) -> FeatureCache:
        """Open an existing cache with this exact metadata for resuming, or create it.

        Parameters
        ----------
        path, backbone, layer_names, widths, grid, image_ids, preprocessing, chunk_images
            As in :meth:`create`. For an existing cache, ``chunk_images`` is ignored
            (the cache keeps its own chunking).

        Returns
        -------
        FeatureCache
            Opened with mode ``"r+"``; :meth:`missing` tells which images remain.

        Raises
        ------
        CacheError
            If an existing cache differs in backbone, layer_names, widths, grid,
            image_ids or preprocessing (the message names the first differing field,
            the expected and the found value), or ``path`` is something else.
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
                return cls.create(path, chunk_images=chunk_images, **kwargs)
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
        return cache

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> FeatureCache:
        """Open an existing cache and validate its layout.

        Parameters
        ----------
        path : str or PathLike
            The cache directory.
        mode : {"r", "r+"}
            Read only, or read and write.

        Returns
        -------
        FeatureCache

        Raises
        ------
        CacheError
            If ``path`` is missing or not a feature cache, was written by a newer
            version, or its arrays disagree with its attributes.
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
        return cls(path, group, attrs, mode)

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
        """bool ``(N,)``: which images are complete, read afresh from disk."""
        return np.asarray(self._written[:], dtype=bool)

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
        for target, x16 in arrays16:
            target[start:stop] = x16
        # Only now, with the data of every layer stored, are the images complete.
        self._written[start:stop] = np.ones(b, dtype=bool)

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
            if contiguous:
                data = arr[selection]
            else:
                data = arr.get_orthogonal_selection((selection,))
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
    tmp = parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
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
        group.attrs.update(
            {
                "format": CACHE_FORMAT,
                "version": CACHE_VERSION,
                **identity,
                "n_images": n,
                "chunk_images": chunk,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
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
        identity = _norm_identity(path, **{k: attrs[k] for k in _IDENTITY_FIELDS})
    except CacheError as exc:
        raise CacheError(f"{exc} (damaged cache attributes)") from None
    if attrs["n_images"] != len(identity["image_ids"]):
        raise CacheError(
            f"{where}: damaged cache: n_images is {attrs['n_images']!r} but image_ids "
            f"holds {len(identity['image_ids'])} ids"
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
    chunk = None
    for name, shape, dtype in expected:
        try:
            arr = group[name]
            found_shape = tuple(arr.shape)
            found_dtype = np.dtype(arr.dtype)
            found_chunk = int(arr.chunks[0])
        except (KeyError, AttributeError, TypeError):
            raise CacheError(f"{where}: damaged cache: array {name!r} is missing") from None
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
