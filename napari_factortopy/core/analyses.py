"""Analyses of a trained FactorTopy model's selectors (METHOD.md §4–5).

- :func:`confidence`, :func:`layer_argmax`, :func:`layer_position`: per-vertex
  summaries of the layer selector ``π (V, L)``.
- :func:`hierarchy_slope`: the paper's Table 2 fit of layer position against the ROI
  hierarchy level.
- :func:`channel_clusters`: clustering of the readout weights ``β (V, D)`` through the
  kernel ``K = β βᵀ`` without ever forming the V×V kernel.
- :func:`roi_top_channels`: per-ROI RGB images of the top-3 principal directions of the
  readout, projected onto the ROI's layer-mixed aligned local tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .model_schema import KIND_MODEL, KIND_TRUTH
from .resources import paper_roi_groups

__all__ = [
    "DEFAULT_HIERARCHY_LEVELS",
    "ChannelClusters",
    "HierarchySlope",
    "bilinear_resize",
    "channel_clusters",
    "confidence",
    "confidence_note",
    "hierarchy_levels",
    "hierarchy_slope",
    "kernel_features",
    "layer_argmax",
    "layer_position",
    "roi_top_channels",
]

#: ROI name → hierarchy level used by the paper's Table 2 (V1 = 1, V2/V3 = 2, OPA = 3,
#: EBA = 4), with the dorsal/ventral halves of the early visual areas included: the
#: ranked groups of the shipped ``resources/roi_groups.csv`` and their member labels.
#: Read-only (a ``MappingProxyType``), so it cannot be changed in place.
DEFAULT_HIERARCHY_LEVELS: Mapping[str, int] = MappingProxyType(
    {
        name: g.level
        for g in paper_roi_groups()
        if g.level is not None
        for name in (g.group, *g.members)
    }
)


def _layer(layer: np.ndarray) -> np.ndarray:
    pi = np.asarray(layer, dtype=np.float64)
    if pi.ndim != 2 or pi.shape[1] < 1:
        raise ValueError(f"layer weights must be a (V, L) array with L >= 1; got {pi.shape}")
    return pi


#: Per-ROI mean confidence differences smaller than this are not supported by the data
#: (BENCHMARKS.md, "Per-ROI confidence is not identified by the data").
CONFIDENCE_RESOLUTION = 0.2


def confidence_note(kind: str = KIND_MODEL) -> str:
    """What a fitted model's per-ROI mean confidence can say, in one sentence ("" for a
    phantom's truth, whose layer weights are given, not fitted).

    Measured on phantoms with a known truth (about the same confidence in every ROI;
    BENCHMARKS.md, "Per-ROI confidence is not identified by the data"): fitted per-ROI
    confidence came out 0.44–0.87, the same across training seeds and after training to
    convergence, and the truth's own layer weights fit the validation images at most
    0.4 % better (ΔR² −0.010 … +0.0015). Neighbouring layers' features are nearly
    interchangeable, so the data set the argmax layer, not the mixture's shape.
    """
    if kind == KIND_TRUTH:
        return ""
    return (
        f"per-ROI confidence differences below {CONFIDENCE_RESOLUTION:.1f} are not a "
        "finding: confidence is the layer mixture's sharpness, which the data pin only "
        "loosely (on phantoms of equal true confidence, fitted ROIs differed by up to 0.36 "
        "and were up to 0.28 off the truth, whose own mixture fit the validation data at "
        "most 0.4 % better); compare argmax layers and the slope"
    )


def confidence(layer: np.ndarray) -> np.ndarray:
    """Confidence of the layer selector, ``c_v = 1 − H(π_v) / log L``.

    ``H(π) = −Σ_l π_l log π_l`` with ``0 · log 0 = 0``.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights, rows summing to 1.

    Returns
    -------
    conf : array of shape (V,), float64
        1 for a one-hot row, 0 for the uniform row, clipped to [0, 1] against rounding.
        All ones when L = 1.
    """
    pi = _layer(layer)
    n_layers = pi.shape[1]
    if n_layers == 1:
        return np.ones(pi.shape[0])
    safe = np.where(pi > 0, pi, 1.0)
    entropy = -np.sum(np.where(pi > 0, pi * np.log(safe), 0.0), axis=1)
    return np.clip(1.0 - entropy / np.log(n_layers), 0.0, 1.0)


def layer_argmax(layer: np.ndarray) -> np.ndarray:
    """Index of the most weighted layer per vertex.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights.

    Returns
    -------
    idx : int array of shape (V,)
        0-based layer index in [0, L); ties go to the earliest layer.
    """
    return np.argmax(_layer(layer), axis=1).astype(np.int64)


def layer_position(layer: np.ndarray) -> np.ndarray:
    """Scalar layer position ``λ_v = Σ_l π_vl · l / (L − 1)`` (0-based l).

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights, rows summing to 1.

    Returns
    -------
    lam : array of shape (V,), float64
        In [0, 1]: 0 for the first layer, 1 for the last. All zeros when L = 1.
    """
    pi = _layer(layer)
    n_layers = pi.shape[1]
    if n_layers == 1:
        return np.zeros(pi.shape[0])
    return pi @ (np.arange(n_layers, dtype=np.float64) / (n_layers - 1))


@dataclass(frozen=True)
class HierarchySlope:
    """Least-squares fit ``λ_v = slope · ideal_v + intercept`` (paper Table 2).

    Attributes
    ----------
    slope : float
        ``a``: how much of the layer range the brain hierarchy spans.
    intercept : float
        ``b``: the share of early layers the early brain leaves unused.
    top : float
        ``a + b``, the fitted layer position of the top level; ``1 − top`` is the share
        of late layers the late brain leaves unused.
    n_vertices : int
        Number of vertices used in the fit.
    """

    slope: float
    intercept: float
    top: float
    n_vertices: int


def hierarchy_levels(
    roi: np.ndarray,
    roi_names: Sequence[str],
    levels: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Hierarchy level per vertex from ROI labels and names.

    Parameters
    ----------
    roi : int array of shape (V,)
        ROI label per vertex, 0 = none; ``roi_names[k - 1]`` names label ``k``.
    roi_names : sequence of str
        Names of the labels.
    levels : mapping str → int, optional
        ROI name → level in 1..4; default :data:`DEFAULT_HIERARCHY_LEVELS`.

    Returns
    -------
    level : int array of shape (V,)
        0 for vertices whose ROI has no level. A combined name such as ``"V2/V3"``
        or ``"V2V3"`` (the paper's Table 1) gets the level its parts share.
    """
    levels = DEFAULT_HIERARCHY_LEVELS if levels is None else levels
    lab = np.asarray(roi).astype(np.int64)
    table = np.zeros(len(roi_names) + 1, dtype=np.int64)
    for k, name in enumerate(roi_names, start=1):
        table[k] = _name_level(name, levels)
    if lab.size and (lab.min() < 0 or lab.max() > len(roi_names)):
        raise ValueError(f"roi labels must lie in [0, {len(roi_names)}]")
    return table[lab]


