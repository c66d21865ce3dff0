"""A fitted model's maps checked on its test split: which vertices are above chance
(permutation null, FDR) and which layer carries each vertex's explained variance.

:func:`evaluate_model` predicts the test rows once, keeping each layer's additive part
of the prediction (:func:`~napari_factortopy.core.variance_split.layer_contributions`),
then

- splits each vertex's test R² over the layers
  (:class:`~napari_factortopy.core.variance_split.R2Split`), and
- tests the score map against a permutation null (shuffled image order of the
  predictions against the responses,
  :func:`~napari_factortopy.core.significance.permutation_pvalues`) with
  Benjamini–Hochberg FDR control.

The results go into the model file (``evaluation/p_value``, ``evaluation/q_value``,
``evaluation/r2_split`` and ``summary["evaluation"]``); napari and figures then grey
the vertices that are not significant and offer the ``R² layer`` map. It is one
generator of progress records, like training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

__all__ = ["evaluate_model", "evaluation_inputs", "roi_evaluation"]


def evaluation_inputs(model, model_path=None, *, source: dict | None = None, **options):
    """The :class:`~napari_factortopy.app.inputs.TrainingInputs` a model was trained on.

    Parameters
    ----------
    model : FittedModel
    model_path : path, optional
        The model file: a data folder moved with it is found beside it.
    source : dict, optional
        ``{"phantom": DIR}`` or ``{"dataset": Dataset}`` (and ``cache``) as for
        :func:`~napari_factortopy.app.inputs.training_inputs`; default the model's own
        record (``extra["dataset"]``) when it is a phantom or a dataset folder.
    **options
        ``cache``, ``device``, ``subjects_dir``, ``allow_download``, ``memory_limit``.

    Raises
    ------
    ValueError
        No source is known, or the inputs are not the model's (other vertices, fewer
        rows than its split), naming what differs.
    """
    from ..data.stimuli import resolve_dataset
    from .inputs import training_inputs

    source = dict(source or {})
    if not source:
        rec = resolve_dataset(dict(model.extra.get("dataset") or {}), model_path)
        kind = rec.get("kind")
        if rec.get("missing"):
            raise ValueError(
                f"the model's data ({', '.join(rec['missing'])}) is not on this machine; "
                "give --phantom DIR or --dataset PATH (and --cache)"
            )
        if kind == "phantom" and rec.get("root"):
            source = {"phantom": rec["root"]}
        elif kind in ("algonauts", "nsd", "folder") and rec.get("root"):
            from ..data.datasets import load_dataset

            source = {"dataset": load_dataset(rec["root"], kind)}
        else:
            raise ValueError(
                f"the model does not record a phantom or dataset folder (kind {kind!r}); "
                "give --phantom DIR or --dataset PATH (and --cache)"
            )
        if options.get("cache") is None and rec.get("cache"):
            options["cache"] = rec["cache"]
    cache = options.pop("cache", None)
    inputs = training_inputs(cache, **source, **options)
    subj = inputs.subject
    if subj.n_vertices != model.n_vertices or not np.array_equal(
        np.asarray(subj.vertex_ids), np.asarray(model.vertex_ids)
    ) or int(subj.n_lh) != int(model.n_lh):  # fmt: skip
        raise ValueError(
            f"these responses cover {subj.n_vertices} vertices ({subj.n_lh} lh), the model "
            f"{model.n_vertices} ({model.n_lh} lh), or other ones: not the data the model "
            "was trained on (pass the dataset options used for training)"
        )
    test = np.asarray(model.split.get("test", []), np.int64)
    n_rec = model.split.get("n")
    if test.size == 0:
        raise ValueError("the model records no test split: nothing to evaluate on")
    if (n_rec is not None and int(n_rec) != len(inputs.responses)) or test.max() >= len(
        inputs.responses
    ):
        raise ValueError(
            f"the model's split covers {n_rec if n_rec is not None else '>' + str(test.max())}"
            f" response rows, these inputs have {len(inputs.responses)}: not the model's data"
        )
    return inputs


def evaluate_model(
    model,
    inputs,
    *,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    batch_size: int = 64,
    device: Any = "cpu",
) -> Iterator[dict]:
    """Test-split evaluation of a fitted model, as a generator of progress records.

    Yields ``{"kind": "predict", "done": i, "total": n}`` per batch, one
    ``{"kind": "permute", "permutations": P}`` and finally
    ``{"kind": "done", "model": FittedModel, "line": str}``: the model with
    ``evaluation`` (``p_value``, ``q_value`` (V,), ``r2_split`` (V, L)) and
    ``summary["evaluation"]``.

    Parameters
    ----------
    model : FittedModel
        A FactorTopy model (or a phantom's truth) with weights; a seed ensemble is
        evaluated with the weights it keeps (its best seed).
    inputs : TrainingInputs
        :func:`evaluation_inputs`.
    n_permutations : int
        Shuffles of the null (the smallest p is ``1 / (1 + P)``).
    alpha : float
        The FDR level the display greys at.
    """
    from ..core.metrics import r2_score
    from ..core.rf_uncertainty import UNLOCATED_SE
    from ..core.significance import (
        benjamini_hochberg,
        permutation_pvalues,
        significance_summary,
    )

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); found {alpha}")
    if model.kind not in ("factortopy", "phantom-truth"):
        raise ValueError(f"a {model.kind!r} file cannot be evaluated (it has no weights to run)")
    rows = np.asarray(model.split["test"], np.int64)
    pred, y, acc, rf, bias = yield from _test_predictions(model, inputs, rows, batch_size, device)
    split, offset = acc.result(bias)
    space_se = rf.result() if rf is not None else None
    hierarchy_r2 = _r2_slope(split, model.roi, model.roi_names)
    yield {"kind": "permute", "permutations": int(n_permutations)}
    groups = np.asarray(inputs.image_index)[rows]
    null = permutation_pvalues(y, pred, n_permutations, groups=groups, seed=seed)
    p = null["p_value"]
    q = benjamini_hochberg(p)
    r2 = r2_score(y, pred)
    counts = significance_summary(p, q, alpha)
    recorded = model.scores.get("r2_test")
    drift = None
    if recorded is not None and np.shape(recorded) == r2.shape:
        both = np.isfinite(recorded) & np.isfinite(r2)
        drift = (
            float(np.max(np.abs(np.asarray(recorded)[both] - r2[both]))) if both.any() else None
        )
    names = list(model.backbone.get("layer_names") or []) or [
        f"layer {i + 1}" for i in range(model.n_layers)
    ]
    summary = {
        "score": "r_test (Pearson r; with equal repeats the same p as R²)",
        "permutations": int(n_permutations),
        "alpha": float(alpha),
        "fdr": "Benjamini-Hochberg",
        "seed": int(seed),
        "test_images": len(np.unique(groups)),
        "test_rows": len(rows),
        "p_min": 1.0 / (1.0 + n_permutations),
        **counts,
        "r2_offset_mean": _mean(offset),
        "r2_split_mean": [_mean(split[:, i]) for i in range(model.n_layers)],
        "r2_recomputed_max_difference": drift,
        "hierarchy_r2": hierarchy_r2,
        "roi": roi_evaluation(split, q, alpha, model.roi, model.roi_names, names, space_se),
    }
    if space_se is not None:
        summary["rf"] = {
            "unlocated_se": UNLOCATED_SE,
            "n_unlocated": int((space_se >= UNLOCATED_SE).sum()),
            "se_median": float(np.median(space_se)),  # inf (JSON null): most unlocated
            "method": "Laplace: sqrt(trace(σ² (JᵀJ)⁻¹)), J = ∂ŷ/∂space over the test images, "
            "other parameters fixed (a lower bound)",
        }
    out = replace(
        model,
        summary={**model.summary, "evaluation": summary},
        evaluation={
            "p_value": p.astype(np.float32),
            "q_value": q.astype(np.float32),
            "r2_split": split.astype(np.float32),
            **({} if space_se is None else {"space_se": space_se.astype(np.float32)}),
        },
    )
    share = counts["share_significant"]
    line = (
        f"{counts['n_significant']} of {counts['n_tested']} vertices significant at FDR "
        f"{alpha:g} ({_pct(share)}; {counts['n_significant_uncorrected']} uncorrected at "
        f"p ≤ {alpha:g}), {n_permutations} permutations of {summary['test_images']} test "
        "images"
    )
    yield {"kind": "done", "model": out, "line": line}


def _test_predictions(model, inputs, rows: np.ndarray, batch_size: int, device: Any):
    """Predict the test ``rows`` batch by batch, yielding a "predict" record after each.

    Returns
    -------
    pred, y : arrays (n, V)
        The predictions and the responses (float64).
    acc : R2Split
        Each layer's additive part of the predictions, accumulated.
    rf : RFUncertainty or None
        The RF standard errors' accumulator (None: not one space point per vertex).
    bias : array (V,)
    """
    import torch

    from ..core.rf_uncertainty import RFUncertainty, space_jacobian
    from ..core.variance_split import R2Split, layer_contributions

    module = model.to_module(device).eval()
    y = np.asarray(inputs.responses, np.float64)[rows]
    pred = np.empty_like(y)
    acc = R2Split(model.n_layers, model.n_vertices)
    bias = module.bias.detach().double().cpu().numpy()
    with torch.no_grad():
        sel = model.fixed_selectors(device) if model.kind == "phantom-truth" else None
        sel = module.selectors() if sel is None else sel
        # the RF's standard error, where the model has one space point per vertex
        rf = RFUncertainty(model.n_vertices) if _one_point(module, sel) else None
        for lo in range(0, len(rows), batch_size):
            part = rows[lo : lo + batch_size]
            loc, glo = inputs.features.get(part)
            parts = layer_contributions(module, loc, glo, sel).double().cpu().numpy()
            batch_pred = parts.sum(0) + bias
            pred[lo : lo + len(part)] = batch_pred
            acc.add(y[lo : lo + len(part)], parts)
            if rf is not None:
                jac = space_jacobian(module, loc, glo, sel).double().cpu().numpy()
                rf.add(y[lo : lo + len(part)], batch_pred, jac)
            yield {"kind": "predict", "done": lo + len(part), "total": len(rows)}
    return pred, y, acc, rf, bias


def _r2_slope(split: np.ndarray, roi: np.ndarray, roi_names: list[str]) -> dict | None:
    """The hierarchy slope of the R²-weighted layer map (vertices with positive R²)."""
    from ..core.analyses import hierarchy_levels, hierarchy_slope
    from ..core.variance_split import r2_layer_weights

    w = r2_layer_weights(split)
    ok = np.isfinite(w).all(1)
    levels = np.where(ok, hierarchy_levels(roi, roi_names), 0)
    try:
        hs = hierarchy_slope(np.where(ok[:, None], w, 1.0 / w.shape[1]), levels)
    except ValueError:
        return None
    return {"slope": hs.slope, "intercept": hs.intercept, "n_vertices": hs.n_vertices}


def _one_point(module, sel) -> bool:
    """Whether the model selects one space point per vertex (not an ablation without
    space selection or with several samples)."""
    return bool(module.config.select_space) and sel.samples is None


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def roi_evaluation(
    split: np.ndarray,
    q: np.ndarray,
    alpha: float,
    roi: np.ndarray,
    roi_names: list[str],
    layer_names: list[str],
    space_se: np.ndarray | None = None,
) -> list[dict]:
    """Per ROI: the share of significant vertices, the mean R² split per layer, the
    layer carrying most of the ROI's mean R² with its share of the positive part, and
    the RF standard error (median) with the share of unlocated RFs.

    Returns
    -------
    list of dict
        ``roi``, ``n``, ``share_significant``, ``r2_split`` (L means), ``r2_layer``
        (name), ``r2_layer_share``, ``rf_se_median``, ``share_unlocated``.
    """
    from ..core.rf_uncertainty import UNLOCATED_SE
    from ..core.variance_split import dominant_layer

    rows = []
    roi = np.asarray(roi)
    for k, name in enumerate(roi_names, start=1):
        msk = roi == k
        if not msk.any():
            continue
        s = split[msk]
        ok = np.isfinite(s).all(1)
        mean = s[ok].mean(0) if ok.any() else np.full(split.shape[1], np.nan)
        layer, share = dominant_layer(mean[None])
        qq = q[msk]
        rows.append(
            {
                "roi": str(name),
                "n": int(msk.sum()),
                "share_significant": float(np.mean(np.isfinite(qq) & (qq <= alpha))),
                "r2_split": [None if not np.isfinite(x) else float(x) for x in mean],
                "r2_layer": layer_names[int(layer[0])] if ok.any() else "",
                "r2_layer_share": None if not np.isfinite(share[0]) else float(share[0]),
                "rf_se_median": None,
                "share_unlocated": None,
            }
        )
        if space_se is not None:
            se = np.asarray(space_se, np.float64)[msk]
            rows[-1]["rf_se_median"] = float(np.median(se)) if np.isfinite(se).any() else None
            rows[-1]["share_unlocated"] = float(np.mean(se >= UNLOCATED_SE))
    return rows
