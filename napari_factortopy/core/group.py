"""Group maps: several subjects' (or seeds') models on one fsaverage mesh as one map.

Labs report group maps; the paper reports per-subject ones. :func:`combine_models`
stores K fitted models of the same mesh and backbone as one display-only model
(``kind="group"``) built like a seed ensemble (:mod:`.ensemble`), so that napari,
``factortopy info``, figures and the ROI table read it as they read any model:

- the modelled vertices are the **union** of the models' vertices (per hemisphere);
  ``n`` counts the models that fitted each vertex;
- the selectors are the models' means over the models present at a vertex (the layer
  rows renormalised to sum to 1): the group layer map is the mean of layer weights;
- ``agreement`` is the share of those models whose argmax layer equals the group's
  (the argmax of the mean weights), so the layer map darkens where subjects disagree;
- the scores are the models' mean (e.g. the mean test R²);
- ``ensemble`` keeps every model's selectors (``layer`` (K, V, L), ``space``
  (K, V, 2), ``scale`` (K, V); NaN where a model lacks the vertex) and the maps
  ``layer_agreement``, ``n``, ``space_spread``, ``scale_sd`` (V,);
- ``summary["group"]`` holds per-ROI group numbers with their spread across models
  (each model summarised on its own ROI labels) and the hierarchy slope (paper
  Table 2) as the mean of the models' slopes with a bootstrap interval across models.

Everything here is numpy; :func:`check_compatible` refuses models of other meshes,
backbones or methods with a message naming the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .analyses import (
    confidence,
    hierarchy_levels,
    hierarchy_slope,
    layer_argmax,
    layer_position,
)
from .fitted_model import KIND_GROUP

__all__ = [
    "GROUP_MAPS",
    "KIND_GROUP",
    "bootstrap_mean_interval",
    "check_compatible",
    "combine_models",
    "group_maps",
    "union_vertices",
]

#: Per-vertex maps a group file keeps in ``ensemble`` besides the selector stacks.
GROUP_MAPS = ("layer_agreement", "n", "space_spread", "scale_sd")


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


# ------------------------------------------------------------------- checks
def _method(model) -> str:
    from .ablations import ablation_name

    if model.kind != "factortopy":
        return str(model.kind)
    try:
        return ablation_name(model.config)
    except (KeyError, TypeError, ValueError):
        return "factortopy"


def check_compatible(models: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse models that cannot form one group map.

    All models must be FactorTopy models (not baselines, phantom truths or groups) of
    one method, on one mesh, with one backbone (name and layer names) — their layer
    maps then speak of the same layers on the same vertices.

    Raises
    ------
    ValueError
        ``"<file>: <what> <found>, expected <expected> (as <first file>)"``; also for
        fewer than two models.
    """
    if len(models) != len(names):
        raise ValueError(f"{len(models)} models but {len(names)} names")
    if len(models) < 2:
        raise ValueError(f"a group needs at least 2 models; found {len(models)}")
    first, ref = models[0], names[0]
    for m, name in zip(models, names, strict=True):
        if m.kind != "factortopy":
            raise ValueError(
                f"{name}: a {m.kind!r} file, expected a FactorTopy model (kind 'factortopy')"
            )
    want = {
        "mesh": lambda m: m.mesh,
        "backbone": lambda m: m.backbone.get("name"),
        "layers": lambda m: (
            list(m.backbone.get("layer_names") or [])
            or [f"layer {i + 1}" for i in range(m.n_layers)]
        ),
        "method": _method,
    }
    for m, name in zip(models[1:], names[1:], strict=True):
        for what, get in want.items():
            found, expected = get(m), get(first)
            if found != expected:
                raise ValueError(
                    f"{name}: {what} {found!r}, expected {expected!r} (as {ref}); a group "
                    "map needs models of one mesh, backbone and method"
                )