def _name_level(name: str, levels: Mapping[str, int]) -> int:
    """Level of an ROI name; combined names ("V2/V3", "V2V3", "V2+V3") by their parts."""
    if name in levels:
        return int(levels[name])
    parts = [p.strip() for p in re.split(r"[/+,&]|(?<=\w)(?=V\d)", name) if p.strip()]
    if len(parts) < 2 or any(p not in levels for p in parts):
        return 0
    found = {int(levels[p]) for p in parts}
    return found.pop() if len(found) == 1 else 0


def hierarchy_slope(layer: np.ndarray, roi_level: np.ndarray) -> HierarchySlope:
    """Fit layer position against the ROI hierarchy level (paper Table 2).

    Each vertex with level ``k ∈ {1, 2, 3, 4}`` gets the ideal position
    ``(k − 1) / 3``; the fit is ordinary least squares of
    ``λ_v`` (:func:`layer_position`) on the ideal position over those vertices.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights.
    roi_level : int array of shape (V,)
        Hierarchy level per vertex (see :func:`hierarchy_levels`): 0 = excluded,
        1 = V1, 2 = V2/V3, 3 = OPA, 4 = EBA.

    Returns
    -------
    HierarchySlope

    Raises
    ------
    ValueError
        If a level lies outside 0..4 or fewer than two distinct levels are present.
    """
    lam = layer_position(layer)
    lev = np.asarray(roi_level)
    if lev.shape != lam.shape:
        raise ValueError(f"roi_level must have shape {lam.shape}; got {lev.shape}")
    lev = lev.astype(np.int64)
    bad = np.setdiff1d(np.unique(lev), np.arange(5))
    if bad.size:
        raise ValueError(f"hierarchy levels must lie in 0..4; found {bad.tolist()}")
    used = lev > 0
    present = np.unique(lev[used])
    if present.size < 2:
        raise ValueError(
            "hierarchy_slope needs vertices from at least 2 distinct levels; "
            f"found levels {present.tolist()} over {int(used.sum())} vertices"
        )
    x = (lev[used] - 1) / 3.0
    y = lam[used]
    xm, ym = x.mean(), y.mean()
    slope = float(np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2))
    intercept = float(ym - slope * xm)
    return HierarchySlope(
        slope=slope,
        intercept=intercept,
        top=slope + intercept,
        n_vertices=int(used.sum()),
    )


