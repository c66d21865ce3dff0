"""The permutation null and BH FDR against known truths: pure noise gives about 5 %
false positives at 0.05 uncorrected and about none after FDR; strong signal is found;
p-values equal a plain loop, repeats move together."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.significance import (
    benjamini_hochberg,
    not_significant,
    permutation_pvalues,
    significance_summary,
)


def test_pure_noise_five_percent_uncorrected_none_after_fdr():
    rng = np.random.default_rng(0)
    n, v = 120, 4000
    y, yhat = rng.normal(size=(n, v)), rng.normal(size=(n, v))
    res = permutation_pvalues(y, yhat, 500, seed=1)
    p = res["p_value"]
    share = float((p <= 0.05).mean())
    # binomial SD of the share at 4000 vertices is 0.0034; the permutation p is exact
    assert 0.04 <= share <= 0.06
    q = benjamini_hochberg(p)
    assert int((q <= 0.05).sum()) <= 2  # BH under the global null: P(any) <= 0.05
    # the null's spread is the textbook one for r: about 1 / sqrt(n - 1)
    assert np.median(res["null_sd"]) == pytest.approx(1 / np.sqrt(n - 1), rel=0.05)


def test_strong_signal_is_detected_and_fdr_holds_on_a_mixture():
    rng = np.random.default_rng(2)
    n, v = 150, 2000
    y = rng.normal(size=(n, v))
    signal = np.zeros(v, bool)
    signal[:400] = True  # 20 % of vertices carry signal (r about 0.45)
    yhat = rng.normal(size=(n, v))
    yhat[:, signal] = y[:, signal] + 2.0 * rng.normal(size=(n, int(signal.sum())))
    p = permutation_pvalues(y, yhat, 1000, seed=3)["p_value"]
    q = benjamini_hochberg(p)
    found = q <= 0.05
    assert found[signal].mean() > 0.97  # power
    fdp = (found & ~signal).sum() / max(found.sum(), 1)
    assert fdp <= 0.05  # realised false-discovery proportion (expected <= 0.05 · 0.8)
    s = significance_summary(p, q, 0.05)
    assert s["n_tested"] == v and s["n_significant"] == int(found.sum())


def test_p_values_equal_a_plain_loop_with_repeats_moving_together():
    rng = np.random.default_rng(4)
    groups = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])  # images with 1-3 repeats
    n_img, v = 6, 3
    pred_img = rng.normal(size=(n_img, v))
    yhat = pred_img[groups]
    y = yhat * np.array([1.0, 0.0, -1.0]) + rng.normal(size=(len(groups), v))
    res = permutation_pvalues(y, yhat, 200, groups=groups, seed=7)
    perms = np.random.default_rng(7)
    perms = [perms.permutation(n_img) for _ in range(200)]
    obs = [np.corrcoef(y[:, j], yhat[:, j])[0, 1] for j in range(v)]
    for j in range(v):
        null = [np.corrcoef(y[:, j], pred_img[pi][groups][:, j])[0, 1] for pi in perms]
        want = (1 + sum(x >= obs[j] - 1e-12 for x in null)) / 201
        assert res["p_value"][j] == pytest.approx(want)
        assert res["observed"][j] == pytest.approx(obs[j])


def test_without_repeats_the_r_test_is_the_r2_test():
    """R² and r rank the permutations alike: a plain loop over R² gives the same p."""
    rng = np.random.default_rng(5)
    y = rng.normal(size=(40, 2))
    yhat = 0.3 * y + rng.normal(size=(40, 2)) + 0.5  # an offset: R² < r²
    res = permutation_pvalues(y, yhat, 300, seed=9)
    perms = np.random.default_rng(9)
    perms = [perms.permutation(40) for _ in range(300)]

    def r2(a, b):
        return 1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum()

    for j in range(2):
        obs = r2(y[:, j], yhat[:, j])
        want = (1 + sum(r2(y[:, j], yhat[pi, j]) >= obs - 1e-12 for pi in perms)) / 301
        assert res["p_value"][j] == pytest.approx(want)


def test_benjamini_hochberg_against_the_textbook_procedure():
    rng = np.random.default_rng(6)
    p = np.r_[rng.uniform(0, 0.01, 30), rng.uniform(0, 1, 170), np.nan]
    q = benjamini_hochberg(p)
    assert np.isnan(q[-1])
    m = 200
    order = np.argsort(p[:-1])
    passed = [k for k in range(1, m + 1) if p[order[k - 1]] <= k * 0.05 / m]
    k_max = max(passed) if passed else 0
    want = np.zeros(m, bool)
    want[order[:k_max]] = True
    np.testing.assert_array_equal(q[:-1] <= 0.05, want)
    assert (q[:-1] >= p[:-1]).all() and (q[:-1] <= 1).all()
    with pytest.raises(ValueError):
        benjamini_hochberg(np.array([1.5]))


def test_constant_vertices_are_not_tested_and_greyed():
    y = np.ones((10, 2))
    y[:, 1] = np.arange(10)
    p = permutation_pvalues(y, np.arange(20.0).reshape(10, 2), 50)["p_value"]
    assert np.isnan(p[0]) and p[1] == pytest.approx(1 / 51)

    from types import SimpleNamespace

    M = SimpleNamespace(
        vertex_ids=np.arange(3),
        evaluation={"q_value": np.array([0.01, 0.2, np.nan])},
        summary={"evaluation": {"alpha": 0.05}},
    )
    np.testing.assert_array_equal(not_significant(M), [False, True, True])
    M.summary = {"evaluation": {"alpha": 0.25}}
    np.testing.assert_array_equal(not_significant(M), [False, False, True])
    M.evaluation = {}
    assert not not_significant(M).any()
