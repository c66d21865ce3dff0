"""Two fitted models side by side: per-vertex differences on the vertices both have.

Every difference is a (V_a,) array over model A's vertices, NaN where model B has no
such vertex (or a value is not finite). A truth model without scores (a phantom's
``truth.ftopy``) still compares on its selectors; only the score difference needs
scores in both.
"""

from __future__ import annotations

import numpy as np

from .analyses import layer_position

__all__ = ["match_rows", "model_differences", "score_difference"]


def match_rows(a, b) -> np.ndarray:
    """Row of each of A's vertices in B (same hemisphere and mesh vertex id).

    Parameters
    ----------
    a, b : FittedModel

    Returns
    -------
    matched : int array of shape (V_a,)
        Row in B, −1 where B does not model the vertex.
    """
    hemi_b = np.arange(b.n_vertices) >= b.n_lh
    lookup = {
        (bool(h), int(v)): i for i, (h, v) in enumerate(zip(hemi_b, b.vertex_ids, strict=True))
    }
    hemi_a = np.arange(a.n_vertices) >= a.n_lh
    return np.array(
        [lookup.get((bool(h), int(v)), -1) for h, v in zip(hemi_a, a.vertex_ids, strict=True)],
        np.int64,
    )


def _on_a(values_a: np.ndarray, values_b: np.ndarray, matched: np.ndarray, op) -> np.ndarray:
    out = np.full(len(matched), np.nan)
    ok = matched >= 0
    out[ok] = op(
        np.asarray(values_a, np.float64)[ok], np.asarray(values_b, np.float64)[matched[ok]]
    )
    out[~np.isfinite(out)] = np.nan
    return out


def score_difference(a, b, key: str = "r2_test") -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex score difference A − B on the vertices both models have.

    Parameters
    ----------
    a, b : FittedModel
    key : str
        Score name (both models must have it).

    Returns
    -------
    diff : array of shape (V_a,)
        NaN where B has no such vertex.
    matched : int array of shape (V_a,)
        Row of the same vertex in B, −1 when absent.

    Raises
    ------
    KeyError
        When a model lacks the score.
    """
    if key not in a.scores or key not in b.scores:
        raise KeyError(f"both models need the score {key!r}")
    matched = match_rows(a, b)
    return _on_a(a.scores[key], b.scores[key], matched, np.subtract), matched


def model_differences(a, b, score_key: str | None = "r2_test") -> tuple[dict, dict]:
    """Every per-vertex difference two models can give (on A's vertices).

    Parameters
    ----------
    a, b : FittedModel
    score_key : str, optional
        Score for the score difference (left out when a model lacks it).

    Returns
    -------
    differences : dict name → (values (V_a,), signed)
        ``"layer position A − B"``: λ_A − λ_B, λ = Σ_l π_l · l / (L − 1) (METHOD §4);
        ``"layer selector distance"``: ½ Σ_l |π_A − π_B| (total variation, in [0, 1];
        only for equal layer counts); ``"scale A − B"``: α_A − α_B;
        ``"space distance"``: ‖s_A − s_B‖ in grid_sample units (the image spans 2);
        ``"<score_key> A − B"`` when both models have the score. ``signed`` says whether
        the values are a signed difference (a diverging colour map) or a distance.
    left_out : dict name → reason
        Differences that could not be made, and why.
    """
    matched = match_rows(a, b)
    diffs: dict[str, tuple[np.ndarray, bool]] = {}
    left: dict[str, str] = {}
    diffs["layer position A − B"] = (
        _on_a(layer_position(a.layer), layer_position(b.layer), matched, np.subtract),
        True,
    )
    if a.n_layers == b.n_layers:
        diffs["layer selector distance"] = (
            _on_a(a.layer, b.layer, matched, lambda x, y: 0.5 * np.abs(x - y).sum(1)),
            False,
        )
    else:
        left["layer selector distance"] = (
            f"the models select among different layer counts ({a.n_layers} vs {b.n_layers})"
        )
    diffs["scale A − B"] = (_on_a(a.scale, b.scale, matched, np.subtract), True)
    diffs["space distance"] = (
        _on_a(a.space, b.space, matched, lambda x, y: np.linalg.norm(x - y, axis=1)),
        False,
    )
    if score_key:
        lacking = [n for n, m in (("A", a), ("B", b)) if score_key not in m.scores]
        if lacking:
            left[f"{score_key} A − B"] = f"model {' and '.join(lacking)} has no {score_key} scores"
        else:
            diffs[f"{score_key} A − B"] = (score_difference(a, b, score_key)[0], True)
    return diffs, left