# ------------------------------------------------------------------- vertices
def union_vertices(models: Sequence[Any]) -> tuple[np.ndarray, int, np.ndarray]:
    """The union of the models' vertices, left hemisphere first, ids sorted.

    Returns
    -------
    vertex_ids : int array of shape (V,)
        Per-hemisphere vertex ids of the union (left hemisphere first).
    n_lh : int
        Left-hemisphere vertices of the union.
    rows : int array of shape (K, V)
        Row of each union vertex in model k, -1 where model k lacks it.
    """
    per_hemi = []
    for hemi in (0, 1):
        ids = [np.asarray(m.vertex_ids)[: m.n_lh] if hemi == 0
               else np.asarray(m.vertex_ids)[m.n_lh :] for m in models]  # fmt: skip
        per_hemi.append(np.unique(np.concatenate(ids)).astype(np.int64))
    vertex_ids = np.concatenate(per_hemi)
    n_lh = len(per_hemi[0])
    rows = np.full((len(models), len(vertex_ids)), -1, np.int64)
    for k, m in enumerate(models):
        ids = np.asarray(m.vertex_ids, np.int64)
        for (lo, hi), (ulo, uhi) in (
            ((0, m.n_lh), (0, n_lh)),
            ((m.n_lh, len(ids)), (n_lh, len(vertex_ids))),
        ):
            pos = np.searchsorted(vertex_ids[ulo:uhi], ids[lo:hi])
            rows[k, ulo + pos] = np.arange(lo, hi)
    return vertex_ids, n_lh, rows


