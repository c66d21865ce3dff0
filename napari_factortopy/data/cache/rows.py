"""Writing and reading rows: the features of some images, all layers.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .format import _DIGEST_BYTES, CacheError
from .identity import _short
from .integrity import _row_digests


def _to_numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


class _Rows:
    """:class:`~napari_factortopy.data.cache.FeatureCache`'s writes and reads."""

    _path: Path
    _mode: str
    _version: int
    _local: list[Any]
    _global: list[Any]
    _written: Any
    _image_digest: Any
    _row_digest: Any
    _damaged: dict[int, str]

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
