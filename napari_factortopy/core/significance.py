"""Is a vertex's score above chance? A permutation null with false-discovery control.

The score map (test R² or Pearson r per vertex) is tested against the null hypothesis
that the predictions carry no information about the responses: the images' order of
the predictions is shuffled against the responses on the test split (one permutation
of the images shared by all vertices, so the spatial dependence of the vertices is
kept), the score is recomputed, and the per-vertex p-value is

``p_v = (1 + #{permutations with score ≥ observed}) / (1 + P)``

(the +1 counts the observed order, so p is never 0 and the test is exact; its
smallest value is ``1 / (1 + P)``). Repeats of an image move together (``groups``).
With everything but the pairing fixed, R² and r both increase with
``Σ_i y_π(i) ŷ_i``, so their permutation p-values are the same numbers.

:func:`benjamini_hochberg` turns the p-values into q-values (BH-adjusted p): the
vertices with ``q ≤ α`` form a set whose expected share of false discoveries is at
most α (under independence or positive dependence of the tests, Benjamini & Hochberg
1995; Benjamini & Yekutieli 2001). The display greys the others
(:func:`not_significant`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "benjamini_hochberg",
    "not_significant",
    "permutation_pvalues",
    "significance_summary",
]


def _group_sums(y: np.ndarray, yhat: np.ndarray, groups: np.ndarray | None):
    """Per image: the sum of its response rows and its (first) prediction row."""
    if groups is None:
        return y, yhat, np.ones(len(y))
    g = np.asarray(groups)
    if g.shape != (len(y),):
        raise ValueError(f"groups must have shape ({len(y)},); found {g.shape}")
    uniq, first, inv = np.unique(g, return_index=True, return_inverse=True)
    ysum = np.zeros((len(uniq), y.shape[1]))
    np.add.at(ysum, inv, y)
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    return ysum, yhat[first], counts


def permutation_pvalues(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_permutations: int = 1000,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
    batch: int = 64,
    max_elements: int = 2**25,
) -> dict[str, np.ndarray]:
    """Per-vertex permutation p-values of the prediction–response pairing.

    Parameters
    ----------
    y_true : array of shape (N, V)
        Responses of the test rows.
    y_pred : array of shape (N, V)
        Predictions of the same rows (repeats of an image have equal predictions).
    n_permutations : int
        P, the number of shuffles (the smallest p-value is ``1 / (1 + P)``).
    groups : array of shape (N,), optional
        The image of each row: repeats of an image are permuted together (their
        prediction is the image's). Default: every row its own image.
    seed : int
        Seed of the permutations (the same for every vertex).
    batch, max_elements
        Permutations per step, and the largest (batch × images × vertices) block.

    Returns
    -------
    dict
        ``p_value`` (V,): as in the module notes, NaN where the responses or the
        predictions are constant; ``observed`` (V,): the observed Pearson r;
        ``null_sd`` (V,): SD of the null r (about ``1/sqrt(images − 1)``).
    """
    y = np.asarray(y_true, np.float64)
    yhat = np.asarray(y_pred, np.float64)
    if y.ndim != 2 or y.shape != yhat.shape:
        raise ValueError(
            f"y_true and y_pred must be (N, V) arrays of one shape; found {y.shape} and "
            f"{yhat.shape}"
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1; found {n_permutations}")
    ysum, pred, counts = _group_sums(y, yhat, groups)
    n_img, v = pred.shape
    # centre: Σ_rows (y − ȳ)(ŷ − ŷ̄); with the mean of the row-weighted predictions
    ybar = y.mean(0)
    pbar = (pred * counts[:, None]).sum(0) / counts.sum()
    yc = ysum - counts[:, None] * ybar  # Σ over an image's rows of (y − ȳ)
    pc = pred - pbar
    sy = np.sqrt(((y - ybar) ** 2).sum(0))
    sp = np.sqrt((counts[:, None] * pc**2).sum(0))
    den = sy * sp
    ok = den > 0
    observed = np.full(v, np.nan)
    observed[ok] = (yc * pc).sum(0)[ok] / den[ok]
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n_img) for _ in range(int(n_permutations))])
    # with repeats the row weights move with the image: Σ_g yc_g pc_π(g) still pairs each
    # image's response sum with another image's prediction; sp is permutation-invariant
    # only without repeats, so the null score is normalised per permutation
    exceed = np.zeros(v, np.int64)
    s1 = np.zeros(v)
    s2 = np.zeros(v)
    chunk = max(1, int(max_elements // max(1, batch * n_img)))
    equal_counts = np.all(counts == counts[0])
    for lo in range(0, v, chunk):
        cols = slice(lo, min(v, lo + chunk))
        ycc, pcc, dd = yc[:, cols], pc[:, cols], den[cols]
        obs = observed[cols]
        for b0 in range(0, len(perms), batch):
            idx = perms[b0 : b0 + batch]  # (B, G)
            shuffled = pcc[idx]  # (B, G, v')
            dots = np.einsum("gv,bgv->bv", ycc, shuffled)
            if equal_counts:
                null = dots / np.where(dd > 0, dd, 1.0)
            else:
                spp = np.sqrt(
                    np.einsum("g,bgv->bv", counts, (shuffled - _wmean(shuffled, counts)) ** 2)
                )
                null = dots / np.where(spp * sy[cols] > 0, spp * sy[cols], 1.0)
            exceed[cols] += (null >= obs[None] - 1e-12).sum(0)
            s1[cols] += null.sum(0)
            s2[cols] += (null**2).sum(0)
    p = (1.0 + exceed) / (1.0 + len(perms))
    p[~ok] = np.nan
    mean = s1 / len(perms)
    null_sd = np.sqrt(np.maximum(s2 / len(perms) - mean**2, 0.0))
    null_sd[~ok] = np.nan
    return {"p_value": p, "observed": observed, "null_sd": null_sd}


def _wmean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-weighted mean over axis 1 of (B, G, V), kept as (B, 1, V)."""
    return (x * w[None, :, None]).sum(1, keepdims=True) / w.sum()


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    ``q_(i) = min_{j ≥ i} min(1, p_(j) · m / j)`` over the m finite p-values sorted
    ascending; ``q_v ≤ α`` is BH's rejection set at level α.

    Parameters
    ----------
    p_values : array of shape (V,)
        NaN entries (vertices not tested) stay NaN and do not count in m.

    Returns
    -------
    q : array of shape (V,), float64
    """
    p = np.asarray(p_values, np.float64).reshape(-1)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.minimum(ranked, 1.0)
    return q


def significance_summary(p: np.ndarray, q: np.ndarray, alpha: float) -> dict[str, Any]:
    """Counts for the model file and ``info``: tested, uncorrected and FDR-significant."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    tested = np.isfinite(p)
    n = int(tested.sum())
    unc = int((p[tested] <= alpha).sum())
    fdr = int((q[tested] <= alpha).sum())
    return {
        "n_tested": n,
        "n_significant_uncorrected": unc,
        "n_significant": fdr,
        "share_significant": fdr / n if n else None,
    }


def not_significant(model: Any) -> np.ndarray:
    """(V,) bool: vertices a display greys because their score is not significant.

    True where the model file holds FDR q-values (``evaluation["q_value"]``, from
    ``factortopy evaluate``) and ``q > α`` (``summary["evaluation"]["alpha"]``,
    default 0.05) or q is NaN; all False for a model without them.
    """
    ev = getattr(model, "evaluation", None) or {}
    q = ev.get("q_value")
    v = len(model.vertex_ids)
    if q is None or np.shape(q) != (v,):
        return np.zeros(v, bool)
    alpha = float(((model.summary or {}).get("evaluation") or {}).get("alpha") or 0.05)
    q = np.asarray(q, np.float64)
    return ~(np.isfinite(q) & (q <= alpha))
