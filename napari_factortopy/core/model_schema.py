"""The ``.ftopy`` model file's schema: the file kinds and the checks loading runs.

:func:`validate_model_file` checks a loaded file (:mod:`.modelfile`) before a
:class:`~napari_factortopy.core.fitted_model.FittedModel` is built from it: every
metadata field's type and range, every tensor's dtype and shape (against the
vertex count V, the configuration's widths, bottleneck and selector sizes), vertex ids
within the mesh (fsaverage meshes) and unique per hemisphere, ROI labels within the
ROI names, split indices non-negative, unique and disjoint, selector values in their
ranges (space in [-1, 1], layer rows summing to 1, scale in [0, 1]). Any violation is a
:class:`~napari_factortopy.core.modelfile.ModelFileError` naming the file and the
field, never a later TypeError or IndexError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .modelfile import ModelFileError

__all__ = [
    "EVALUATION_MAPS",
    "FSAVERAGE_SIZES",
    "KINDS",
    "KIND_BASELINE",
    "KIND_GROUP",
    "KIND_MODEL",
    "KIND_TRUTH",
    "validate_model_file",
]

KIND_MODEL = "factortopy"
KIND_TRUTH = "phantom-truth"
#: A comparison method's maps (core/baselines.py, app/compare_methods.py): scores and
#: the maps the method has (e.g. ridge's best-layer profile as ``selectors/layer``);
#: display-only (no weights to run); ``extra["baseline"]["method"]`` names it.
KIND_BASELINE = "baseline"
#: Several subjects' or seeds' models as one map (core/group.py): display-only, its
#: ``state`` holds only the sphere coordinates; ``summary["group"]`` describes it.
KIND_GROUP = "group"
KINDS = (KIND_MODEL, KIND_TRUTH, KIND_BASELINE, KIND_GROUP)
#: Per-vertex test-set evaluations a model file may carry (``evaluation/<name>``):
#: the permutation p-value and FDR q-value of the score map (core/significance.py),
#: the per-layer split of R² (core/variance_split.py, shape (V, L)) and the standard
#: error of the RF location (core/rf_uncertainty.py; inf: unlocated).
EVALUATION_MAPS = ("p_value", "q_value", "r2_split", "space_se")

#: Vertices per hemisphere of the fsaverage meshes (icosahedron order k: 10·4^k + 2).
FSAVERAGE_SIZES: Mapping[str, int] = {
    **{f"fsaverage{k}": 10 * 4**k + 2 for k in range(3, 7)},
    "fsaverage": 10 * 4**7 + 2,
}


# ------------------------------------------------------------------ schema


class _Bad(Exception):
    """One schema violation: the field and what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _need(meta: Mapping, key: str, where: str, kind: type | tuple, what: str) -> Any:
    if key not in meta:
        raise _Bad(f"{where}[{key!r}]", f"missing (expected {what})")
    value = meta[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    ok = ok and not isinstance(value, bool)
    if not ok:
        raise _Bad(f"{where}[{key!r}]", f"expected {what}, found {value!r}")
    return value


def _int_at_least(meta: Mapping, key: str, where: str, low: int) -> int:
    value = _need(meta, key, where, int, f"an int >= {low}")
    if value < low:
        raise _Bad(f"{where}[{key!r}]", f"expected an int >= {low}, found {value!r}")
    return value


def _str_list(meta: Mapping, key: str, where: str, *, unique: bool = False) -> list[str]:
    value = _need(meta, key, where, list, "a list of str")
    if not all(isinstance(x, str) for x in value):
        raise _Bad(f"{where}[{key!r}]", f"expected a list of str, found {value!r}")
    if unique and len(set(value)) != len(value):
        raise _Bad(f"{where}[{key!r}]", f"expected unique names, found {value!r}")
    return value


def _tensor(
    tensors: Mapping[str, np.ndarray], name: str, kinds: str, shape: tuple, *, required=True
) -> np.ndarray | None:
    if name not in tensors:
        if required:
            raise _Bad(f"tensor {name!r}", f"missing (expected shape {shape})")
        return None
    arr = tensors[name]
    what = {"f": "float", "iu": "integer", "b": "bool"}.get(kinds, kinds)
    if arr.dtype.kind not in kinds:
        raise _Bad(f"tensor {name!r}", f"expected a {what} array, found dtype {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise _Bad(f"tensor {name!r}", f"expected shape {tuple(shape)}, found {tuple(arr.shape)}")
    return arr


def _expected_state(cfg: Mapping, v: int) -> dict[str, tuple[int, ...]]:
    """Shapes of a FactorTopy state dict (without the recomputed ``encoding``),
    ablations included (config fields ``topology``, ``select_*``, ``space_samples``:
    an unselected factor has no weights, without topology a selected one is a free
    ``<factor>_free`` (V, k) parameter instead of an MLP)."""
    d, hid = cfg["bottleneck"], cfg["hidden"]
    n_enc = 6 * cfg["n_freqs"]  # encoding_dim: 3 axes × n_freqs × (sin, cos)
    out: dict[str, tuple[int, ...]] = {"coords": (v, 3), "beta": (v, d), "bias": (v,)}
    for i, c in enumerate(cfg["widths"]):
        out[f"local_align.{i}.weight"] = (d, c, 1, 1)
        out[f"global_align.{i}.weight"] = (d, c)
    factors = (
        ("space", "select_space", 2 * cfg.get("space_samples", 1)),
        ("layer", "select_layer", len(cfg["widths"])),
        ("scale", "select_scale", 1),
    )
    for name, selected, n_out in factors:
        if not cfg.get(selected, True):
            continue
        if not cfg.get("topology", True):
            out[f"{name}_free"] = (v, n_out)
            continue
        mlp = f"{name}_mlp"
        out[f"{mlp}.0.weight"] = (hid, n_enc)
        out[f"{mlp}.0.bias"] = (hid,)
        out[f"{mlp}.2.weight"] = (hid, hid)
        out[f"{mlp}.2.bias"] = (hid,)
        out[f"{mlp}.4.weight"] = (n_out, hid)
    return out


def _check_meta(meta: Mapping[str, Any]) -> None:
    top = "metadata"
    kinds = " or ".join(repr(k) for k in KINDS)
    kind = _need(meta, "kind", top, str, kinds)
    if kind not in KINDS:
        raise _Bad("metadata['kind']", f"expected {kinds}, found {kind!r}")
    for key in ("created", "software"):
        if key in meta and not isinstance(meta[key], str):
            raise _Bad(f"metadata[{key!r}]", f"expected a str, found {meta[key]!r}")
    cfg = _need(meta, "config", top, dict, "a dict (the FactorTopyConfig)")
    w = "config"
    widths = _need(cfg, "widths", w, list, "a list of ints >= 1")
    if not widths or not all(_is_int(c) and c >= 1 for c in widths):
        raise _Bad("config['widths']", f"expected a non-empty list of ints >= 1, found {widths!r}")
    grid = _need(cfg, "grid", w, list, "[h, w], two ints >= 1")
    if len(grid) != 2 or not all(_is_int(g) and g >= 1 for g in grid):
        raise _Bad("config['grid']", f"expected [h, w], two ints >= 1, found {grid!r}")
    for key in ("bottleneck", "hidden", "n_freqs"):
        _int_at_least(cfg, key, w, 1)
    period = _need(cfg, "max_period", w, (int, float), "a positive number")
    if not _is_number(period) or period <= 0:
        raise _Bad("config['max_period']", f"expected a positive number, found {period!r}")
    if "extra" in cfg and not isinstance(cfg["extra"], dict):
        raise _Bad("config['extra']", f"expected a dict, found {cfg['extra']!r}")
    for key in ("topology", "select_layer", "select_space", "select_scale"):  # ablations
        if key in cfg and not isinstance(cfg[key], bool):
            raise _Bad(f"config[{key!r}]", f"expected true or false, found {cfg[key]!r}")
    if "space_samples" in cfg:
        _int_at_least(cfg, "space_samples", w, 1)
    subj = _need(meta, "subject", top, dict, "a dict (mesh, n_lh, roi_names)")
    mesh = _need(subj, "mesh", "subject", str, "a mesh name or folder (str)")
    if not mesh:
        raise _Bad("subject['mesh']", "expected a mesh name or folder, found ''")
    _int_at_least(subj, "n_lh", "subject", 0)
    _str_list(subj, "roi_names", "subject")
    bb = _need(meta, "backbone", top, dict, "a dict (name, layer_names, widths, ...)")
    if bb:
        _need(bb, "name", "backbone", str, "the backbone's name (str)")
        if "layer_names" in bb:
            names = _str_list(bb, "layer_names", "backbone", unique=True)
            if len(names) != len(widths):
                raise _Bad(
                    "backbone['layer_names']",
                    f"expected {len(widths)} names (one per config width), found {names!r}",
                )
        if "widths" in bb and bb["widths"] != widths:
            raise _Bad(
                "backbone['widths']", f"expected {widths!r} (config), found {bb['widths']!r}"
            )
        for key in ("preprocessing", "source"):
            if key in bb and not isinstance(bb[key], dict):
                raise _Bad(f"backbone[{key!r}]", f"expected a dict, found {bb[key]!r}")
    split = _need(meta, "split", top, dict, "a dict (seed, fractions)")
    if "seed" in split and not _is_int(split["seed"]):
        raise _Bad("split['seed']", f"expected an int, found {split['seed']!r}")
    if "n" in split and not (_is_int(split["n"]) and split["n"] >= 0):
        raise _Bad("split['n']", f"expected an int >= 0, found {split['n']!r}")
    if "fractions" in split:
        fr = split["fractions"]
        if (
            not isinstance(fr, list)
            or len(fr) != 3
            or not all(_is_number(f) and f >= 0 for f in fr)
            or abs(sum(fr) - 1) > 1e-6
        ):
            raise _Bad("split['fractions']", f"expected 3 numbers >= 0 summing to 1, found {fr!r}")
    history = _need(meta, "history", top, list, "a list of dicts")
    if not all(isinstance(h, dict) for h in history):
        raise _Bad("metadata['history']", "expected a list of dicts, found other items")
    _check_summary(_need(meta, "summary", top, dict, "a dict"))
    extra = _need(meta, "extra", top, dict, "a dict")
    for key, kind in (("recipe", dict), ("train_config", dict), ("dataset", dict),
                      ("phantom", str), ("cache", str)):  # fmt: skip
        if key in extra and not isinstance(extra[key], kind):
            raise _Bad(f"extra[{key!r}]", f"expected a {kind.__name__}, found {extra[key]!r}")
    if "name" in extra.get("recipe", {}) and not isinstance(extra["recipe"]["name"], str):
        raise _Bad("extra['recipe']['name']", f"expected a str, found {extra['recipe']['name']!r}")


def _number_or_null(where: str, value: Any) -> None:
    if value is not None and not _is_number(value):
        raise _Bad(where, f"expected a number or null, found {value!r}")


def _check_summary(s: Mapping[str, Any]) -> None:
    """The summary entries that ``factortopy info``, napari and figures read."""
    for key in ("r2_test_mean", "r_test_mean", "nc_test_mean", "train_seconds", "val_score"):
        if key in s:
            _number_or_null(f"summary[{key!r}]", s[key])
    nc = s.get("noise_ceiling")
    if nc is not None:
        if not isinstance(nc, dict) or not isinstance(nc.get("source"), str):
            raise _Bad("summary['noise_ceiling']", f"expected a dict with a source, found {nc!r}")
        _number_or_null("summary['noise_ceiling']['mean_percent']", nc.get("mean_percent"))
    typed = (
        ("steps", int, "an int"),
        ("epochs", int, "an int"),
        ("device", str, "a str"),
        ("soup_members", list, "a list"),
        ("diverged", bool, "true or false"),
        ("convergence", dict, "a dict"),
        ("ensemble", dict, "a dict"),
        ("calibration", dict, "a dict"),
        ("group", dict, "a dict"),
        ("evaluation", dict, "a dict"),
    )
    for key, kind, what in typed:
        if key not in s:
            continue
        ok = _is_int(s[key]) if kind is int else isinstance(s[key], kind)
        if not ok:
            raise _Bad(f"summary[{key!r}]", f"expected {what}, found {s[key]!r}")
    conv = s.get("convergence", {})
    for key in ("state", "reason", "line"):
        if key in conv and not isinstance(conv[key], str):
            raise _Bad(f"summary['convergence'][{key!r}]", f"expected a str, found {conv[key]!r}")
    ens = s.get("ensemble")
    if ens is not None:
        w = "summary['ensemble']"
        seeds = _need(ens, "seeds", w, list, "a list of ints")
        if not all(_is_int(x) for x in seeds):
            raise _Bad(f"{w}['seeds']", f"expected a list of ints, found {seeds!r}")
        _need(ens, "weights_from_seed", w, int, "an int")
        _number_or_null(f"{w}['layer_agreement_mean']", ens.get("layer_agreement_mean"))
        rows = ens.get("roi", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _Bad(f"{w}['roi']", f"expected a list of dicts, found {rows!r}")
        for i, row in enumerate(rows):
            _need(row, "roi", f"{w}['roi'][{i}]", str, "the ROI name (str)")
            for key in ("layer_agreement", "space_spread", "scale_sd"):
                _number_or_null(f"{w}['roi'][{i}][{key!r}]", row.get(key))
    _check_group_summary(s.get("group"))
    _check_evaluation_summary(s.get("evaluation"))


def _check_group_summary(g: Mapping[str, Any] | None) -> None:
    """``summary["group"]`` of a group file (core/group.py): what info and napari read."""
    if g is None:
        return
    w = "summary['group']"
    models = _str_list(g, "models", w)
    n = _int_at_least(g, "n_models", w, 2)
    if len(models) != n:
        raise _Bad(f"{w}['models']", f"expected {n} names (n_models), found {len(models)}")
    for key in ("agreement_mean",):
        _number_or_null(f"{w}[{key!r}]", g.get(key))
    hier = g.get("hierarchy", {})
    if not isinstance(hier, dict):
        raise _Bad(f"{w}['hierarchy']", f"expected a dict, found {hier!r}")
    for key in ("slope", "slope_lo", "slope_hi", "slope_sd", "intercept", "level"):
        _number_or_null(f"{w}['hierarchy'][{key!r}]", hier.get(key))
    rows = g.get("roi", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _Bad(f"{w}['roi']", f"expected a list of dicts, found {rows!r}")
    for i, row in enumerate(rows):
        _need(row, "roi", f"{w}['roi'][{i}]", str, "the ROI name (str)")
        _int_at_least(row, "n_models", f"{w}['roi'][{i}]", 1)
        for key in ("score_mean", "score_sd", "layer_position_mean", "layer_position_sd",
                    "confidence_mean", "confidence_sd", "agreement"):  # fmt: skip
            _number_or_null(f"{w}['roi'][{i}][{key!r}]", row.get(key))


def _check_evaluation_summary(e: Mapping[str, Any] | None) -> None:
    """``summary["evaluation"]`` (``factortopy evaluate``): the null's settings."""
    if e is None:
        return
    w = "summary['evaluation']"
    if "permutations" in e:
        _int_at_least(e, "permutations", w, 1)
    alpha = e.get("alpha")
    if alpha is not None and not (_is_number(alpha) and 0 < alpha < 1):
        raise _Bad(f"{w}['alpha']", f"expected a number in (0, 1), found {alpha!r}")
    for key in ("score", "fdr"):
        if key in e and not isinstance(e[key], str):
            raise _Bad(f"{w}[{key!r}]", f"expected a str, found {e[key]!r}")


def _check_ensemble(tensors: Mapping[str, np.ndarray], v: int, n_layers: int) -> None:
    """A seed ensemble's tensors: all three selector stacks with one K, (V,) maps."""
    names = [n for n in tensors if n.startswith("ensemble/")]
    if not names:
        return
    stacks = ("ensemble/layer", "ensemble/space", "ensemble/scale")
    missing = [n for n in stacks if n not in tensors]
    if missing:
        raise _Bad(f"tensor {missing[0]!r}", "missing (a seed ensemble stores all three stacks)")
    k = int(np.shape(tensors["ensemble/layer"])[0])
    if k < 2:
        raise _Bad("tensor 'ensemble/layer'", f"expected >= 2 seeds, found {k}")
    _tensor(tensors, "ensemble/layer", "f", (k, v, n_layers))
    _tensor(tensors, "ensemble/space", "f", (k, v, 2))
    _tensor(tensors, "ensemble/scale", "f", (k, v))
    for name in names:
        if name not in stacks:
            _tensor(tensors, name, "f", (v,))


def _repeats(values: np.ndarray) -> bool:
    """Whether a 1-D array holds a value twice (a sort; ``np.unique`` would import
    ``numpy.ma``, a fifth of ``factortopy info``'s time on a 37,984-vertex model)."""
    s = np.sort(values, kind="stable")
    return bool(s.size > 1 and (s[1:] == s[:-1]).any())


def _check_tensors(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    cfg, subj = meta["config"], meta["subject"]
    n_layers = len(cfg["widths"])
    if "subject/vertex_ids" not in tensors:
        raise _Bad("tensor 'subject/vertex_ids'", "missing (expected shape (V,))")
    ids = tensors["subject/vertex_ids"]
    if ids.ndim != 1:
        raise _Bad("tensor 'subject/vertex_ids'", f"expected shape (V,), found {ids.shape}")
    v = ids.shape[0]
    ids = _tensor(tensors, "subject/vertex_ids", "iu", (v,))
    n_lh = subj["n_lh"]
    if n_lh > v:
        raise _Bad("subject['n_lh']", f"expected 0..{v} (V vertices), found {n_lh}")
    size = FSAVERAGE_SIZES.get(subj["mesh"])
    for hemi, part in (("lh", ids[:n_lh]), ("rh", ids[n_lh:])):
        if part.size and (int(part.min()) < 0 or (size is not None and int(part.max()) >= size)):
            bad = part[(part < 0) | (part >= (size or np.iinfo(np.int64).max))]
            rng = f"0..{size - 1}" if size else ">= 0"
            raise _Bad(
                "tensor 'subject/vertex_ids'",
                f"{hemi} ids must lie in {rng} (mesh {subj['mesh']}), found {bad[:5].tolist()}",
            )
        if _repeats(part):
            raise _Bad("tensor 'subject/vertex_ids'", f"{hemi} ids repeat a vertex")
    roi = _tensor(tensors, "subject/roi", "iu", (v,))
    n_roi = len(subj["roi_names"])
    if roi.size and (int(roi.min()) < 0 or int(roi.max()) > n_roi):
        raise _Bad(
            "tensor 'subject/roi'",
            f"labels must lie in 0..{n_roi} (roi_names has {n_roi}), found "
            f"{int(roi.min())}..{int(roi.max())}",
        )
    space = _tensor(tensors, "selectors/space", "f", (v, 2))
    layer = _tensor(tensors, "selectors/layer", "f", (v, n_layers))
    scale = _tensor(tensors, "selectors/scale", "f", (v,))
    tol = 1e-3
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(space).all(1) & np.isfinite(layer).all(1) & np.isfinite(scale)
        if (np.abs(space[ok]) > 1 + tol).any():
            raise _Bad("tensor 'selectors/space'", "expected values in [-1, 1] (tanh outputs)")
        if (layer[ok] < -tol).any() or (np.abs(layer[ok].sum(1) - 1) > tol).any():
            raise _Bad("tensor 'selectors/layer'", "expected rows of weights >= 0 summing to 1")
        if ((scale[ok] < -tol) | (scale[ok] > 1 + tol)).any():
            raise _Bad("tensor 'selectors/scale'", "expected values in [0, 1] (sigmoid outputs)")
    shapes = _expected_state(cfg, v)
    state = {k[6:] for k in tensors if k.startswith("state/")}
    for key in sorted(state - set(shapes)):
        raise _Bad(f"tensor 'state/{key}'", "not a FactorTopy weight (unexpected tensor)")
    for key, shape in shapes.items():
        # coords and beta are needed to show a model; display-only files (previews,
        # synthetic models) may lack the rest, which to_module then asks for.
        needed = ("coords",) if meta["kind"] == KIND_GROUP else ("coords", "beta")
        arr = _tensor(tensors, f"state/{key}", "f", shape, required=key in needed)
        if arr is None:
            continue
        if key not in ("beta", "bias") and not np.isfinite(arr).all():
            raise _Bad(f"tensor 'state/{key}'", "non-finite values in a shared weight")
    parts = {}
    for k in ("train", "val", "test"):
        arr = tensors.get(f"split/{k}")
        if arr is None:
            continue
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise _Bad(
                f"tensor 'split/{k}'",
                f"expected a 1-D integer array, found {arr.dtype} {arr.shape}",
            )
        n = meta["split"].get("n")
        if arr.size and (int(arr.min()) < 0 or (n is not None and int(arr.max()) >= n)):
            raise _Bad(
                f"tensor 'split/{k}'",
                f"indices must lie in 0..{'' if n is None else n - 1}, found "
                f"{int(arr.min())}..{int(arr.max())}",
            )
        if _repeats(arr):
            raise _Bad(f"tensor 'split/{k}'", "repeats an index")
        parts[k] = arr
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if _repeats(np.concatenate([parts[a], parts[b]])):  # each part is repeat-free
                raise _Bad(f"tensor 'split/{b}'", f"shares indices with split/{a}")
    _check_ensemble(tensors, v, n_layers)
    if meta["kind"] == KIND_GROUP and "ensemble/n" not in tensors:
        raise _Bad("tensor 'ensemble/n'", "missing (a group file counts the models per vertex)")
    for name in tensors:
        if name.startswith("scores/"):
            _tensor(tensors, name, "f", (v,))
        elif name.startswith("evaluation/"):
            key = name[11:]
            if key not in EVALUATION_MAPS:
                raise _Bad(f"tensor {name!r}", f"expected one of {EVALUATION_MAPS}")
            _tensor(tensors, name, "f", (v, n_layers) if key == "r2_split" else (v,))
        elif not name.startswith(
            ("state/", "selectors/", "subject/", "split/", "ensemble/", "evaluation/")
        ):
            raise _Bad(f"tensor {name!r}", "not part of a FactorTopy model file")


def validate_model_file(
    path: Any, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Check a loaded ``.ftopy`` file against the model schema (module docstring).

    Parameters
    ----------
    path : path
        For messages.
    tensors : dict of str → numpy.ndarray
        As :func:`~napari_factortopy.core.modelfile.load_ftopy` returns them.
    meta : dict
        The metadata.

    Raises
    ------
    ModelFileError
        ``"<path>: not a valid FactorTopy model file: <field>: expected …, found …"``.
    """
    if not any(k.startswith("selectors/") for k in tensors) and "config" not in meta:
        raise ModelFileError(
            f"{path}: not a FactorTopy model; missing the selectors/* tensors and the "
            "config/subject metadata"
        )
    try:
        _check_meta(meta)
        _check_tensors(tensors, meta)
    except _Bad as exc:
        raise ModelFileError(f"{path}: not a valid FactorTopy model file: {exc}") from None