@dataclass(frozen=True)
class ChannelClusters:
    """Result of :func:`channel_clusters`.

    Attributes
    ----------
    labels : int array of shape (V,)
        Final cluster per vertex in ``[0, n_clusters)``, numbered by descending size
        (ties: by the first vertex in the cluster).
    kmeans_labels : int array of shape (V,)
        k-means cluster (centroid index) per vertex in ``[0, k)``.
    centroid_labels : int array of shape (k,)
        Final cluster of each k-means centroid; ``labels = centroid_labels[kmeans_labels]``.
    centroids : array of shape (k, D)
        k-means centroids in feature space.
    features : array of shape (V, D)
        ``β M`` with ``M = (βᵀβ)^{1/2}``; its row distances equal those of ``K = ββᵀ``.
    """

    labels: np.ndarray
    kmeans_labels: np.ndarray
    centroid_labels: np.ndarray
    centroids: np.ndarray
    features: np.ndarray


def kernel_features(beta: np.ndarray) -> np.ndarray:
    """Rows with the kernel's geometry: ``β M``, ``M = (βᵀβ)^{1/2}``.

    For rows i, j: ``‖K_i − K_j‖ = ‖(β_i − β_j) M‖`` with ``K = β βᵀ`` (V×V), so any
    Euclidean clustering of the D-dimensional rows of ``β M`` equals the one of the
    V-dimensional kernel rows. M is the symmetric PSD square root from ``eigh``
    (negative round-off eigenvalues set to 0).

    Parameters
    ----------
    beta : array of shape (V, D)
        Readout weights.

    Returns
    -------
    features : array of shape (V, D), float64
    """
    b = np.asarray(beta, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"beta must be a (V, D) array; got {b.shape}")
    gram = b.T @ b
    w, q = np.linalg.eigh((gram + gram.T) / 2.0)
    m = (q * np.sqrt(np.clip(w, 0.0, None))) @ q.T
    return b @ m


def _relabel_by_size(labels: np.ndarray, n: int) -> np.ndarray:
    """Map labels to 0..n-1 by descending count (ties: earliest first occurrence)."""
    counts = np.bincount(labels, minlength=n)
    first = np.full(n, labels.size, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(labels.size))
    order = np.lexsort((first, -counts))
    new = np.empty(n, dtype=np.int64)
    new[order] = np.arange(n)
    return new


