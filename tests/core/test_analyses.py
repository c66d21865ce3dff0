"""Selector analyses, checked against naive loops, closed forms and planted truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.cluster import KMeans

from napari_factortopy.core.analyses import (
    HierarchySlope,
    bilinear_resize,
    channel_clusters,
    confidence,
    hierarchy_levels,
    hierarchy_slope,
    kernel_features,
    layer_argmax,
    layer_position,
    roi_top_channels,
)


def _random_layer(rng, v, n_layers):
    x = rng.gamma(0.5, size=(v, n_layers))
    return x / x.sum(axis=1, keepdims=True)


# --- layer selector summaries -------------------------------------------------------


def test_confidence_matches_loop():
    rng = np.random.default_rng(0)
    pi = _random_layer(rng, 20, 5)
    pi[0] = [0, 0, 1, 0, 0]  # one-hot
    pi[1] = 0.2  # uniform
    pi[2] = [0.5, 0.5, 0, 0, 0]  # two of five: 1 - log2/log5
    got = confidence(pi)
    for v in range(20):
        h = -sum(p * math.log(p) for p in pi[v] if p > 0)
        assert got[v] == pytest.approx(1 - h / math.log(5), abs=1e-12)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(0.0, abs=1e-12)
    assert got[2] == pytest.approx(1 - math.log(2) / math.log(5))
    np.testing.assert_array_equal(confidence(np.ones((3, 1))), np.ones(3))


def test_argmax_and_position_match_loop():
    rng = np.random.default_rng(1)
    pi = _random_layer(rng, 15, 4)
    pos = layer_position(pi)
    idx = layer_argmax(pi)
    for v in range(15):
        assert pos[v] == pytest.approx(sum(pi[v, l] * l / 3 for l in range(4)))
        assert idx[v] == max(range(4), key=lambda l, v=v: pi[v, l])
    assert layer_position(np.eye(4)).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(layer_position(np.ones((2, 1))), np.zeros(2))


def test_hierarchy_slope_recovers_planted_line():
    # λ = 0.5·ideal + 0.3 exactly: vertex on level k has one-hot... build via two layers
    # with L = 2, λ_v = π_v1, so set π_v1 = 0.3 + 0.5·(k−1)/3.
    levels = np.array([1, 1, 2, 2, 2, 3, 4, 4, 0, 0])
    lam = 0.3 + 0.5 * (levels - 1) / 3
    lam[levels == 0] = 0.99  # excluded vertices must not matter
    pi = np.stack([1 - lam, lam], axis=1)
    fit = hierarchy_slope(pi, levels)
    assert isinstance(fit, HierarchySlope)
    assert fit.slope == pytest.approx(0.5)
    assert fit.intercept == pytest.approx(0.3)
    assert fit.top == pytest.approx(0.8)
    assert fit.n_vertices == 8


def test_hierarchy_slope_matches_polyfit():
    rng = np.random.default_rng(2)
    pi = _random_layer(rng, 200, 12)
    levels = rng.integers(0, 5, size=200)
    fit = hierarchy_slope(pi, levels)
    used = levels > 0
    lam = [sum(pi[v, l] * l / 11 for l in range(12)) for v in np.flatnonzero(used)]
    a, b = np.polyfit((levels[used] - 1) / 3, lam, 1)
    assert fit.slope == pytest.approx(a)
    assert fit.intercept == pytest.approx(b)
    assert fit.top == pytest.approx(a + b)


def test_hierarchy_slope_errors():
    pi = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"at least 2 distinct levels.*\[2\]"):
        hierarchy_slope(pi, np.array([2, 2, 0, 0]))
    with pytest.raises(ValueError, match=r"0\.\.4"):
        hierarchy_slope(pi, np.array([1, 2, 5, 0]))


def test_hierarchy_levels_from_names():
    names = ["V1v", "V1d", "V2v", "V3d", "hV4", "OPA", "EBA"]
    roi = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(hierarchy_levels(roi, names), [0, 1, 1, 2, 2, 0, 3, 4])
    np.testing.assert_array_equal(hierarchy_levels(roi[:3], names, levels={"V1d": 4}), [0, 0, 4])


def test_hierarchy_levels_of_combined_names():
    """The phantom's "V2/V3" and the paper's "V2V3" are level 2; mixed levels are not."""
    names = ["V2/V3", "V2V3", "V2+V3", "V1/V2", "V2/FFA"]
    roi = np.array([1, 2, 3, 4, 5])
    np.testing.assert_array_equal(hierarchy_levels(roi, names), [2, 2, 2, 0, 0])


# --- channel clusters -----------------------------------------------------------------


def test_kernel_features_preserve_kernel_row_distances():
    rng = np.random.default_rng(3)
    beta = rng.normal(size=(25, 6))
    feats = kernel_features(beta)
    kernel = beta @ beta.T  # naive V×V, fine for a test
    for i in range(25):
        for j in range(i + 1, 25):
            dk = math.sqrt(sum((kernel[i, t] - kernel[j, t]) ** 2 for t in range(25)))
            df = np.linalg.norm(feats[i] - feats[j])
            assert df == pytest.approx(dk, rel=1e-9)
    # M is the symmetric PSD square root: (βᵀβ)^{1/2} · (βᵀβ)^{1/2} = βᵀβ
    m = np.linalg.lstsq(beta, feats, rcond=None)[0]
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    np.testing.assert_allclose(m @ m, beta.T @ beta, rtol=1e-9, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(m) > -1e-9)


def _same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_channel_clusters_match_kernel_clustering_and_truth():
    rng = np.random.default_rng(4)
    n_groups, d = 4, 8
    proto = rng.normal(size=(n_groups, d)) * 3
    sizes = [60, 45, 30, 15]
    truth = np.repeat(np.arange(n_groups), sizes)
    beta = proto[truth] + 0.05 * rng.normal(size=(len(truth), d))
    res = channel_clusters(beta, n_clusters=4, n_kmeans=12, seed=0)

    # Reference: the paper's recipe on the rows of the V×V kernel itself.
    kernel = beta @ beta.T
    km = KMeans(n_clusters=12, n_init=1, random_state=0).fit(kernel)
    ward = fcluster(linkage(km.cluster_centers_, method="ward"), 4, criterion="maxclust")
    ref = ward[km.labels_]

    assert _same_partition(res.labels, ref)
    assert _same_partition(res.labels, truth)
    # relabelled by descending size: the biggest planted group is cluster 0
    np.testing.assert_array_equal(res.labels, truth)
    np.testing.assert_array_equal(res.labels, res.centroid_labels[res.kmeans_labels])
    assert res.kmeans_labels.min() >= 0 and res.kmeans_labels.max() < 12
    # deterministic
    again = channel_clusters(beta, n_clusters=4, n_kmeans=12, seed=0)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_channel_clusters_k_at_least_v():
    rng = np.random.default_rng(5)
    beta = np.concatenate([rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 20.0])
    res = channel_clusters(beta, n_clusters=2, n_kmeans=1000)
    np.testing.assert_array_equal(res.kmeans_labels, np.arange(10))
    assert _same_partition(res.labels, np.repeat([0, 1], 5))
    assert set(res.labels.tolist()) == {0, 1}


# --- ROI top channels -------------------------------------------------------------------


def test_bilinear_resize_matches_loop():
    rng = np.random.default_rng(6)
    img = rng.uniform(size=(3, 4))
    out = bilinear_resize(img, (7, 5))
    for i in range(7):
        for j in range(5):
            sy = min(max((i + 0.5) * 3 / 7 - 0.5, 0), 2)
            sx = min(max((j + 0.5) * 4 / 5 - 0.5, 0), 3)
            y0, x0 = math.floor(sy), math.floor(sx)
            y1, x1 = min(y0 + 1, 2), min(x0 + 1, 3)
            ty, tx = sy - y0, sx - x0
            val = (
                (1 - ty) * (1 - tx) * img[y0, x0]
                + (1 - ty) * tx * img[y0, x1]
                + ty * (1 - tx) * img[y1, x0]
                + ty * tx * img[y1, x1]
            )
            assert out[i, j] == pytest.approx(val)
    # same size → identity
    np.testing.assert_allclose(bilinear_resize(img, (3, 4)), img)


def _percentile(values, q):
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def _naive_top_channels(a, pi, beta, mask, out_size):
    n_layers, d, h, w = a.shape
    idx = np.flatnonzero(mask)
    pibar = [sum(pi[v, l] for v in idx) / len(idx) for l in range(n_layers)]
    m = np.zeros((d, h, w))
    for l in range(n_layers):
        m += pibar[l] * a[l]
    b = beta[idx]
    cov = (b - b.mean(0)).T @ (b - b.mean(0))
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:3]
    img = np.zeros((h, w, 3))
    for c, k in enumerate(order):
        u = evecs[:, k]
        if u[np.argmax(np.abs(u))] < 0:
            u = -u
        for y in range(h):
            for x in range(w):
                img[y, x, c] = sum(u[t] * m[t, y, x] for t in range(d))
        vals = img[:, :, c].ravel().tolist()
        lo, hi = _percentile(vals, 5), _percentile(vals, 95)
        img[:, :, c] = (np.clip(img[:, :, c], lo, hi) - lo) / (hi - lo)
    big_h, big_w = out_size
    out = np.zeros((big_h, big_w, 3))
    for i in range(big_h):
        for j in range(big_w):
            sy = min(max((i + 0.5) * h / big_h - 0.5, 0), h - 1)
            sx = min(max((j + 0.5) * w / big_w - 0.5, 0), w - 1)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ty, tx = sy - y0, sx - x0
            out[i, j] = (
                (1 - ty) * (1 - tx) * img[y0, x0]
                + (1 - ty) * tx * img[y0, x1]
                + ty * (1 - tx) * img[y1, x0]
                + ty * tx * img[y1, x1]
            )
    return out


def test_roi_top_channels_matches_naive_loop():
    rng = np.random.default_rng(7)
    n_layers, d, h, w, v = 3, 6, 5, 4, 40
    a = rng.normal(size=(n_layers, d, h, w))
    pi = _random_layer(rng, v, n_layers)
    # distinct variances so the principal directions are well defined
    beta = rng.normal(size=(v, d)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])
    roi = np.repeat([0, 1, 2, 3], 10)
    names = ["A", "B", "C", "D"]
    got = roi_top_channels(a, pi, beta, roi, names, out_size=(9, 7))
    assert list(got) == ["A", "B", "C"]  # D has no vertices
    for k, name in enumerate(["A", "B", "C"], start=1):
        ref = _naive_top_channels(a, pi, beta, roi == k, (9, 7))
        assert got[name].shape == (9, 7, 3)
        np.testing.assert_allclose(got[name], ref, atol=1e-10)
        assert got[name].min() >= 0 and got[name].max() <= 1

    sub = roi_top_channels(a, pi, beta, roi, names, out_size=(9, 7), rois=["B"])
    assert list(sub) == ["B"]
    np.testing.assert_allclose(sub["B"], got["B"])
    with pytest.raises(ValueError, match="no vertices"):
        roi_top_channels(a, pi, beta, roi, names, rois=["D"])


def test_roi_top_channels_degenerate_roi_is_mid_grey():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(2, 4, 3, 3))
    pi = _random_layer(rng, 3, 2)
    beta = rng.normal(size=(3, 4))
    roi = np.array([1, 2, 2])
    got = roi_top_channels(a, pi, beta, roi, ["one", "two"], out_size=(4, 4))
    # one vertex: no principal direction at all → every channel constant 0.5
    np.testing.assert_allclose(got["one"], 0.5)
    # two vertices: one direction; the 2nd and 3rd channels are 0.5
    np.testing.assert_allclose(got["two"][..., 1:], 0.5)
    assert np.ptp(got["two"][..., 0]) > 0.5
