"""The paper's released model file → our FactorTopy weights (pure key and shape mapping).

The release (huzeyann/BrainDecodesDeepNets, ``assets/weights/clip_factorTopy.pth``) is
the ``state_dict`` of its own ``FactorTopy`` module: per backbone layer ``k`` (a string
key, ``"0"`` … ``"11"`` for the paper) a 1×1 convolution
``local_token_bottleneck.k.weight`` (D, C, 1, 1) and a linear map
``global_token_bottleneck.k.weight`` (D, C); three selector MLPs
``{space,layer,scale}_selector_mlp`` whose position 0 is a parameter-free positional
encoding, positions 1 and 3 are ``Linear`` layers with bias ((H, 6F) and (H, H)) and
position 5 a ``Linear`` without bias (2, L or 1 outputs); the readout ``weight`` (V, D)
and ``bias`` (V,). A Lightning checkpoint holds the same under ``state_dict`` with the
prefix ``model.``, beside the frozen backbone (``backbone.``) and the modelled vertex
coordinates (``coords``, (V, 3)).

The maths is ours (METHOD.md §1–2) with two differences in bookkeeping:

- the release's positional encoding lays its 6F features out as
  ``[axis][frequency][sin | cos]``, ours as ``[axis][sin | cos][frequency]``
  (:func:`encoding_permutation` reorders the first selector layers' input columns);
- the release shifts the right sphere using the min/max x of the *whole* left sphere,
  ours of the modelled vertices (:func:`release_joint_coordinates` builds the release's).

:func:`check_release_state` validates a state dict completely (every key, shape, dtype
and finiteness) before :func:`release_to_state` maps it; errors are
:class:`CheckpointError` with one line saying what was expected and what was found.
numpy only: the file itself is read by :mod:`napari_factortopy.data.official`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PAPER",
    "CheckpointError",
    "ReleaseShapes",
    "check_release_state",
    "encoding_permutation",
    "release_joint_coordinates",
    "release_to_state",
    "split_checkpoint",
]

#: The paper's release: open_clip ViT-B-16 (12 blocks × 768), subject 1, nsdgeneral.
PAPER = {
    "n_layers": 12,
    "width": 768,
    "bottleneck": 128,
    "hidden": 128,
    "n_freqs": 32,
    "n_vertices": 37984,
    "licence": "CC-BY-NC 4.0 (huzeyann/BrainDecodesDeepNets)",
    "repository": "huzeyann/BrainDecodesDeepNets",
    "file": "assets/weights/clip_factorTopy.pth",
}

#: The selectors of the release and the number of outputs of each (L for ``layer``).
_SELECTORS = ("space", "layer", "scale")
_LAYER_KEY = re.compile(r"^(local|global)_token_bottleneck\.([^.]+)\.weight$")


class CheckpointError(ValueError):
    """A checkpoint that is not the release's FactorTopy (one line: expected, found)."""


@dataclass(frozen=True)
class ReleaseShapes:
    """What a valid release state dict holds.

    Attributes
    ----------
    layers : tuple of str
        The release's layer keys in its order (``("0", …, "11")`` for the paper).
    widths : tuple of int
        Channel width C of each layer.
    bottleneck, hidden, n_freqs, n_vertices : int
        D, H, F (the encoding has 6F features) and V.
    """

    layers: tuple[str, ...]
    widths: tuple[int, ...]
    bottleneck: int
    hidden: int
    n_freqs: int
    n_vertices: int


def _few(keys, n: int = 4) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "")


