"""Per-ROI summaries of a fitted model, as rows for a table or a CSV file (no Qt)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from napari_factortopy.core.analyses import confidence, layer_argmax
from napari_factortopy.core.atomic import atomic_path
from napari_factortopy.scene.brain import _default_score_key, score_label

__all__ = ["COLUMNS", "roi_rows", "write_csv"]

#: Column keys of :func:`roi_rows`, in order, with their headers.
COLUMNS = {
    "roi": "ROI",
    "n_vertices": "vertices",
    "score": "mean score",
    "layer": "argmax layer",
    "layer_share": "share",
    "confidence": "mean confidence",
    "scale": "mean scale α",
    "score_sd": "score SD (models)",
    "significant": "significant share",
    "r2_layer": "R² mostly from",
}


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def roi_rows(model, score_key: str | None = None) -> list[dict]:
    """One row per ROI that has vertices: count, mean score, layer choice, confidence, scale.

    Vertices with a non-finite selector (``model.missing``) count as vertices of their
    ROI but enter no mean.

    Parameters
    ----------
    model : FittedModel
        ``roi (V,)``, ``roi_names``, ``layer (V, L)``, ``scale (V,)``, ``scores``.
    score_key : str, optional
        Score averaged (default ``r2_test``, else ``r_test``, else any; NaN if none).

    Returns
    -------
    rows : list of dict
        Keys of :data:`COLUMNS`: ``roi`` (name), ``n_vertices``, ``score`` (mean),
        ``layer`` (name of the layer most vertices choose), ``layer_share`` (fraction of
        the ROI's fitted vertices choosing it), ``confidence`` (mean layer-selector
        confidence), ``scale`` (mean α).
    """
    key = score_key or _default_score_key(model)
    roi = np.asarray(model.roi)
    pi = np.asarray(model.layer, np.float64)
    missing = np.asarray(getattr(model, "missing", np.zeros(len(roi), bool)), bool)
    missing = missing | ~np.isfinite(pi).all(1)
    names = list(model.backbone.get("layer_names") or [])
    if len(names) != model.n_layers:
        names = [f"layer {i + 1}" for i in range(model.n_layers)]
    safe = np.where(missing[:, None], 1.0 / model.n_layers, pi)
    choice, conf = layer_argmax(safe), confidence(safe)
    score = np.asarray(model.scores[key], np.float64) if key in model.scores else None
    rows = []
    for k, name in enumerate(model.roi_names, start=1):
        members = roi == k
        if not members.any():
            continue
        fit = members & ~missing
        counts = np.bincount(choice[fit], minlength=model.n_layers)
        best = int(np.argmax(counts))
        rows.append(
            {
                "roi": str(name),
                "n_vertices": int(members.sum()),
                "score": _mean(score[fit]) if score is not None else float("nan"),
                "layer": names[best] if fit.any() else "",
                "layer_share": float(counts[best] / fit.sum()) if fit.any() else float("nan"),
                "confidence": _mean(conf[fit]),
                "scale": _mean(np.asarray(model.scale, np.float64)[fit]),
            }
        )
    return _evaluation_columns(model, rows)


def _evaluation_columns(model, rows: list[dict]) -> list[dict]:
    """Add ``score_sd`` (a group's SD across models of the ROI's mean score),
    ``significant`` (share of the ROI's vertices with FDR q ≤ α) and ``r2_layer`` (the
    layer carrying most of the ROI's mean R², ``factortopy evaluate``): NaN / "" when
    the model has no such numbers."""
    from napari_factortopy.core.variance_split import dominant_layer

    group = {r["roi"]: r for r in ((model.summary or {}).get("group") or {}).get("roi", [])}
    ev = getattr(model, "evaluation", None) or {}
    alpha = float(((model.summary or {}).get("evaluation") or {}).get("alpha") or 0.05)
    names = list(model.backbone.get("layer_names") or [])
    if len(names) != model.n_layers:
        names = [f"layer {i + 1}" for i in range(model.n_layers)]
    roi = np.asarray(model.roi)
    for row in rows:
        g = group.get(row["roi"], {})
        row["score_sd"] = float("nan") if g.get("score_sd") is None else float(g["score_sd"])
        row["significant"], row["r2_layer"] = float("nan"), ""
        members = roi == model.roi_names.index(row["roi"]) + 1
        if "q_value" in ev:
            q = np.asarray(ev["q_value"], np.float64)[members]
            row["significant"] = float(np.mean(np.isfinite(q) & (q <= alpha)))
        if "r2_split" in ev:
            s = np.asarray(ev["r2_split"], np.float64)[members]
            s = s[np.isfinite(s).all(1)]
            if len(s):
                layer, share = dominant_layer(s.mean(0)[None])
                if np.isfinite(share[0]):
                    row["r2_layer"] = names[int(layer[0])]
    return rows


def write_csv(rows: list[dict], path: str | os.PathLike, score_key: str | None = None) -> Path:
    """Write :func:`roi_rows` as CSV (header row; the score column names its score)."""
    out = Path(path)
    header = dict(COLUMNS)
    if score_key:
        header["score"] = f"mean {score_label(score_key)}"
    with atomic_path(out, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header.values())
        for r in rows:
            writer.writerow([r[k] for k in COLUMNS])
    return out
