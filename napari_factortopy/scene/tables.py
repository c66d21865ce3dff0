"""Per-ROI summaries of a fitted model, as rows for a table or a CSV file (no Qt)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from napari_factortopy.core.analyses import confidence, layer_argmax
from napari_factortopy.core.atomic import atomic_path
from napari_factortopy.scene.brain import _default_score_key, score_label

__all__ = [
    "COLUMNS",
    "DESCRIPTIONS",
    "roi_rows",
    "score_note",
    "sidecar_path",
    "slope_line",
    "slope_parts",
    "write_csv",
]

#: Column keys of :func:`roi_rows`, in order, with their headers.
COLUMNS = {
    "roi": "ROI",
    "n_vertices": "vertices",
    "score": "mean score",
    "nc_score": "mean noise-normalised score %",
    "layer": "argmax layer",
    "layer_share": "share",
    "confidence": "mean confidence",
    "scale": "mean scale α",
    "score_sd": "score SD (models)",
    "significant": "significant share",
    "r2_layer": "R² mostly from",
}


def score_note(model) -> str:
    """What the scores of ``model`` are: the noise ceiling's source, or that they are raw."""
    nc = (getattr(model, "summary", None) or {}).get("noise_ceiling")
    if nc:
        return f"noise ceiling from {nc.get('source', '?')}"
    return "no noise ceiling known: scores are raw R² / r, not noise-normalised"


def slope_parts(
    model, digits: int = 3, *, unfinished: bool = True, found=None, degenerate=...
) -> list[str]:
    """The hierarchy slope (paper Table 2: expected layer against ROI level) as people
    read it, in parts; ``factortopy info``, figures and the ROI table all show these.

    Parameters
    ----------
    model : FittedModel
    digits : int, default 3
        Decimals of the slopes.
    unfinished : bool, default True
        Add ``"UNFINISHED MODEL: <why>"`` when the model file says training did not
        converge (a figure says it in its stamp instead).
    found : SlopeRange or str, optional
        :func:`~napari_factortopy.core.slope_range.model_slope_or_reason` of ``model``
        when the caller has it already (computed here otherwise).
    degenerate : str or None, optional
        :func:`~napari_factortopy.scene.maps.selector_line` of ``model`` when the caller
        has it already (None: the selectors are fine; computed here otherwise).

    Returns
    -------
    parts : list of str
        ``"hierarchy slope A"``, ``"interval [LO, HI]"``, ``"mode-centred M"``,
        ``"far weight F %"`` (:mod:`napari_factortopy.core.slope_range`), then as the file
        allows: the group's interval across its models, the phantom's true slope (a
        demo model's ``summary["recovery"]``), that the file is a phantom's truth, and
        the unfinished note. Without a slope: one part ``"no hierarchy slope: <why>"``.
    """
    from napari_factortopy.core.slope_range import model_slope_or_reason
    from napari_factortopy.scene.maps import warning_parts

    sr = model_slope_or_reason(model) if found is None else found
    if isinstance(sr, str):
        return [f"no hierarchy slope: {sr}"]

    def num(x) -> str:
        return f"{float(x):.{digits}f}"

    parts = [
        f"hierarchy slope {num(sr.slope)}",
        f"interval [{num(sr.lo)}, {num(sr.hi)}]",
        f"mode-centred {num(sr.slope_mode)}",
        f"far weight {100 * sr.far_mass:.1f} %",
    ]
    summary = getattr(model, "summary", None) or {}
    h = (summary.get("group") or {}).get("hierarchy") or {}
    if h.get("slope_lo") is not None and h.get("slope_hi") is not None:
        parts.append(
            f"group interval across {h.get('n_models', '?')} models "
            f"[{num(h['slope_lo'])}, {num(h['slope_hi'])}]"
        )
    truth = (summary.get("recovery") or {}).get("hierarchy_slope_truth")
    if truth is not None and np.isfinite(truth):
        parts.append(f"truth {num(truth)}")
    if getattr(model, "kind", None) == "phantom-truth":
        parts.append("this file is a phantom's truth")
    return parts + (warning_parts(model, degenerate) if unfinished else [])