def _cluster_rows(
    features: np.ndarray, n_clusters: int, n_kmeans: int, seed: int, n_init: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """k-means, then Ward on the centroids.

    Returns labels (V,), k-means labels (V,), centroid labels (k,), centroids (k, D).
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans

    n_vertices = features.shape[0]
    if n_vertices == 0:
        raise ValueError("channel_clusters needs at least one vertex")
    k = min(int(n_kmeans), n_vertices)
    if k == n_vertices:
        km_labels = np.arange(n_vertices, dtype=np.int64)
        centroids = features.copy()
    else:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(features)
        km_labels = km.labels_.astype(np.int64)
        centroids = km.cluster_centers_
    n_final = min(int(n_clusters), k)
    if n_final == k:
        cent_labels = np.arange(k, dtype=np.int64)
    elif n_final == 1:
        cent_labels = np.zeros(k, dtype=np.int64)
    else:
        ward = AgglomerativeClustering(n_clusters=n_final, linkage="ward")
        cent_labels = ward.fit_predict(centroids).astype(np.int64)
    labels = cent_labels[km_labels]
    remap = _relabel_by_size(labels, n_final)
    return remap[labels], km_labels, remap[cent_labels], centroids


def channel_clusters(
    beta: np.ndarray,
    n_clusters: int = 20,
    n_kmeans: int = 1000,
    seed: int = 0,
    n_init: int = 1,
) -> ChannelClusters:
    """Cluster vertices by their readout weights, as the kernel ``K = β βᵀ`` would.

    The paper clusters the V-dimensional rows of ``K`` by k-means (k = 1000) and
    merges the k centroids by Ward agglomerative clustering (Euclidean) into 20
    clusters. Here the same is done on the D-dimensional rows of
    :func:`kernel_features` (same pairwise distances), so the V×V kernel is never
    formed. Each vertex gets its centroid's cluster.

    Parameters
    ----------
    beta : array of shape (V, D)
        Readout weights.
    n_clusters : int, default 20
        Number of final clusters (reduced to k if larger).
    n_kmeans : int, default 1000
        Number of k-means centroids; ``k = min(n_kmeans, V)``. With ``k = V`` every
        vertex is its own centroid.
    seed : int, default 0
        k-means random state.
    n_init : int, default 1
        k-means restarts (fixed, so the result depends on ``seed`` only).

    Returns
    -------
    ChannelClusters
        ``labels`` in ``[0, n_clusters)`` numbered by descending cluster size.
    """
    feats = kernel_features(beta)
    labels, km_labels, cent_labels, centroids = _cluster_rows(
        feats, n_clusters, n_kmeans, seed, n_init
    )
    return ChannelClusters(
        labels=labels,
        kmeans_labels=km_labels,
        centroid_labels=cent_labels,
        centroids=centroids,
        features=feats,
    )


def _resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, half-pixel centres (align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = src - i0
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0), 1.0 - t)
    np.add.at(w, (rows, i1), t)
    return w


def bilinear_resize(image: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (like ``align_corners=False``).

    Output pixel ``i`` samples the input at ``(i + 0.5) · h / H − 0.5``, clamped to the
    edge pixels (no padding).

    Parameters
    ----------
    image : array of shape (h, w) or (h, w, C)
    out_size : (H, W)

    Returns
    -------
    resized : array of shape (H, W) or (H, W, C), float64
    """
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape[:2]
    H, W = (int(out_size[0]), int(out_size[1]))
    wy = _resize_matrix(H, h)
    wx = _resize_matrix(W, w)
    return np.einsum("Hh,hw...,Ww->HW...", wy, img, wx)


def _top_directions(beta_r: np.ndarray, n: int = 3) -> np.ndarray:
    """Top ``n`` principal directions (n, D) of the rows of ``beta_r``, sign-fixed.

    Directions with a zero (or round-off) singular value are returned as zero rows.
    """
    d = beta_r.shape[1]
    centred = beta_r - beta_r.mean(axis=0)
    out = np.zeros((n, d))
    if centred.shape[0] < 2:
        return out
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(centred.shape) * np.finfo(np.float64).eps
    for j in range(min(n, s.size)):
        if s[j] <= tol or s[j] == 0:
            break
        v = vt[j]
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        out[j] = v
    return out


def _percentile_rescale(channel: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    lo, hi = np.percentile(channel, [lo_pct, hi_pct])
    if not hi - lo > 1e-12 * max(1.0, abs(hi), abs(lo)):
        return np.full(channel.shape, 0.5)
    return (np.clip(channel, lo, hi) - lo) / (hi - lo)


def roi_top_channels(
    aligned_local: np.ndarray,
    layer: np.ndarray,
    beta: np.ndarray,
    roi: np.ndarray,
    roi_names: Sequence[str],
    out_size: tuple[int, int] = (224, 224),
    rois: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (5.0, 95.0),
) -> dict[str, np.ndarray]:
    """Per-ROI RGB image of the ROI's top-3 readout directions for one image.

    For ROI R: mean layer weights ``π̄_R`` over its vertices; the layer-mixed aligned
    local map ``M_R = Σ_l π̄_Rl A_l`` (D, h, w); the top 3 principal directions of the
    ROI's readout rows ``β_R`` (centred PCA by SVD; each direction's sign fixed so that
    its largest-magnitude entry is positive); ``M_R`` projected onto them → (h, w, 3);
    each channel clipped to its 5th–95th percentile and rescaled to [0, 1] (a constant
    channel becomes 0.5); upsampled bilinearly (:func:`bilinear_resize`) to
    ``out_size``. Directions that do not exist (fewer than 4 vertices, or a
    rank-deficient ``β_R``) give constant 0.5 channels.

    Parameters
    ----------
    aligned_local : array of shape (L, D, h, w)
        Channel-aligned local tokens ``A_l`` of one image.
    layer : array of shape (V, L)
        Layer weights.
    beta : array of shape (V, D)
        Readout weights.
    roi : int array of shape (V,)
        ROI label per vertex, 0 = none.
    roi_names : sequence of str
        ``roi_names[k - 1]`` names label ``k``.
    out_size : (H, W), default (224, 224)
        Size of the returned images (the stimulus size).
    rois : sequence of str, optional
        Names of the ROIs to compute; default every ROI with at least one vertex.
        A named ROI without vertices raises ``ValueError``.
    percentiles : (float, float), default (5, 95)
        Clipping percentiles.

    Returns
    -------
    images : dict str → array of shape (H, W, 3), float64 in [0, 1]
        In the order of ``rois`` (or of ascending label).
    """
    a = np.asarray(aligned_local, dtype=np.float64)
    pi = _layer(layer)
    b = np.asarray(beta, dtype=np.float64)
    lab = np.asarray(roi).astype(np.int64)
    if a.ndim != 4:
        raise ValueError(f"aligned_local must be (L, D, h, w); got {a.shape}")
    n_layers, d = a.shape[:2]
    if pi.shape[1] != n_layers or b.shape != (pi.shape[0], d) or lab.shape != (pi.shape[0],):
        raise ValueError(
            f"shape mismatch: aligned_local {a.shape}, layer {pi.shape}, beta {b.shape}, "
            f"roi {lab.shape}"
        )
    names = list(roi_names)
    if rois is None:
        labels = [int(k) for k in np.unique(lab[lab > 0]) if k <= len(names)]
    else:
        labels = []
        for name in rois:
            if name not in names:
                raise ValueError(f"unknown ROI {name!r}; known: {names}")
            k = names.index(name) + 1
            if not np.any(lab == k):
                raise ValueError(f"ROI {name!r} has no vertices")
            labels.append(k)
    out: dict[str, np.ndarray] = {}
    for k in labels:
        mask = lab == k
        pibar = pi[mask].mean(axis=0)
        m_r = np.tensordot(pibar, a, axes=(0, 0))  # (D, h, w)
        dirs = _top_directions(b[mask], 3)  # (3, D)
        proj = np.einsum("kd,dhw->hwk", dirs, m_r)
        rgb = np.stack(
            [_percentile_rescale(proj[..., c], *percentiles) for c in range(3)], axis=-1
        )
        out[names[k - 1]] = np.clip(bilinear_resize(rgb, out_size), 0.0, 1.0)
    return out