def split_checkpoint(obj: object) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """The FactorTopy part of a loaded checkpoint: a bare state dict or a Lightning one.

    Parameters
    ----------
    obj : object
        What ``torch.load(weights_only=True)`` returned, with tensors turned into numpy
        arrays (any mapping of str → array-like).

    Returns
    -------
    state : dict str → array
        The FactorTopy keys without prefix.
    kind : {"bare", "lightning"}
    ignored : list of str
        Keys of a Lightning state dict that are not FactorTopy's but belong to the
        release's training module (``backbone.*``, ``coords``), left out of ``state``.

    Raises
    ------
    CheckpointError
        Not a mapping of names to arrays, or a Lightning ``state_dict`` with keys that
        belong to neither the FactorTopy (``model.``) nor the release's module.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            "expected a state dict (a mapping of parameter names to tensors); found a "
            f"{type(obj).__name__}"
        )
    sd = obj.get("state_dict") if "state_dict" in obj else None
    if sd is None:
        state, kind, ignored = dict(obj), "bare", []
    else:
        if not isinstance(sd, Mapping):
            raise CheckpointError(
                f"expected 'state_dict' to be a mapping of names to tensors; found a "
                f"{type(sd).__name__}"
            )
        kind = "lightning"
        state, ignored, foreign = {}, [], []
        prefixed = any(str(k).startswith("model.") for k in sd)
        for k, v in sd.items():
            k = str(k)
            if prefixed and k.startswith("model."):
                state[k[len("model.") :]] = v
            elif k.startswith("backbone.") or k == "coords":
                ignored.append(k)
            elif prefixed:
                foreign.append(k)
            else:
                state[k] = v
        if foreign:
            raise CheckpointError(
                "expected a Lightning state_dict of the release (model.*, backbone.*, "
                f"coords); found other keys: {_few(foreign)}"
            )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not hasattr(v, "shape")]
    if bad:
        raise CheckpointError(
            f"expected parameter names mapped to tensors; found other entries: "
            f"{_few(str(k) for k in bad)}"
        )
    return state, kind, ignored


def _expected_keys(layers) -> list[str]:
    keys = []
    for k in layers:
        keys += [f"local_token_bottleneck.{k}.weight", f"global_token_bottleneck.{k}.weight"]
    for name in _SELECTORS:
        m = f"{name}_selector_mlp"
        keys += [f"{m}.1.weight", f"{m}.1.bias", f"{m}.3.weight", f"{m}.3.bias", f"{m}.5.weight"]
    return [*keys, "weight", "bias"]


def check_release_state(
    state: Mapping[str, np.ndarray], n_vertices: int | None = None
) -> ReleaseShapes:
    """Check that a state dict is exactly the release's FactorTopy; return its sizes.

    Parameters
    ----------
    state : dict str → array
        Unprefixed keys (:func:`split_checkpoint`).
    n_vertices : int, optional
        The number of modelled vertices the caller holds: ``weight`` must have this
        many rows.

    Returns
    -------
    ReleaseShapes

    Raises
    ------
    CheckpointError
        Another model's state dict, missing or unexpected keys, a wrong shape or dtype,
        non-finite values, or a vertex count other than ``n_vertices``.
    """
    keys = list(state)
    layers: list[str] = []
    for k in keys:
        m = _LAYER_KEY.match(k)
        if m and m.group(2) not in layers:
            layers.append(m.group(2))
    has_selector = any(k.startswith(f"{s}_selector_mlp.") for s in _SELECTORS for k in keys)
    if not layers and not has_selector:
        raise CheckpointError(
            "expected the release's FactorTopy state dict (local_token_bottleneck.*, "
            "global_token_bottleneck.*, {space,layer,scale}_selector_mlp.*, weight, bias); "
            f"found {len(keys)} other keys: {_few(keys)}"
        )
    n_l = len(layers)
    expected = _expected_keys(layers)
    missing = [k for k in expected if k not in state]
    extra = [k for k in keys if k not in set(expected)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unexpected {_few(extra)}")
        raise CheckpointError(
            f"expected the {len(expected)} keys of the release's FactorTopy for "
            f"{n_l} layers; found {len(keys)} keys: {'; '.join(parts)}"
        )
    for k in keys:
        arr = state[k]
        kind = np.dtype(getattr(arr, "dtype", np.float64)).kind
        if kind != "f":
            raise CheckpointError(
                f"{k}: expected a floating-point tensor; found dtype {arr.dtype}"
            )

    def shape(k: str) -> tuple[int, ...]:
        return tuple(int(s) for s in state[k].shape)

    w = shape("weight")
    if len(w) != 2:
        raise CheckpointError(f"weight: expected shape (V, D); found {w}")
    v, d = w
    h_shape = shape("space_selector_mlp.1.weight")
    if len(h_shape) != 2 or h_shape[1] % 6:
        raise CheckpointError(
            f"space_selector_mlp.1.weight: expected shape (H, 6F) (3 axes × F frequencies × "
            f"sin, cos); found {h_shape}"
        )
    hidden, n_enc = h_shape
    widths = []
    for k in layers:
        loc = shape(f"local_token_bottleneck.{k}.weight")
        if len(loc) != 4 or loc[0] != d or loc[2:] != (1, 1):
            raise CheckpointError(
                f"local_token_bottleneck.{k}.weight: expected shape ({d}, C, 1, 1); found {loc}"
            )
        widths.append(loc[1])
    want = {"bias": (v,)}
    for k, c in zip(layers, widths, strict=True):
        want[f"global_token_bottleneck.{k}.weight"] = (d, c)
    for name, n_out in (("space", 2), ("layer", n_l), ("scale", 1)):
        m = f"{name}_selector_mlp"
        want.update(
            {
                f"{m}.1.weight": (hidden, n_enc),
                f"{m}.1.bias": (hidden,),
                f"{m}.3.weight": (hidden, hidden),
                f"{m}.3.bias": (hidden,),
                f"{m}.5.weight": (n_out, hidden),
            }
        )
    for k, s in want.items():
        if shape(k) != s:
            raise CheckpointError(f"{k}: expected shape {s}; found {shape(k)}")
    for k in keys:
        if k in ("weight", "bias"):
            continue
        if not np.isfinite(np.asarray(state[k], np.float64)).all():
            raise CheckpointError(f"{k}: expected finite values; found NaN or infinity")
    if n_vertices is not None and v != int(n_vertices):
        raise CheckpointError(
            f"weight: expected {int(n_vertices)} rows, one per vertex given; found {v} "
            f"(shape {w}): the vertex indices are not this checkpoint's"
        )
    return ReleaseShapes(
        layers=tuple(layers),
        widths=tuple(widths),
        bottleneck=d,
        hidden=hidden,
        n_freqs=n_enc // 6,
        n_vertices=v,
    )


def encoding_permutation(n_freqs: int = 32) -> np.ndarray:
    """Column order taking the release's encoding layout to ours.

    The release's feature ``(axis a, frequency k, s ∈ {sin, cos})`` sits at
    ``a·2F + 2k + s``; ours ``(a, s, k)`` at ``a·2F + s·F + k``.

    Returns
    -------
    perm : int64 array of shape (6 F,)
        ``ours[:, j] = release[:, perm[j]]``: a first selector layer's weight in our
        layout is ``W_release[:, perm]``.
    """
    f = int(n_freqs)
    a, s, k = np.meshgrid(np.arange(3), np.arange(2), np.arange(f), indexing="ij")
    return (a * 2 * f + 2 * k + s).reshape(-1).astype(np.int64)


def release_joint_coordinates(lh_sphere: np.ndarray, rh_sphere: np.ndarray) -> np.ndarray:
    """Both hemispheres' sphere coordinates joined the release's way.

    The right sphere is shifted along x so that its minimum x lies at
    ``lh_min + 1.5 · (lh_max − lh_min)``, min/max over the *whole* left sphere (the
    release shifts only when the spheres would overlap, as they always do for
    fsaverage's). Index the result with joint vertex indices (left first) to get the
    modelled vertices' coordinates.

    Parameters
    ----------
    lh_sphere, rh_sphere : arrays of shape (n, 3)
        Every vertex of each hemisphere's registered sphere (163,842 for fsaverage).

    Returns
    -------
    array of shape (2 n, 3), float64
        The shift is computed in double precision and added in the spheres' own
        precision (float32 for GIFTI/FreeSurfer files), as the release's numpy code does,
        so the coordinates are the release's to the last bit.
    """
    lh = np.asarray(lh_sphere).reshape(-1, 3)
    rh = np.array(rh_sphere, dtype=np.result_type(np.asarray(rh_sphere).dtype, np.float32))
    rh = rh.reshape(-1, 3)
    lo, hi = float(lh[:, 0].min()), float(lh[:, 0].max())
    target = lo + (hi - lo) * 1.5
    rmin = float(rh[:, 0].min())
    if rmin < target:
        rh[:, 0] += target - rmin
    return np.concatenate([lh.astype(np.float64), rh.astype(np.float64)], axis=0)


def release_to_state(
    state: Mapping[str, np.ndarray], coords: np.ndarray, shapes: ReleaseShapes | None = None
) -> dict[str, np.ndarray]:
    """Our :class:`~napari_factortopy.core.model.FactorTopy` state dict from the release's.

    Parameters
    ----------
    state : dict str → array
        A checked release state dict (:func:`check_release_state`).
    coords : array of shape (V, 3)
        The modelled vertices' coordinates built the release's way
        (:func:`release_joint_coordinates`, indexed), in the checkpoint's row order.
    shapes : ReleaseShapes, optional
        Its sizes (checked again when omitted).

    Returns
    -------
    dict str → float32 array
        Our keys (``local_align.i.weight``, ``global_align.i.weight``,
        ``{space,layer,scale}_mlp.{0,2,4}.*``, ``beta``, ``bias``, ``coords``); the
        first selector layers' columns permuted into our encoding layout.
    """
    shapes = shapes or check_release_state(state)
    coords = np.asarray(coords, np.float64)
    if coords.shape != (shapes.n_vertices, 3):
        raise CheckpointError(
            f"coordinates: expected shape ({shapes.n_vertices}, 3), one row per vertex of "
            f"the checkpoint; found {coords.shape}"
        )

    def f32(k: str) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(state[k], np.float32))

    perm = encoding_permutation(shapes.n_freqs)
    out: dict[str, np.ndarray] = {"coords": coords.astype(np.float32)}
    for i, k in enumerate(shapes.layers):
        out[f"local_align.{i}.weight"] = f32(f"local_token_bottleneck.{k}.weight")
        out[f"global_align.{i}.weight"] = f32(f"global_token_bottleneck.{k}.weight")
    for name in _SELECTORS:
        src, dst = f"{name}_selector_mlp", f"{name}_mlp"
        out[f"{dst}.0.weight"] = np.ascontiguousarray(f32(f"{src}.1.weight")[:, perm])
        out[f"{dst}.0.bias"] = f32(f"{src}.1.bias")
        out[f"{dst}.2.weight"] = f32(f"{src}.3.weight")
        out[f"{dst}.2.bias"] = f32(f"{src}.3.bias")
        out[f"{dst}.4.weight"] = f32(f"{src}.5.weight")
    out["beta"] = f32("weight")
    out["bias"] = f32("bias")
    return out
