"""Brain scores per vertex and their ROI summaries (METHOD.md §5, paper Table 1).

All scores are computed per vertex (column) over the images (rows) of a split. The
ROI helpers follow the project's label convention: ``roi (V,)`` holds integer labels,
0 meaning "no ROI", and ``roi_names[k - 1]`` names label ``k``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SplitScores",
    "challenge_scores",
    "difference_to_max",
    "format_number",
    "max_model",
    "noise_ceiling_from_ncsnr",
    "noise_normalised",
    "pearson_r",
    "r2_score",
    "roi_table",
]


def format_number(value, spec: str = ".4f") -> str:
    """A number for a person; ``-`` for missing or non-finite values (JSON null, NaN)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(x, spec) if np.isfinite(x) else "-"


#: Bytes of float64 one column block of a score may take (its copies and temporaries
#: take a few times this): the scores of 984 × 37,984 float32 responses would otherwise
#: make float64 copies of 0.3 GB each, over 1 GB in all, at the end of every run.
BLOCK_BYTES = 16 * 2**20


def _checked(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as (N, V) (a 1-D array is one column), checked to have one shape."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim == 1:
        yt = yt[:, None]
    if yp.ndim == 1:
        yp = yp[:, None]
    if yt.shape != yp.shape or yt.ndim != 2:
        raise ValueError(
            f"y_true and y_pred must both be (N, V) arrays of one shape; "
            f"got {np.shape(y_true)} and {np.shape(y_pred)}"
        )
    return yt, yp


def _column_blocks(yt: np.ndarray, yp: np.ndarray):
    """``(columns, yt[:, columns], yp[:, columns])`` as float64, a block of columns at a
    time (at most :data:`BLOCK_BYTES` each), so a score's memory does not grow with V."""
    n, v = yt.shape
    step = max(1, BLOCK_BYTES // (8 * max(n, 1)))
    for lo in range(0, v, step):
        cols = slice(lo, min(v, lo + step))
        yield cols, yt[:, cols].astype(np.float64), yp[:, cols].astype(np.float64)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per vertex.

    ``R²_v = 1 - Σ_i (y_iv - ŷ_iv)² / Σ_i (y_iv - ȳ_v)²`` with ``ȳ_v`` the column mean
    of ``y_true``. It is not clipped: a prediction worse than the mean gives a
    negative value.

    Parameters
    ----------
    y_true : array of shape (N, V)
        Measured responses, N images by V vertices.
    y_pred : array of shape (N, V)
        Predicted responses.

    Returns
    -------
    r2 : array of shape (V,), float64
        NaN where ``y_true``'s column is constant (zero total sum of squares).
    """
    yt, yp = _checked(y_true, y_pred)
    out = np.full(yt.shape[1], np.nan)
    for cols, t, p in _column_blocks(yt, yp):
        ss_res = np.sum((t - p) ** 2, axis=0)
        ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
        ok = ss_tot > 0
        out[cols][ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return out


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per vertex (the Algonauts 2023 convention).

    Parameters
    ----------
    y_true : array of shape (N, V)
        Measured responses.
    y_pred : array of shape (N, V)
        Predicted responses.

    Returns
    -------
    r : array of shape (V,), float64
        In [-1, 1]; NaN where either column is constant.
    """
    yt, yp = _checked(y_true, y_pred)
    out = np.full(yt.shape[1], np.nan)
    for cols, t, p in _column_blocks(yt, yp):
        dt = t - t.mean(axis=0)
        dp = p - p.mean(axis=0)
        num = np.sum(dt * dp, axis=0)
        den = np.sqrt(np.sum(dt**2, axis=0) * np.sum(dp**2, axis=0))
        ok = den > 0
        out[cols][ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


class SplitScores:
    """R² and Pearson r per vertex of predictions that come a block of rows at a time,
    so that neither the predictions nor the responses of a split are held whole.

    The responses' column means and total sums of squares are computed once (two
    passes over the split's rows, a block at a time); each prediction pass then adds
    its blocks' residual sums (:meth:`add`) and :meth:`r2` / :meth:`pearson` give what
    :func:`r2_score` / :func:`pearson_r` give for the whole arrays (the same sums in
    float64, in another order: equal to about 1e-12). At 984 × 37,984 (Algonauts'
    validation and test splits) that spares 0.3 GB at every validation and at the end.

    Parameters
    ----------
    responses : array of shape (N, V), or ResponseRows
        Indexed by rows (``responses[rows]``); only the split's are read.
    rows : int array of shape (n,)
        The split's rows, in the order the predictions come.
    max_bytes : int
        Bytes of float64 one block of rows may take while the sums are computed.
    """

    def __init__(self, responses, rows, max_bytes: int = BLOCK_BYTES) -> None:
        self.responses, self.rows = responses, np.asarray(rows)
        n, v = len(self.rows), responses.shape[1]
        if n == 0:
            raise ValueError("SplitScores needs at least one row")
        self.n_vertices = v
        self._step = max(1, max_bytes // (8 * max(v, 1)))
        total = np.zeros(v)
        for t in self._blocks():
            total += t.sum(axis=0)
        self.mean = total / n
        self.ss_tot = np.zeros(v)
        for t in self._blocks():
            self.ss_tot += ((t - self.mean) ** 2).sum(axis=0)
        self.reset()

    def _blocks(self):
        for lo in range(0, len(self.rows), self._step):
            yield np.asarray(self.responses[self.rows[lo : lo + self._step]], np.float64)

    def reset(self) -> None:
        """Start a new prediction pass."""
        v = self.n_vertices
        self.done = 0
        self._ss_res, self._cross, self._sp, self._sp2 = (np.zeros(v) for _ in range(4))
        self._shift: np.ndarray | None = None

    def add(self, pred: np.ndarray) -> None:
        """The predictions of the pass's next rows, array of shape (b, V)."""
        if pred.ndim != 2 or pred.shape[1] != self.n_vertices:
            raise ValueError(f"predictions must be (b, {self.n_vertices}); found {pred.shape}")
        if self.done + len(pred) > len(self.rows):
            raise ValueError(
                f"{self.done + len(pred)} predicted rows for a split of {len(self.rows)}"
            )
        for lo in range(0, len(pred), self._step):  # float64 temporaries of ≤ max_bytes
            p = pred[lo : lo + self._step].astype(np.float64)  # a copy: changed below
            start = self.done
            t = np.asarray(self.responses[self.rows[start : start + len(p)]], np.float64)
            if self._shift is None:  # the first row: a constant column sums to exactly 0
                self._shift = p[0].copy()
            self._ss_res += ((t - p) ** 2).sum(axis=0)
            p -= self._shift
            self._cross += ((t - self.mean) * p).sum(axis=0)
            self._sp += p.sum(axis=0)
            self._sp2 += (p**2).sum(axis=0)
            self.done = start + len(p)

    def _check_done(self) -> None:
        if self.done != len(self.rows):
            raise ValueError(f"{self.done} of the split's {len(self.rows)} rows were predicted")

    def r2(self) -> np.ndarray:
        """:func:`r2_score` of the pass, shape (V,), float64 (NaN: constant responses)."""
        self._check_done()
        out = np.full(self.n_vertices, np.nan)
        ok = self.ss_tot > 0
        out[ok] = 1.0 - self._ss_res[ok] / self.ss_tot[ok]
        return out

    def pearson(self) -> np.ndarray:
        """:func:`pearson_r` of the pass, shape (V,), float64 (NaN: a constant column)."""
        self._check_done()
        n = len(self.rows)
        ss_p = np.maximum(self._sp2 - self._sp**2 / n, 0.0)
        den = np.sqrt(self.ss_tot * ss_p)
        out = np.full(self.n_vertices, np.nan)
        ok = den > 0
        out[ok] = np.clip(self._cross[ok] / den[ok], -1.0, 1.0)
        return out


def _roi_labels(roi: np.ndarray, n_vertices: int, roi_names: list[str]) -> np.ndarray:
    """``roi`` as a checked int array of shape (V,)."""
    lab = np.asarray(roi)
    if lab.shape != (n_vertices,):
        raise ValueError(f"roi must have shape ({n_vertices},); got {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise ValueError("roi labels must be integers")
    lab = lab.astype(np.int64)
    if lab.size and lab.min() < 0:
        raise ValueError(f"roi labels must be >= 0 (0 = none); found {lab.min()}")
    if lab.size and lab.max() > len(roi_names):
        raise ValueError(
            f"roi label {lab.max()} has no name: roi_names has {len(roi_names)} entries"
        )
    return lab


def _nan_stats(x: np.ndarray) -> tuple[float, float]:
    """(mean, median) of the finite entries of ``x``; NaN when there are none."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(np.median(x))


def roi_table(values: np.ndarray, roi: np.ndarray, roi_names: list[str]) -> list[dict]:
    """Mean and median of a per-vertex value within each ROI.

    Parameters
    ----------
    values : array of shape (V,)
        A per-vertex quantity (a score, a layer position, ...). NaN/inf entries are
        ignored in the statistics.
    roi : int array of shape (V,)
        ROI label per vertex, 0 = none.
    roi_names : list of str
        ``roi_names[k - 1]`` names label ``k``.

    Returns
    -------
    rows : list of dict
        One row per ROI label present in ``roi`` (ascending label order), then one row
        named ``"all"`` over **all** V vertices, labelled or not. Each row has the keys
        ``roi`` (name), ``label`` (int; 0 for "all"), ``n`` (number of vertices in the
        ROI, finite or not), ``mean`` and ``median`` (over the finite values; NaN if
        there are none).
    """
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    lab = _roi_labels(roi, vals.size, roi_names)
    rows: list[dict] = []
    for k in np.unique(lab[lab > 0]):
        sel = vals[lab == k]
        mean, median = _nan_stats(sel)
        rows.append(
            {
                "roi": roi_names[k - 1],
                "label": int(k),
                "n": int(sel.size),
                "mean": mean,
                "median": median,
            }
        )
    mean, median = _nan_stats(vals)
    rows.append({"roi": "all", "label": 0, "n": int(vals.size), "mean": mean, "median": median})
    return rows


def noise_ceiling_from_ncsnr(ncsnr: np.ndarray, n_trials=1.0) -> np.ndarray:
    """NSD's noise ceiling from its noise-ceiling SNR, as a fraction of variance.

    ``NC = ncsnr² / (ncsnr² + 1/n)`` (Allen et al. 2022; NSD writes it in percent,
    ``100 ·`` this) for responses that average ``n`` trials. When images were seen a
    different number of times, ``1/n`` is the mean of ``1/n_i`` over the images: pass
    the per-image counts.

    Parameters
    ----------
    ncsnr : array of shape (V,)
        Noise-ceiling SNR per vertex (NSD's ``{lh,rh}.ncsnr.mgh``), >= 0.
    n_trials : float or array of shape (M,)
        Trials averaged per response, or the count of every image (M images).

    Returns
    -------
    nc : array of shape (V,), float64
        In [0, 1); NaN where ``ncsnr`` is NaN.
    """
    snr2 = np.asarray(ncsnr, dtype=np.float64) ** 2
    counts = np.asarray(n_trials, dtype=np.float64)
    if counts.size == 0 or not np.all(counts >= 1):
        raise ValueError(f"n_trials must be >= 1 (trials averaged); found {counts.ravel()[:5]}")
    inv_n = float(np.mean(1.0 / counts))
    return snr2 / (snr2 + inv_n)


def noise_normalised(r: np.ndarray, noise_ceiling: np.ndarray) -> np.ndarray:
    """The Algonauts 2023 challenge's noise-normalised score in percent.

    ``score_v = min(100, 100 · max(r_v, 0)² / NC_v)`` with ``NC_v`` the noise ceiling as a
    fraction of variance: a correlation below 0 counts as 0, a score above the ceiling
    as 100. (With NC in percent, as NSD and the challenge write it, that is
    ``min(100, 100 · r² / (NC% / 100))``.)

    Parameters
    ----------
    r : array of shape (V,)
        Pearson correlation per vertex.
    noise_ceiling : array of shape (V,)
        Noise ceiling as a fraction of explainable variance (not percent).

    Returns
    -------
    score : array of shape (V,), float64
        In [0, 100]; NaN where the noise ceiling is not positive or either input is
        NaN.
    """
    r = np.asarray(r, dtype=np.float64)
    nc = np.asarray(noise_ceiling, dtype=np.float64)
    r, nc = np.broadcast_arrays(r, nc)
    out = np.full(r.shape, np.nan)
    ok = np.isfinite(r) & np.isfinite(nc) & (nc > 0)
    out[ok] = 100.0 * np.minimum(1.0, np.maximum(r[ok], 0.0) ** 2 / nc[ok])
    return out


def challenge_scores(
    r: np.ndarray,
    noise_ceiling: np.ndarray,
    source: str,
    roi: np.ndarray | None = None,
    roi_names: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """A model's per-vertex challenge scores and their summary, for its model file.

    Parameters
    ----------
    r : array of shape (V,)
        Test Pearson correlation per vertex.
    noise_ceiling : array of shape (V,)
        Fraction of explainable variance in [0, 1]; NaN where unknown.
    source : str
        Where the ceiling came from (recorded, shown by ``factortopy info``).
    roi, roi_names
        ROI labels (V,) and names, for the per-ROI means.

    Returns
    -------
    scores : dict of arrays of shape (V,), float32
        ``nc_test``: :func:`noise_normalised` (percent, NaN without a ceiling);
        ``noise_ceiling``: the ceiling in percent.
    summary : dict
        ``nc_test_mean`` (mean over the vertices that have a ceiling, NaN if none),
        ``noise_ceiling``: ``source``, ``vertices`` (with a positive ceiling),
        ``mean_percent``; and ``roi_nc_test`` (:func:`roi_table`) with ``roi_names``.

    Raises
    ------
    ValueError
        A shape other than r's, or a ceiling outside [0, 1].
    """
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    nc = np.asarray(noise_ceiling, dtype=np.float64).reshape(-1)
    if nc.shape != r.shape:
        raise ValueError(f"the noise ceiling has {nc.size} values for {r.size} vertices")
    finite = nc[np.isfinite(nc)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"noise ceiling values must be fractions in [0, 1]; found "
            f"{finite.min():g}..{finite.max():g}"
        )
    score = noise_normalised(r, nc)
    ok = np.isfinite(score)
    has = np.isfinite(nc) & (nc > 0)
    summary: dict = {
        "nc_test_mean": float(score[ok].mean()) if ok.any() else float("nan"),
        "noise_ceiling": {
            "source": str(source),
            "vertices": int(has.sum()),
            "mean_percent": float(100 * nc[has].mean()) if has.any() else float("nan"),
        },
    }
    if roi is not None and roi_names:
        summary["roi_nc_test"] = roi_table(score, roi, list(roi_names))
    scores = {"nc_test": score.astype(np.float32), "noise_ceiling": (100 * nc).astype(np.float32)}
    return scores, summary


def max_model(scores: np.ndarray) -> np.ndarray:
    """The "max" model: vertex-wise maximum over several models' scores.

    Parameters
    ----------
    scores : array of shape (M, V)
        Score of each of M models at each vertex.

    Returns
    -------
    best : array of shape (V,), float64
        NaN entries are ignored; NaN only where every model is NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"scores must be (M, V) with M >= 1; got {s.shape}")
    return np.fmax.reduce(s, axis=0)


def difference_to_max(
    scores: np.ndarray,
    roi: np.ndarray,
    roi_names: list[str],
    include_all: bool = False,
    reduction: str = "sum",
) -> np.ndarray:
    """Each model's distance to the "max" model within each ROI (paper Table 1).

    For model m and ROI R, with ``reduction="sum"`` (METHOD.md §5, the paper's "root
    sum squared difference"): ``sqrt(Σ_{v ∈ R} (max_v − score_mv)²)``; with
    ``reduction="mean"``: ``sqrt(mean_{v ∈ R} (max_v − score_mv)²)``, the
    root-mean-square, which does not grow with the ROI's vertex count (the paper's
    table values, about 0.03, are of that size).

    Parameters
    ----------
    scores : array of shape (M, V)
        Score of each of M models at each vertex.
    roi : int array of shape (V,)
        ROI label per vertex, 0 = none.
    roi_names : list of str
        ``roi_names[k - 1]`` names label ``k``; R = ``len(roi_names)``.
    include_all : bool, default False
        Append one more column over all V vertices.
    reduction : {"sum", "mean"}
        Root of the sum (default, METHOD.md) or of the mean of the squared gaps.

    Returns
    -------
    diff : array of shape (M, R) (or (M, R + 1) with ``include_all``), float64
        Column ``k - 1`` belongs to label ``k``. Vertices where the model or the max is
        NaN are left out; a column with no usable vertex is NaN.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean'; found {reduction!r}")
    s = np.asarray(scores, dtype=np.float64)
    best = max_model(s)
    lab = _roi_labels(roi, s.shape[1], roi_names)
    gap2 = (best[None, :] - s) ** 2
    masks = [lab == k for k in range(1, len(roi_names) + 1)]
    if include_all:
        masks.append(np.ones(s.shape[1], dtype=bool))
    out = np.full((s.shape[0], len(masks)), np.nan)
    for j, mask in enumerate(masks):
        g = gap2[:, mask]
        ok = np.isfinite(g)
        n = ok.sum(axis=1)
        tot = np.where(ok, g, 0.0).sum(axis=1)
        has = n > 0
        out[has, j] = np.sqrt(tot[has] / (n[has] if reduction == "mean" else 1))
    return out
