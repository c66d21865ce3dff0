"""The ``.ftopy`` model file: one safetensors file with JSON metadata.

Layout
------
A ``.ftopy`` file is a plain `safetensors <https://github.com/huggingface/safetensors>`_
file (never a pickle):

- the tensors are any named numpy arrays (torch tensors are accepted when saving and
  converted to numpy; dtypes numpy lacks, such as ``bfloat16``, become ``float32``);
- the header's ``__metadata__`` (a str → str map) holds

  ``"format"``
      always ``"factortopy"``: what tells a ``.ftopy`` file from a foreign
      safetensors file;
  ``"format_version"``
      the integer :data:`FORMAT_VERSION` as a string; a file with a larger number was
      written by a newer napari-factortopy and is refused with a clear message;
  ``"factortopy"``
      the caller's metadata dict as a JSON string.

Metadata must be JSON-able. numpy scalars and arrays are converted (to ints, floats,
bools and nested lists), tuples become lists, :class:`os.PathLike` becomes ``str``,
and non-finite floats (NaN, ±inf) become ``null``, because JSON cannot hold them.
Anything else is refused before anything is written.

  ``"digest"``
      ``"sha256:<hex>"`` over the format version, the metadata JSON string and every
      tensor's name, dtype, shape and bytes (in name order). :func:`load_ftopy`
      recomputes it and refuses a file whose digest differs (a flipped bit anywhere in
      the metadata or the data). Files without a digest (written before it existed)
      are read without this check.

Writes are atomic: the file is written under a temporary name in the destination
folder (:func:`~napari_factortopy.core.atomic.temporary_name`), flushed and fsynced,
given the permissions ``0o666 & ~umask`` of any new file, then moved over the
destination with :func:`os.replace`, so a crash never leaves a half-written file where
a good one was. Temporaries left by killed writers of the same target are removed by
the next write (:func:`~napari_factortopy.core.atomic.remove_stale_temporaries`: the
writer's process is gone, or the temporary is older than 15 minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors import numpy as st_numpy

from .atomic import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "SUFFIX",
    "ModelFileError",
    "is_ftopy",
    "load_ftopy",
    "read_ftopy_metadata",
    "save_ftopy",
    "to_jsonable",
]

#: The newest ``.ftopy`` format version this code writes and reads.
FORMAT_VERSION: int = 1
#: The file name suffix of model files.
SUFFIX: str = ".ftopy"

_FORMAT_NAME = "factortopy"
_META_KEY = "factortopy"
_MAX_HEADER_BYTES = 100_000_000
_SAFETENSORS_DTYPE_SIZES: Mapping[str, int] = MappingProxyType(
    {
        "BOOL": 1,
        "U8": 1,
        "I8": 1,
        "F8_E5M2": 1,
        "F8_E4M3": 1,
        "I16": 2,
        "U16": 2,
        "F16": 2,
        "BF16": 2,
        "I32": 4,
        "U32": 4,
        "F32": 4,
        "I64": 8,
        "U64": 8,
        "F64": 8,
    }
)


_NUMPY_TO_ST: Mapping[str, str] = MappingProxyType(
    {
        "bool": "BOOL",
        "uint8": "U8",
        "int8": "I8",
        "int16": "I16",
        "uint16": "U16",
        "float16": "F16",
        "int32": "I32",
        "uint32": "U32",
        "float32": "F32",
        "int64": "I64",
        "uint64": "U64",
        "float64": "F64",
    }
)


class ModelFileError(ValueError):
    """A ``.ftopy`` file is missing, foreign, damaged, too new, or cannot be written."""


class _Header(NamedTuple):
    header: dict[str, Any]
    data_start: int
    file_size: int


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any, *, where: str = "metadata") -> Any:
    """Convert ``obj`` to plain JSON-able Python values.

    Parameters
    ----------
    obj : Any
        A dict / list / tuple tree of str, bool, int, float, None, numpy scalars,
        numpy arrays (any shape; become nested lists), torch tensors (same) and
        :class:`os.PathLike` (become ``str``). Dict keys must be ``str``.
    where : str
        How to name ``obj`` in error messages (e.g. ``"metadata"``).

    Returns
    -------
    Any
        The same tree made of dict, list, str, bool, int, float and None only.
        Non-finite floats become ``None``.

    Raises
    ------
    ModelFileError
        If some value cannot be represented; the message names its place in the tree,
        e.g. ``metadata['training']['optimizer']``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if _is_torch_tensor(obj):
        obj = _torch_to_numpy(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ModelFileError(
                f"{where}: numpy array of dtype {obj.dtype} is not JSON-able "
                "(expected bool, integer or float values)"
            )
        return to_jsonable(obj.tolist(), where=where)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ModelFileError(
                    f"{where}: dict key {key!r} is of type {type(key).__name__}; "
                    "expected str keys only"
                )
            out[key] = to_jsonable(value, where=f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ModelFileError(
        f"{where}: value of type {type(obj).__module__}.{type(obj).__qualname__} is not "
        "JSON-able (expected dict, list, str, bool, int, float, None or numpy values)"
    )


# ------------------------------------------------------------------------ tensors


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    t = tensor.detach().cpu()
    try:
        return t.numpy()
    except TypeError:  # bfloat16, float8 ...: dtypes numpy lacks
        return t.float().numpy()


def _as_array(name: str, value: Any, path: Path) -> np.ndarray:
    if _is_torch_tensor(value):
        arr = _torch_to_numpy(value)
    else:
        arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise ModelFileError(
            f"{path}: tensor {name!r} has dtype {arr.dtype}; expected a bool, integer "
            "or float dtype of at most 64 bits"
        )
    # safetensors reads raw memory: the array must be C-contiguous and little-endian.
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


# ------------------------------------------------------------------------- write


def save_ftopy(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a ``.ftopy`` model file atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination. If it has no suffix at all, :data:`SUFFIX` is appended; any
        other suffix is kept as given. The parent folder must exist.
    tensors : Mapping[str, array-like]
        Named arrays of any shape (``()`` included) and any bool / integer / float
        dtype, numpy arrays or torch tensors (moved to the CPU; ``bfloat16`` and other
        dtypes numpy lacks are stored as ``float32``). Non-finite values are allowed.
    metadata : Mapping[str, Any]
        JSON-able metadata (see :func:`to_jsonable`); stored as a JSON string.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ModelFileError
        If a tensor name or dtype, or the metadata, cannot be stored (checked before
        anything is written), or the parent folder is missing. An existing file at
        ``path`` is left untouched on any failure.
    """
    path = Path(path)
    if path.suffix == "":
        path = path.with_name(path.name + SUFFIX)
    if not path.parent.is_dir():
        raise ModelFileError(f"{path}: cannot write: folder {path.parent} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path}: cannot write: a directory is in the way")
    if not isinstance(metadata, Mapping):
        raise ModelFileError(f"{path}: metadata must be a dict, found {type(metadata).__name__}")
    if not isinstance(tensors, Mapping):
        raise ModelFileError(f"{path}: tensors must be a dict, found {type(tensors).__name__}")

    meta_json = json.dumps(to_jsonable(metadata), allow_nan=False, sort_keys=False)
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ModelFileError(f"{path}: tensor names must be non-empty str, found {name!r}")
        if name == "__metadata__":
            raise ModelFileError(f"{path}: '__metadata__' is reserved and cannot name a tensor")
        arrays[name] = _as_array(name, value, path)
    for name, arr in arrays.items():
        if arr.dtype.name not in _NUMPY_TO_ST:
            raise ModelFileError(f"{path}: tensor {name!r} has unsupported dtype {arr.dtype}")
    version = str(FORMAT_VERSION)
    header_meta = {
        "format": _FORMAT_NAME,
        "format_version": version,
        _META_KEY: meta_json,
        "digest": _digest(
            version,
            meta_json,
            ((n, _NUMPY_TO_ST[a.dtype.name], a.shape, a) for n, a in arrays.items()),
        ),
    }

    try:
        with atomic_path(path) as tmp:
            st_numpy.save_file(arrays, tmp, metadata=header_meta)
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(f"{path}: could not write the model file: {exc}") from exc
    return path


def _digest(version: str, meta_json: str, tensors: Any) -> str:
    """``"sha256:<hex>"`` of the version, the metadata JSON and (name, dtype, shape, bytes)."""
    h = hashlib.sha256(b"factortopy-digest-1\0")
    h.update(version.encode() + b"\0" + meta_json.encode("utf-8") + b"\0")
    for name, code, shape, arr in sorted(tensors, key=lambda t: t[0]):
        h.update(json.dumps([name, code, [int(s) for s in shape]]).encode("utf-8") + b"\0")
        a = np.ascontiguousarray(arr)
        h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
    return "sha256:" + h.hexdigest()


# -------------------------------------------------------------------------- read


def _read_header(path: Path) -> _Header:
    """Parse the safetensors header of ``path`` by hand (bounded, no data read)."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file (expected a {SUFFIX} model file)")
    not_st = f"{path}: not a safetensors / {SUFFIX} model file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            first = fh.read(8)
            if len(first) < 8:
                raise ModelFileError(f"{not_st}: only {size} bytes long")
            (n,) = struct.unpack("<Q", first)
            if n == 0 or n >= _MAX_HEADER_BYTES or n > size - 8:
                raise ModelFileError(
                    f"{not_st}: the first 8 bytes declare a {n}-byte header, but the "
                    f"file has {size - 8} bytes after them (and headers are < 100 MB)"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc}") from exc
    try:
        text = raw.decode("utf-8")
        header = json.loads(text) if text.startswith("{") else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ModelFileError(f"{not_st}: the header is not a JSON object")
    return _Header(header=header, data_start=8 + n, file_size=size)


def _factortopy_metadata(path: Path, hdr: _Header, *, check_version: bool = True) -> dict:
    meta = hdr.header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(
            f"{path}: a safetensors file, but not a napari-factortopy model file "
            f"(expected __metadata__ format 'factortopy', found {found!r})"
        )
    raw_version = meta.get("format_version")
    try:
        version = int(raw_version)
    except (TypeError, ValueError):
        raise ModelFileError(
            f"{path}: damaged model file: format_version {raw_version!r} is not an integer"
        ) from None
    if check_version and version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer napari-factortopy (format {version}); this "
            f"version reads up to {FORMAT_VERSION}; upgrade napari-factortopy to open it"
        )
    try:
        payload = json.loads(meta.get(_META_KEY, ""))
    except (TypeError, json.JSONDecodeError):
        payload = None
    if not isinstance(payload, dict):
        raise ModelFileError(
            f"{path}: damaged model file: __metadata__['{_META_KEY}'] is not a JSON object"
        )
    return payload


def read_ftopy_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the metadata of a ``.ftopy`` file from its header only (no tensor data).

    Parameters
    ----------
    path : str or PathLike
        The model file.

    Returns
    -------
    dict
        The metadata dict given to :func:`save_ftopy` (after JSON conversion).

    Raises
    ------
    ModelFileError
        If the file is missing, not a safetensors file, a safetensors file without
        napari-factortopy metadata, or written in a newer format version.
    """
    path = Path(path)
    return _factortopy_metadata(path, _read_header(path))


def load_ftopy(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a ``.ftopy`` model file.

    Parameters
    ----------
    path : str or PathLike
        The model file.

    Returns
    -------
    tensors : dict[str, numpy.ndarray]
        The named arrays, with the shapes and dtypes they were saved with
        (``bfloat16`` ones as ``float32``).
    metadata : dict
        The metadata dict given to :func:`save_ftopy` (after JSON conversion).

    Raises
    ------
    ModelFileError
        The cases of :func:`read_ftopy_metadata`, plus a truncated or otherwise
        damaged data region.
    """
    path = Path(path)
    hdr = _read_header(path)
    metadata = _factortopy_metadata(path, hdr)
    available = hdr.file_size - hdr.data_start
    end = 0
    for name, info in hdr.header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
            count = math.prod(int(s) for s in info["shape"])
            itemsize = _SAFETENSORS_DTYPE_SIZES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(
                f"{path}: damaged model file: header entry of tensor {name!r} is invalid "
                f"(found {info!r})"
            ) from None
        if not 0 <= begin <= stop or stop - begin != count * itemsize:
            raise ModelFileError(
                f"{path}: damaged model file: tensor {name!r} declares offsets "
                f"[{begin}, {stop}) for {count} values of {info['dtype']}"
            )
        end = max(end, stop)
    if end > available:
        raise ModelFileError(
            f"{path}: truncated model file: the header declares {end} data bytes but only "
            f"{available} follow it (an interrupted copy or download?)"
        )
    if end < available:
        raise ModelFileError(
            f"{path}: damaged model file: {available - end} unexpected bytes after the "
            f"{end} declared data bytes"
        )
    tensors: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="np") as fh:
            for name in fh.keys():
                tensors[name] = fh.get_tensor(name)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: damaged model file: {exc}") from exc
    meta = hdr.header["__metadata__"]
    stored = meta.get("digest")
    if stored is not None:
        found = _digest(
            str(meta.get("format_version")),
            str(meta.get(_META_KEY)),
            ((n, hdr.header[n]["dtype"], t.shape, t) for n, t in tensors.items()),
        )
        if found != stored:
            raise ModelFileError(
                f"{path}: damaged model file: its contents do not match the digest stored "
                f"when it was written (expected {stored!r}, found {found!r}); a bit was "
                "flipped or the file was edited. Use another copy"
            )
    return tensors, metadata


def is_ftopy(path: Any) -> bool:
    """Tell whether ``path`` is a napari-factortopy model file; never raises.

    Parameters
    ----------
    path : Any
        Usually a str or PathLike; anything else gives ``False``.

    Returns
    -------
    bool
        ``True`` for a safetensors file carrying napari-factortopy metadata, including
        one written in a newer format (so that opening it reports "upgrade" instead
        of "no reader"); ``False`` for directories, missing, unreadable and foreign
        files.
    """
    try:
        p = Path(path)
        _factortopy_metadata(p, _read_header(p), check_version=False)
    except Exception:
        return False
    return True