def slope_line(model, digits: int = 3, *, found=None, degenerate=...) -> str:
    """:func:`slope_parts` as one line (``info`` and the ROI table)."""
    return "; ".join(slope_parts(model, digits, found=found, degenerate=degenerate))


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
        ``nc_score`` (mean challenge score ``nc_test``, NaN without a noise ceiling),
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
    nc = model.scores.get("nc_test") if (model.summary or {}).get("noise_ceiling") else None
    # per-ROI sums in one pass over V (bincount), not one mask per ROI
    n_roi = len(model.roi_names) + 1
    lab = np.where((roi >= 0) & (roi < n_roi), roi, 0).astype(np.int64)
    members = np.bincount(lab, minlength=n_roi)
    fit = ~missing
    n_fit = np.bincount(lab[fit], minlength=n_roi)
    votes = np.zeros((n_roi, model.n_layers), np.int64)
    np.add.at(votes, (lab[fit], choice[fit]), 1)
    means = {
        "score": _roi_means(score, lab, fit, n_roi),
        "nc_score": _roi_means(nc, lab, fit, n_roi),
        "confidence": _roi_means(conf, lab, fit, n_roi),
        "scale": _roi_means(model.scale, lab, fit, n_roi),
    }
    rows = []
    for k, name in enumerate(model.roi_names, start=1):
        if not members[k]:
            continue
        best = int(np.argmax(votes[k]))
        rows.append(
            {
                "roi": str(name),
                "n_vertices": int(members[k]),
                "score": means["score"][k],
                "nc_score": means["nc_score"][k],
                "layer": names[best] if n_fit[k] else "",
                "layer_share": float(votes[k, best] / n_fit[k]) if n_fit[k] else float("nan"),
                "confidence": means["confidence"][k],
                "scale": means["scale"][k],
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


def _roi_means(values, lab: np.ndarray, fit: np.ndarray, n_roi: int) -> list[float]:
    """Mean of the finite ``values`` (V,) of the fitted vertices of each label; NaN if none."""
    if values is None:
        return [float("nan")] * n_roi
    v = np.asarray(values, np.float64)
    ok = fit & np.isfinite(v)
    tot = np.bincount(lab[ok], weights=v[ok], minlength=n_roi)
    num = np.bincount(lab[ok], minlength=n_roi)
    return [float(t / c) if c else float("nan") for t, c in zip(tot, num, strict=True)]


#: What each column of :func:`roi_rows` holds, for the CSV's sidecar (``{score}``: the
#: score's name).
DESCRIPTIONS = {
    "roi": "region of interest, as named in the model file",
    "n_vertices": "the ROI's vertices in the model (those with non-finite selectors too)",
    "score": "mean {score} over the ROI's vertices with finite selectors",
    "nc_score": "mean noise-normalised challenge score (%): r² over the noise ceiling, "
    "r < 0 counted as 0, capped at 100",
    "layer": "the layer most of the ROI's vertices weight most (argmax of the layer selector)",
    "layer_share": "fraction of the ROI's vertices whose argmax layer it is",
    "confidence": "mean layer-selector confidence, 1 − H(π)/log L (0: all layers "
    "equal, 1: one layer)",
    "scale": "mean scale α (0: local tokens, 1: the global token)",
    "score_sd": "SD across a group's models of the ROI's mean score",
    "significant": "fraction of the ROI's vertices with FDR q ≤ α",
    "r2_layer": "the layer whose features explain most of the ROI's mean R² (variance split)",
}


def write_csv(
    rows: list[dict],
    path: str | os.PathLike,
    score_key: str | None = None,
    model=None,
    source: str | None = None,
) -> Path:
    """Write :func:`roi_rows` as CSV (header row; the score column names its score).

    With ``model``, what the table alone would not say goes with it, as the panel and
    ``factortopy info`` say it:

    - a last column ``warning`` on every row when the model's maps carry one
      (``UNFINISHED MODEL: …``, ``DEGENERATE SELECTORS: …``: :func:`warning_parts`), so
      a table copied into a paper keeps it;
    - a sidecar ``<name>.json`` beside the CSV (the column descriptions of a BIDS
      tabular file's sidecar, plus ``Model``, ``Warnings``, ``HierarchySlope`` (the
      slope line), ``Scores`` (:func:`score_note`) and, under ``mean confidence``,
      ``Caveat`` (:func:`~napari_factortopy.core.analyses.confidence_note`)).

    Each file is written whole or not at all (a temporary file renamed into place).

    Parameters
    ----------
    rows : list of dict
        :func:`roi_rows`, in the order to write.
    path : path-like
        The CSV file.
    score_key : str, optional
        The score of the ``score`` column (default: the one :func:`roi_rows` averages
        when ``model`` is given).
    model : FittedModel, optional
        The model the rows describe.
    source : str, optional
        Where the model came from (its file), for the sidecar's ``Model``.

    Returns
    -------
    Path
        The CSV file (the sidecar: :func:`sidecar_path`).
    """
    out = Path(path)
    header = dict(COLUMNS)
    if score_key is None and model is not None:  # name the score roi_rows averaged
        score_key = _default_score_key(model)
    if score_key:
        header["score"] = f"mean {score_label(score_key)}"
    sidecar, warnings = None, []
    if model is not None:
        from napari_factortopy.scene.maps import selector_line, warning_parts

        degenerate = selector_line(model)  # once, for the warnings and the slope line
        warnings = warning_parts(model, degenerate)
        slope = slope_line(model, degenerate=degenerate)
        sidecar = _sidecar(model, header, score_key, warnings, source, slope)
    with atomic_path(out, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header.values(), *(["warning"] if warnings else [])])
        for r in rows:
            writer.writerow(
                [*(r[k] for k in COLUMNS), *(["; ".join(warnings)] if warnings else [])]
            )
    if sidecar is not None:
        with atomic_path(sidecar_path(out), suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return out


def sidecar_path(csv_path: str | os.PathLike) -> Path:
    """Where :func:`write_csv` puts a CSV's sidecar: ``rois.csv`` → ``rois.json``."""
    out = Path(csv_path)
    side = out.with_suffix(".json")
    return side if side != out else out.with_name(out.name + ".json")


def _sidecar(
    model,
    header: dict,
    score_key: str | None,
    warnings: list[str],
    source: str | None,
    slope: str,
) -> dict:
    """The sidecar's content (see :func:`write_csv`)."""
    from napari_factortopy.core.analyses import confidence_note

    score = score_label(score_key or _default_score_key(model))
    columns = {header[k]: {"Description": DESCRIPTIONS[k].format(score=score)} for k in COLUMNS}
    note = confidence_note(getattr(model, "kind", ""))
    if note:
        columns[header["confidence"]]["Caveat"] = note
    if warnings:
        columns["warning"] = {"Description": "what every map of this model carries"}
    return {
        "Model": source or "",
        "Kind": str(getattr(model, "kind", "")),
        "Warnings": warnings,
        "HierarchySlope": slope,
        "Scores": score_note(model),
        **columns,
    }
