"""What made a cache's rows: checked on creation, on opening and before rows are added.

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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_factortopy.core.modelfile import ModelFileError, to_jsonable

from .format import CACHE_FORMAT, CACHE_VERSION, CacheError

__all__ = ["image_digest"]

_IDENTITY_FIELDS = ("backbone", "layer_names", "widths", "grid", "image_ids", "preprocessing")


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


def _describe_weights(w: Any) -> str:
    if not isinstance(w, Mapping):
        return "weights not recorded"
    src = w.get("source") or {}
    where = src.get("weights") if isinstance(src, Mapping) else None
    kind = w.get("kind", "?")
    extra = f" ({where})" if where and where not in (kind, "None", "random") else ""
    return f"{kind} weights{extra}, sha256 {str(w.get('sha256', '?'))[:12]}…"


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


class _Identity:
    """:class:`~napari_factortopy.data.cache.FeatureCache`'s identity checks."""

    _path: Path
    _attrs: dict[str, Any]
    _group: Any

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
