"""Two fitted models side by side: per-vertex differences on the vertices both have."""

from __future__ import annotations

import numpy as np

__all__ = ["score_difference"]


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
    """
    if key not in a.scores or key not in b.scores:
        raise KeyError(f"both models need the score {key!r}")
    hemi_a = np.arange(a.n_vertices) >= a.n_lh
    hemi_b = np.arange(b.n_vertices) >= b.n_lh
    lookup = {
        (bool(h), int(v)): i for i, (h, v) in enumerate(zip(hemi_b, b.vertex_ids, strict=True))
    }
    matched = np.array(
        [lookup.get((bool(h), int(v)), -1) for h, v in zip(hemi_a, a.vertex_ids, strict=True)],
        np.int64,
    )
    diff = np.full(a.n_vertices, np.nan)
    ok = matched >= 0
    diff[ok] = np.asarray(a.scores[key])[ok] - np.asarray(b.scores[key])[matched[ok]]
    return diff, matched
