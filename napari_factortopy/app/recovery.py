"""How well fitted models recover a phantom's truth, and how consistent they are.

For any phantom (:func:`napari_factortopy.data.phantom.build_phantom` or a mismatch
phantom of :mod:`napari_factortopy.data.mismatch_phantom`):

- :func:`recovery_metrics`: layer agreement (exact and within ±1 layer, argmax of the
  fitted layer weights against the truth's argmax), receptive-field centre error
  (median Euclidean distance of the space selector from the truth's centre, in the
  grid units of [-1, 1] — the definition of :func:`napari_factortopy.app.demo.recovery_report`),
  scale error (mean absolute), hierarchy slope against the truth's (paper Table 2 on
  the ROI levels), mean confidence against the truth's (METHOD §4), all overall and
  per ROI.
- :func:`recovery_report`: those for a :class:`~napari_factortopy.core.fitted_model.FittedModel`
  on a :class:`~napari_factortopy.data.phantom.PhantomSubject`, with test R² against
  the truth's own R² on the same images.
- :func:`seed_consistency`: given several fitted models (different seeds), the share
  of vertices whose argmax layer agrees across all of them.
- :func:`markdown_table`: rows of numbers as a Markdown table.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "markdown_table",
    "recovery_metrics",
    "recovery_report",
    "seed_consistency",
]


def _truth_argmax(truth: dict) -> np.ndarray:
    from ..core.analyses import layer_argmax

    if "argmax" in truth:
        return np.asarray(truth["argmax"], np.int64)
    return layer_argmax(truth["layer"])


def _truth_confidence(truth: dict) -> np.ndarray:
    from ..core.analyses import confidence

    if "confidence" in truth:
        return np.asarray(truth["confidence"], np.float64)
    return confidence(truth["layer"])


def _slope(layer: np.ndarray, levels: np.ndarray) -> dict:
    from ..core.analyses import hierarchy_slope

    try:
        hs = hierarchy_slope(layer, levels)
    except ValueError:  # fewer than two levels present
        return {"slope": float("nan"), "intercept": float("nan"), "top": float("nan")}
    return {"slope": hs.slope, "intercept": hs.intercept, "top": hs.top}


def recovery_metrics(
    layer: np.ndarray,
    space: np.ndarray,
    scale: np.ndarray,
    truth: dict,
    roi: np.ndarray,
    roi_names: Sequence[str],
) -> dict:
    """Fitted selectors against the truth's.

    Parameters
    ----------
    layer : array of shape (V, L)
        Fitted layer weights.
    space : array of shape (V, 2)
        Fitted space selector ([-1, 1], x first).
    scale : array of shape (V,)
        Fitted global-token weight.
    truth : dict
        ``layer`` (V, L), ``space`` (V, 2), optionally ``scale`` (V,), ``argmax``
        (V,) and ``confidence`` (V,) (computed from ``layer`` when absent).
    roi : int array of shape (V,)
        ROI label per vertex (0 = none), ``roi_names[k − 1]`` names label k.
    roi_names : sequence of str

    Returns
    -------
    dict
        ``layer_exact``, ``layer_within1`` (shares of vertices), ``rf_error_median``,
        ``scale_error_mean`` (NaN without a truth scale), ``hierarchy`` /
        ``hierarchy_truth`` (``slope``, ``intercept``, ``top``), ``hierarchy_slope``,
        ``hierarchy_slope_truth``, ``confidence_mean``, ``confidence_truth_mean``,
        ``n_vertices`` and ``per_roi`` (name → the same shares and errors).
    """
    from ..core.analyses import confidence, hierarchy_levels, layer_argmax

    layer = np.asarray(layer, np.float64)
    t_layer = np.asarray(truth["layer"], np.float64)
    if layer.shape != t_layer.shape:
        raise ValueError(
            f"fitted layer weights {layer.shape} and the truth's {t_layer.shape} differ: "
            "fit the phantom's own layers"
        )
    fa = layer_argmax(layer)
    ta = _truth_argmax(truth)
    dist = np.abs(fa - ta)
    rf = np.linalg.norm(np.asarray(space, np.float64) - np.asarray(truth["space"]), axis=1)
    has_scale = "scale" in truth
    sc = (
        np.abs(np.asarray(scale, np.float64) - np.asarray(truth["scale"], np.float64))
        if has_scale
        else np.full(len(fa), np.nan)
    )
    conf = confidence(layer)
    t_conf = _truth_confidence(truth)
    roi = np.asarray(roi, np.int64)
    levels = hierarchy_levels(roi, list(roi_names))
    hs, hs_t = _slope(layer, levels), _slope(t_layer, levels)

    def block(m: np.ndarray) -> dict:
        if not m.any():
            return {"n_vertices": 0}
        return {
            "n_vertices": int(m.sum()),
            "layer_exact": float((dist[m] == 0).mean()),
            "layer_within1": float((dist[m] <= 1).mean()),
            "rf_error_median": float(np.median(rf[m])),
            "scale_error_mean": float(sc[m].mean()),
            "confidence_mean": float(conf[m].mean()),
            "confidence_truth_mean": float(t_conf[m].mean()),
            "layer_mean": float(fa[m].mean()),
            "layer_truth_mean": float(ta[m].mean()),
        }

    out = block(np.ones(len(fa), bool))
    out.update(
        {
            "hierarchy": hs,
            "hierarchy_truth": hs_t,
            "hierarchy_slope": hs["slope"],
            "hierarchy_slope_truth": hs_t["slope"],
            "per_roi": {name: block(roi == k) for k, name in enumerate(roi_names, start=1)},
        }
    )
    return out


def recovery_report(fitted, phantom, *, test: np.ndarray | None = None) -> dict:
    """:func:`recovery_metrics` of a fitted model on a phantom, with R².

    Parameters
    ----------
    fitted : FittedModel
        Trained on ``phantom`` (same vertices, same layers).
    phantom : PhantomSubject
        :func:`napari_factortopy.data.phantom.load_phantom`'s result.
    test : array of int, optional
        Test images (default: the model's own ``split["test"]``).

    Returns
    -------
    dict
        :func:`recovery_metrics`' keys plus ``r2_test_mean`` (the model's, from its
        scores), ``r2_truth_mean`` (the noise-free truth predicting the noisy responses
        of the test images: the attainable R²), ``r2_ratio``, ``steps``,
        ``train_seconds`` and ``convergence`` (the model summary's
        ``convergence.line`` when it has one, else None).
    """
    from ..core.metrics import r2_score

    if fitted.n_vertices != len(phantom.surface.vertex_ids) or not np.array_equal(
        fitted.vertex_ids, phantom.surface.vertex_ids
    ):
        raise ValueError(
            f"the model's {fitted.n_vertices} vertices are not the phantom's "
            f"{len(phantom.surface.vertex_ids)} ({phantom.root})"
        )
    out = recovery_metrics(
        fitted.layer,
        fitted.space,
        fitted.scale,
        phantom.truth,
        phantom.surface.roi,
        fitted.roi_names or list(_roi_names()),
    )
    if test is None:
        test = np.asarray(fitted.split.get("test", []), np.int64)
    test = np.asarray(test, np.int64)
    r2_model = fitted.scores.get("r2_test")
    out["r2_test_mean"] = float(np.nanmean(r2_model)) if r2_model is not None else float("nan")
    if len(test):
        r2_truth = float(np.nanmean(r2_score(phantom.responses[test], phantom.signal[test])))
    else:
        r2_truth = float("nan")
    out["r2_truth_mean"] = r2_truth
    out["r2_ratio"] = out["r2_test_mean"] / r2_truth if r2_truth else float("nan")
    summary = fitted.summary or {}
    out["steps"] = summary.get("steps")
    out["train_seconds"] = summary.get("train_seconds")
    conv = summary.get("convergence")
    out["convergence"] = conv.get("line") if isinstance(conv, dict) else None
    out["generator"] = getattr(phantom, "generator", "factortopy")
    return out


def _roi_names():
    from ..data.phantom import ROI_NAMES

    return ROI_NAMES


def seed_consistency(layers: Sequence[np.ndarray]) -> dict:
    """Agreement of the argmax layer across models fitted with different seeds.

    Parameters
    ----------
    layers : sequence of arrays of shape (V, L)
        Layer weights of two or more models of the same vertices.

    Returns
    -------
    dict
        ``all_exact``: share of vertices whose argmax is the same in every model;
        ``all_within1``: share whose argmaxes span at most one layer;
        ``pairwise_exact``: mean over model pairs of the share of agreeing vertices;
        ``n_models``.
    """
    from ..core.analyses import layer_argmax

    if len(layers) < 2:
        raise ValueError(f"seed consistency needs at least 2 models; found {len(layers)}")
    am = np.stack([layer_argmax(x) for x in layers])  # (M, V)
    if len({a.shape for a in am}) != 1:
        raise ValueError("the models' vertex counts differ")
    span = am.max(0) - am.min(0)
    pairs = [float((am[i] == am[j]).mean()) for i, j in combinations(range(len(am)), 2)]
    return {
        "all_exact": float((span == 0).mean()),
        "all_within1": float((span <= 1).mean()),
        "pairwise_exact": float(np.mean(pairs)),
        "n_models": len(am),
    }


def _cell(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if np.isnan(x):
            return "–"
        return f"{x:.3f}"
    return str(x).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table.

    Parameters
    ----------
    rows : sequence of dict
    columns : sequence of (header, key)
        Floats print with 3 decimals, None/NaN as "–".
    """
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(k)) for _, k in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])