# ------------------------------------------------------------------- maps
def group_maps(
    layers: np.ndarray, spaces: np.ndarray, scales: np.ndarray
) -> dict[str, np.ndarray]:
    """The group's selectors and per-vertex agreement from K models' selectors.

    Parameters
    ----------
    layers : array of shape (K, V, L)
        Each model's layer weights; a row of NaN where the model lacks the vertex.
    spaces : array of shape (K, V, 2)
        Each model's space point (NaN where absent).
    scales : array of shape (K, V)
        Each model's scale (NaN where absent).

    Returns
    -------
    dict
        ``layer`` (V, L): mean weights over the models present, renormalised to sum
        to 1; ``space`` (V, 2), ``scale`` (V,): means; ``n`` (V,): models present
        (a model is present where all its selectors are finite);
        ``layer_agreement`` (V,): share of the present models whose argmax layer is
        the argmax of ``layer`` (ties go to the lower layer); ``space_spread`` (V,):
        root-mean-square distance of the models' space points from their mean;
        ``scale_sd`` (V,): standard deviation of the scales (ddof 0). Vertices no
        model fitted are NaN (``n`` 0).
    """
    layers = np.asarray(layers, np.float64)
    spaces = np.asarray(spaces, np.float64)
    scales = np.asarray(scales, np.float64)
    if layers.ndim != 3:
        raise ValueError(f"layers must have shape (K, V, L); found {layers.shape}")
    k, v, _ = layers.shape
    if spaces.shape != (k, v, 2) or scales.shape != (k, v):
        raise ValueError(
            f"expected spaces ({k}, {v}, 2) and scales ({k}, {v}) for layers {layers.shape}; "
            f"found {spaces.shape} and {scales.shape}"
        )
    present = (
        np.isfinite(layers).all(2) & np.isfinite(spaces).all(2) & np.isfinite(scales)
    )  # (K, V)
    n = present.sum(0)
    w = present[..., None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_layer = np.where(present[..., None], layers, 0.0).sum(0) / n[:, None]
        mean_layer = mean_layer / mean_layer.sum(1, keepdims=True)
        space = np.where(present[..., None], spaces, 0.0).sum(0) / n[:, None]
        scale = np.where(present, scales, 0.0).sum(0) / n
        group_arg = np.argmax(np.nan_to_num(mean_layer, nan=-1.0), axis=1)  # (V,)
        own_arg = np.argmax(np.nan_to_num(layers, nan=-1.0), axis=2)  # (K, V)
        agree = ((own_arg == group_arg[None]) & present).sum(0) / n
        d2 = (np.where(present[..., None], spaces, 0.0) - space[None]) ** 2 * w
        spread = np.sqrt(d2.sum((0, 2)) / n)
        sd = np.sqrt((((np.where(present, scales, 0.0) - scale[None]) ** 2) * present).sum(0) / n)
    none = n == 0
    for arr in (agree, spread, sd, scale):
        arr[none] = np.nan
    mean_layer[none] = np.nan
    space[none] = np.nan
    return {
        "layer": mean_layer,
        "space": space,
        "scale": scale,
        "n": n.astype(np.int64),
        "layer_agreement": agree,
        "space_spread": spread,
        "scale_sd": sd,
    }


def bootstrap_mean_interval(
    values: Sequence[float], n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of a few numbers (models, subjects).

    Resamples the values with replacement ``n_boot`` times (seeded) and takes the
    ``(1 ± level) / 2`` quantiles of the resampled means. With K values there are only
    ``C(2K−1, K)`` distinct resamples (10 for K = 3), so the interval is coarse and
    narrower than a t-interval for small K: read it as a spread, not as exact coverage.

    Returns
    -------
    (lo, hi) : floats, or (None, None) with fewer than 2 finite values
    """
    x = np.asarray([v for v in values if v is not None], np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(int(n_boot), x.size))].mean(1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _members(models: Sequence[Any], names: Sequence[str]) -> list[dict]:
    """Each model's name, how its training ended (``summary["convergence"]["state"]``,
    "unknown" without a record) and why its selectors are degenerate (None when they
    are not; :func:`~.selector_check.model_selector_check`)."""
    from .selector_check import model_selector_check

    out = []
    for model, name in zip(models, names, strict=True):
        conv = (model.summary or {}).get("convergence") or {}
        check = model_selector_check(model) or {}
        out.append(
            {
                "name": str(name),
                "state": str(conv.get("state") or "unknown"),
                "degenerate": check.get("line"),
            }
        )
    return out


def _sd(x: Sequence[float]) -> float | None:
    a = np.asarray([v for v in x if v is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1)) if a.size >= 2 else None


def _mean(x: Sequence[float]) -> float | None:
    a = np.asarray([v for v in x if v is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _model_roi_numbers(model, score_key: str | None) -> dict[str, dict]:
    """One model's per-ROI means (its own ROI labels), finite vertices only."""
    pi = np.asarray(model.layer, np.float64)
    ok = np.isfinite(pi).all(1)
    safe = np.where(ok[:, None], pi, 1.0 / pi.shape[1])
    lam, conf = layer_position(safe), confidence(safe)
    score = None
    if score_key and score_key in model.scores:
        score = np.asarray(model.scores[score_key], np.float64)
    out = {}
    for k, name in enumerate(model.roi_names, start=1):
        msk = (np.asarray(model.roi) == k) & ok
        if not msk.any():
            continue
        s = None
        if score is not None and np.isfinite(score[msk]).any():
            s = float(np.nanmean(score[msk]))
        out[str(name)] = {
            "score": s,
            "layer_position": float(lam[msk].mean()),
            "confidence": float(conf[msk].mean()),
        }
    return out


def _model_slope(model) -> dict | None:
    try:
        hs = hierarchy_slope(
            np.where(np.isfinite(model.layer).all(1)[:, None], model.layer, 1.0 / model.n_layers),
            hierarchy_levels(np.where(np.isfinite(model.layer).all(1), model.roi, 0),
                             model.roi_names),
        )  # fmt: skip
    except ValueError:
        return None
    return {"slope": hs.slope, "intercept": hs.intercept}


def _group_roi(models, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """ROI label of each union vertex: the models' majority (by ROI name), 0 = none.

    Ties between names go to the name met first (models in order, labels in order);
    "none" wins only where more models leave the vertex unlabelled than name any ROI.
    """
    names: list[str] = []
    for m in models:
        for name in m.roi_names:
            if str(name) not in names:
                names.append(str(name))
    v = rows.shape[1]
    votes = np.zeros((v, len(names) + 1), np.int64)
    for k, m in enumerate(models):
        has = rows[k] >= 0
        lab = np.asarray(m.roi, np.int64)[rows[k, has]]
        table = np.array([0] + [names.index(str(n)) + 1 for n in m.roi_names], np.int64)
        np.add.at(votes, (np.flatnonzero(has), table[lab]), 1)
    named = votes[:, 1:]
    best = named.argmax(1) + 1
    top = named.max(1) if names else np.zeros(v, np.int64)
    roi = np.where((top > 0) & (top >= votes[:, 0]), best, 0) if names else np.zeros(v, np.int64)
    return roi.astype(np.int64), names


def _stack_models(models, rows: np.ndarray, n_layers: int):
    """The K models' selectors on the union of vertices (NaN where a model lacks a
    vertex) and each vertex's sphere position (from the first model that has it).

    Returns
    -------
    layers (K, V, L), spaces (K, V, 2), scales (K, V), coords (V, 3) : float64 arrays
    """
    k, v = rows.shape
    layers = np.full((k, v, n_layers), np.nan)
    spaces = np.full((k, v, 2), np.nan)
    scales = np.full((k, v), np.nan)
    coords = np.full((v, 3), np.nan)
    for i, m in enumerate(models):
        has = rows[i] >= 0
        r = rows[i, has]
        layers[i, has] = m.layer[r]
        spaces[i, has] = m.space[r]
        scales[i, has] = m.scale[r]
        new = has & ~np.isfinite(coords).all(1)  # the first model with a vertex places it
        coords[new] = np.asarray(m.state["coords"], np.float64)[rows[i, new]]
    return layers, spaces, scales, coords


def _mean_scores(models, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every score all models have, averaged per vertex over the models with a
    finite value there: (V,) float32, NaN where none has one."""
    k, v = rows.shape
    # mean scores over the models that have them (and a finite value there)
    scores = {}
    shared = set.intersection(*(set(m.scores) for m in models))
    for key in sorted(shared):
        stack = np.full((k, v), np.nan)
        for i, m in enumerate(models):
            has = rows[i] >= 0
            stack[i, has] = np.asarray(m.scores[key], np.float64)[rows[i, has]]
        ok = np.isfinite(stack)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(ok, stack, 0.0).sum(0) / ok.sum(0)
        scores[key] = mean.astype(np.float32)  # NaN where no model has a finite score
    return scores


def _roi_rows(models, roi: np.ndarray, roi_names: list[str], maps: dict, score_key: str):
    """``summary["group"]["roi"]``: per ROI the mean and SD across models of each
    model's own numbers (on its own ROI labels) and the group map's layer there."""
    n_layers = models[0].n_layers
    present = maps["n"] > 0
    # per-ROI numbers: each model on its own ROI labels, then mean and SD across models
    per_model = [_model_roi_numbers(m, score_key) for m in models]
    group_am = layer_argmax(np.where(present[:, None], maps["layer"], 1.0))
    layer_names = list(models[0].backbone.get("layer_names") or []) or [
        f"layer {i + 1}" for i in range(n_layers)
    ]
    roi_rows = []
    for lab, name in enumerate(roi_names, start=1):
        have = [p[name] for p in per_model if name in p]
        if not have:
            continue
        msk = (roi == lab) & present
        row = {"roi": name, "n_models": len(have), "n_vertices": int(msk.sum())}
        for key in ("score", "layer_position", "confidence"):
            vals = [h[key] for h in have]
            row[f"{key}_mean"] = _mean(vals)
            row[f"{key}_sd"] = _sd(vals)
        if msk.any():
            counts = np.bincount(group_am[msk], minlength=n_layers)
            row["layer"] = layer_names[int(np.argmax(counts))]
            row["layer_share"] = float(counts.max() / msk.sum())
            row["agreement"] = float(np.nanmean(maps["layer_agreement"][msk]))
        else:
            row.update({"layer": "", "layer_share": None, "agreement": None})
        roi_rows.append(row)
    return roi_rows


def _group_slope(models, n_boot: int, level: float, seed: int) -> dict:
    """``summary["group"]["hierarchy"]``: the mean of the models' hierarchy slopes
    (and intercepts) with percentile-bootstrap intervals across models."""
    slopes = [_model_slope(m) for m in models]
    sl = [s["slope"] if s else None for s in slopes]
    ic = [s["intercept"] if s else None for s in slopes]
    lo, hi = bootstrap_mean_interval(sl, n_boot, level, seed)
    ilo, ihi = bootstrap_mean_interval(ic, n_boot, level, seed)
    slope = {
        "slope": _mean(sl),
        "slope_lo": lo,
        "slope_hi": hi,
        "slope_sd": _sd(sl),
        "intercept": _mean(ic),
        "intercept_lo": ilo,
        "intercept_hi": ihi,
        "level": float(level),
        "n_boot": int(n_boot),
        "n_models": int(sum(s is not None for s in sl)),
        "per_model": sl,
        "intercept_per_model": ic,
        "method": "mean of the models' slopes; percentile bootstrap across models",
    }
    return slope


def combine_models(
    models: Sequence[Any],
    names: Sequence[str],
    *,
    score_key: str = "r2_test",
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Any:
    """One display-only :class:`~napari_factortopy.core.fitted_model.FittedModel` for K
    models of several subjects or seeds (see the module notes).

    Parameters
    ----------
    models : sequence of FittedModel, K >= 2
        FactorTopy models on one mesh with one backbone (:func:`check_compatible`).
    names : sequence of str
        What to call each model in messages and in ``summary["group"]["models"]``
        (e.g. its file name).
    score_key : str
        The score summarised per ROI (default ``r2_test``).
    n_boot, level, seed
        The bootstrap across models of the hierarchy slope
        (:func:`bootstrap_mean_interval`).

    Returns
    -------
    FittedModel
        ``kind="group"``; ``state`` holds only the sphere coordinates (nothing to run).
    """
    from .fitted_model import FittedModel

    check_compatible(models, names)
    vertex_ids, n_lh, rows = union_vertices(models)
    k, v = rows.shape
    n_layers = models[0].n_layers
    layers, spaces, scales, coords = _stack_models(models, rows, n_layers)
    maps = group_maps(layers, spaces, scales)
    # a vertex whose every model has non-finite selectors keeps NaN selectors
    # (FittedModel.missing greys it), but needs a position on the sphere
    coords = np.where(np.isfinite(coords), coords, 0.0)

    scores = _mean_scores(models, rows)
    roi, roi_names = _group_roi(models, rows)
    roi_rows = _roi_rows(models, roi, roi_names, maps, score_key)
    slope = _group_slope(models, n_boot, level, seed)
    n = maps["n"]
    members = _members(models, names)
    summary = {
        "group": {
            "models": [str(x) for x in names],
            "members": members,
            "n_models": int(k),
            "n_union": int(v),
            "n_all": int((n == k).sum()),
            "n_min": int(n.min()),
            "n_max": int(n.max()),
            "agreement_mean": _finite_or_none(np.nanmean(maps["layer_agreement"])),
            "score_key": score_key,
            "score_means": [_finite_or_none(m.summary.get(f"{score_key}_mean")) for m in models],
            "hierarchy": slope,
            "roi": roi_rows,
            "mesh": models[0].mesh,
        },
    }
    for key in ("r2_test", "r_test"):
        if key in scores and np.isfinite(scores[key]).any():
            summary[f"{key}_mean"] = float(np.nanmean(scores[key]))
    unfinished = [m["name"] for m in members if m["state"] in ("not_converged", "failed")]
    if unfinished:  # the group's maps average unfinished maps: they say so too
        summary["convergence"] = {
            "state": "not_converged",
            "stop_reason": "members",
            "line": f"{len(unfinished)} of {k} models in the group are unfinished "
            f"({', '.join(unfinished)})",
        }
    ensemble = {
        "layer": layers.astype(np.float32),
        "space": spaces.astype(np.float32),
        "scale": scales.astype(np.float32),
        **{key: np.asarray(maps[key], np.float32) for key in GROUP_MAPS},
    }
    first = models[0]
    return FittedModel(
        config=dict(first.config),
        state={"coords": coords.astype(np.float32)},
        space=maps["space"].astype(np.float32),
        layer=maps["layer"].astype(np.float32),
        scale=maps["scale"].astype(np.float32),
        vertex_ids=vertex_ids,
        n_lh=n_lh,
        mesh=first.mesh,
        roi=roi,
        roi_names=roi_names,
        backbone=dict(first.backbone),
        split={},
        history=[],
        scores=scores,
        summary=summary,
        kind=KIND_GROUP,
        extra={},
        ensemble=ensemble,
    )
