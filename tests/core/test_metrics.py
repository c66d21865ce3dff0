"""Per-vertex scores and ROI summaries, checked against naive loops and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_factortopy.core.metrics import (
    difference_to_max,
    max_model,
    noise_normalised,
    pearson_r,
    r2_score,
    roi_table,
)


def _r2_loop(yt, yp):
    out = []
    for v in range(yt.shape[1]):
        col = [float(x) for x in yt[:, v]]
        mean = sum(col) / len(col)
        ss_tot = sum((x - mean) ** 2 for x in col)
        ss_res = sum((a - float(b)) ** 2 for a, b in zip(col, yp[:, v], strict=True))
        out.append(math.nan if ss_tot == 0 else 1 - ss_res / ss_tot)
    return np.array(out)


def _r_loop(yt, yp):
    out = []
    for v in range(yt.shape[1]):
        a = [float(x) for x in yt[:, v]]
        b = [float(x) for x in yp[:, v]]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
        va = sum((x - ma) ** 2 for x in a)
        vb = sum((y - mb) ** 2 for y in b)
        out.append(math.nan if va == 0 or vb == 0 else cov / math.sqrt(va * vb))
    return np.array(out)


def test_r2_matches_loop_and_special_cases():
    rng = np.random.default_rng(0)
    yt = rng.normal(size=(40, 6))
    yp = yt + rng.normal(scale=0.7, size=yt.shape)
    yp[:, 1] = yt[:, 1]  # perfect → 1
    yp[:, 2] = yt[:, 2].mean()  # the mean → 0
    yp[:, 3] = -yt[:, 3]  # worse than the mean → negative
    yt[:, 4] = 3.0  # constant → nan
    got = r2_score(yt, yp)
    np.testing.assert_allclose(got, _r2_loop(yt, yp), rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(0.0, abs=1e-12)
    # y_pred = -y_true: SS_res = Σ(2y)² = 4·Σy², SS_tot = Σ(y-ȳ)²
    y = yt[:, 3]
    assert got[3] == pytest.approx(1 - 4 * np.sum(y**2) / np.sum((y - y.mean()) ** 2))
    assert np.isnan(got[4])


def test_pearson_matches_loop_and_special_cases():
    rng = np.random.default_rng(1)
    yt = rng.normal(size=(30, 5))
    yp = 0.5 * yt + rng.normal(size=yt.shape)
    yp[:, 0] = 2 * yt[:, 0] + 7  # affine → 1
    yp[:, 1] = -yt[:, 1]  # → -1
    yp[:, 2] = 1.0  # constant prediction → nan
    got = pearson_r(yt, yp)
    np.testing.assert_allclose(got, _r_loop(yt, yp), rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(-1.0)
    assert np.isnan(got[2])
    # agrees with numpy's corrcoef on a regular column
    assert got[3] == pytest.approx(np.corrcoef(yt[:, 3], yp[:, 3])[0, 1])


def test_scores_in_column_blocks_match_the_loops(monkeypatch):
    """Scores are computed a block of columns at a time (their float64 copies would
    otherwise grow with V): blocks of 3 columns of 20 rows, special columns falling in
    different blocks and the last block short, give the naive loops' numbers."""
    import napari_factortopy.core.metrics as metrics

    monkeypatch.setattr(metrics, "BLOCK_BYTES", 3 * 20 * 8)
    rng = np.random.default_rng(5)
    yt = rng.normal(size=(20, 11)).astype(np.float32)
    yp = (0.6 * yt + rng.normal(size=yt.shape)).astype(np.float32)
    yt[:, 4] = 2.0  # constant truth → nan, in the second block
    yp[:, 9] = -1.0  # constant prediction → nan r, in the last, short block
    yp[:, 7] = yt[:, 7]  # perfect
    np.testing.assert_allclose(
        r2_score(yt, yp), _r2_loop(yt, yp), rtol=1e-10, atol=1e-10, equal_nan=True
    )
    np.testing.assert_allclose(
        pearson_r(yt, yp), _r_loop(yt, yp), rtol=1e-10, atol=1e-10, equal_nan=True
    )
    assert r2_score(yt, yp)[7] == 1.0 and np.isnan(r2_score(yt, yp)[4])
    assert np.isnan(pearson_r(yt, yp)[9]) and not np.isnan(pearson_r(yt, yp)[8])


def test_scores_of_many_vertices_take_memory_by_block_not_by_vertex(monkeypatch):
    """The peak of the Python allocations while scoring (N, V) float32 arrays stays
    near a few blocks, not the several float64 copies of (N, V) it took before."""
    import tracemalloc

    import napari_factortopy.core.metrics as metrics

    BLOCK_BYTES = 2**20
    monkeypatch.setattr(metrics, "BLOCK_BYTES", BLOCK_BYTES)
    rng = np.random.default_rng(0)
    yt = rng.normal(size=(200, 40_000)).astype(np.float32)  # 64 MB as float64
    yp = yt + rng.normal(size=yt.shape).astype(np.float32)
    for score in (r2_score, pearson_r):
        tracemalloc.start()
        score(yt, yp)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 6 * BLOCK_BYTES + 40_000 * 8 * 4, (score.__name__, peak / 2**20)
        assert peak < yt.size * 8  # less than one float64 copy of the whole


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        r2_score(np.zeros((4, 3)), np.zeros((4, 2)))


def test_roi_table_rows():
    values = np.array([1.0, 2.0, 3.0, np.nan, 10.0, 20.0, 5.0, 7.0])
    roi = np.array([1, 1, 1, 1, 3, 3, 0, 0])
    rows = roi_table(values, roi, ["V1", "V2", "V3"])
    assert [r["roi"] for r in rows] == ["V1", "V3", "all"]  # V2 absent → no row
    v1, v3, total = rows
    assert v1["n"] == 4 and v1["label"] == 1
    assert v1["mean"] == pytest.approx(2.0) and v1["median"] == pytest.approx(2.0)
    assert v3["n"] == 2 and v3["mean"] == pytest.approx(15.0)
    assert v3["median"] == pytest.approx(15.0)
    finite = [1, 2, 3, 10, 20, 5, 7]
    assert total["n"] == 8
    assert total["mean"] == pytest.approx(sum(finite) / len(finite))
    assert total["median"] == pytest.approx(5.0)


def test_roi_table_all_nan_and_bad_labels():
    rows = roi_table(np.array([np.nan, np.nan]), np.array([1, 1]), ["A"])
    assert math.isnan(rows[0]["mean"]) and math.isnan(rows[0]["median"])
    with pytest.raises(ValueError, match="no name"):
        roi_table(np.zeros(2), np.array([0, 2]), ["A"])
    with pytest.raises(ValueError, match=">= 0"):
        roi_table(np.zeros(2), np.array([0, -1]), ["A"])


def test_noise_normalised_closed_form():
    r = np.array([0.5, -0.3, 0.9, 0.2, 0.4, np.nan])
    nc = np.array([0.5, 0.5, 0.5, 0.0, 0.16, 0.5])
    got = noise_normalised(r, nc)
    expected = [100 * 0.25 / 0.5, 0.0, 100.0, math.nan, 100.0, math.nan]
    np.testing.assert_allclose(got, expected, equal_nan=True)


def test_max_model_and_difference():
    scores = np.array(
        [
            [0.1, 0.5, 0.2, np.nan, 0.3],
            [0.3, 0.4, np.nan, np.nan, 0.0],
        ]
    )
    np.testing.assert_allclose(max_model(scores), [0.3, 0.5, 0.2, np.nan, 0.3], equal_nan=True)
    roi = np.array([1, 1, 2, 2, 0])
    diff = difference_to_max(scores, roi, ["A", "B", "C"], include_all=True, reduction="mean")
    assert diff.shape == (2, 4)
    # model 0, ROI A: gaps (0.2, 0) → sqrt((0.04 + 0)/2)
    assert diff[0, 0] == pytest.approx(math.sqrt(0.04 / 2))
    # model 1, ROI A: gaps (0, 0.1) → sqrt(0.01/2)
    assert diff[1, 0] == pytest.approx(math.sqrt(0.01 / 2))
    # ROI B: model 0 has the max on its only finite vertex; model 1 has no finite vertex
    assert diff[0, 1] == pytest.approx(0.0)
    assert math.isnan(diff[1, 1])
    # ROI C has no vertices
    assert np.all(np.isnan(diff[:, 2]))
    # "all": model 1 gaps over finite vertices (0, 0.1, 0.3)
    assert diff[1, 3] == pytest.approx(math.sqrt((0.01 + 0.09) / 3))


def test_difference_to_max_is_rms_not_sum():
    """Doubling an ROI by repeating its vertices leaves the value unchanged."""
    rng = np.random.default_rng(2)
    s = rng.uniform(size=(3, 10))
    d1 = difference_to_max(s, np.ones(10, dtype=int), ["R"], reduction="mean")
    d2 = difference_to_max(
        np.concatenate([s, s], axis=1), np.ones(20, dtype=int), ["R"], reduction="mean"
    )
    np.testing.assert_allclose(d1, d2)
    best = s.max(axis=0)
    for m in range(3):
        naive = math.sqrt(sum((best[v] - s[m, v]) ** 2 for v in range(10)) / 10)
        assert d1[m, 0] == pytest.approx(naive)


def test_difference_to_max_default_is_root_sum_square():
    """METHOD.md §5: root of the *sum* of squared gaps (naive loop)."""
    rng = np.random.default_rng(5)
    s = rng.uniform(size=(3, 12))
    roi = np.array([1] * 5 + [2] * 7)
    d = difference_to_max(s, roi, ["A", "B"])
    best = s.max(axis=0)
    for m in range(3):
        for k, rows in ((0, range(5)), (1, range(5, 12))):
            naive = math.sqrt(sum((best[v] - s[m, v]) ** 2 for v in rows))
            assert d[m, k] == pytest.approx(naive)
    with pytest.raises(ValueError, match="reduction"):
        difference_to_max(s, roi, ["A", "B"], reduction="max")


def test_noise_ceiling_from_ncsnr_by_hand():
    from napari_factortopy.core.metrics import noise_ceiling_from_ncsnr

    snr = np.array([1.0, 0.5, 0.0, np.nan])
    # n = 3 averaged trials: NC = snr² / (snr² + 1/3)
    np.testing.assert_allclose(
        noise_ceiling_from_ncsnr(snr, 3), [0.75, 0.25 / (0.25 + 1 / 3), 0.0, np.nan]
    )
    # images seen 1, 3 and 3 times: 1/n is the mean of 1/n_i = (1 + 1/3 + 1/3) / 3 = 5/9
    np.testing.assert_allclose(
        noise_ceiling_from_ncsnr(np.array([2.0]), [1, 3, 3]), [4 / (4 + 5 / 9)]
    )
    with pytest.raises(ValueError, match=">= 1"):
        noise_ceiling_from_ncsnr(snr, 0)


def test_challenge_score_against_a_hand_computation():
    """The Algonauts 2023 score, worked by hand and by the challenge's own steps."""
    from napari_factortopy.core.metrics import challenge_scores

    r = np.array([0.6, -0.2, 0.9, 0.3, np.nan, 0.5])
    nc_percent = np.array([72.0, 50.0, 40.0, np.nan, 30.0, 25.0])
    roi = np.array([1, 1, 2, 2, 0, 2])
    scores, summary = challenge_scores(r, nc_percent / 100, "hand", roi, ["A", "B"])
    # 100·0.36/0.72 = 50; r < 0 → 0; 100·0.81/0.40 = 202.5 → 100; no NC; no r; 100·.25/.25
    want = [50.0, 0.0, 100.0, np.nan, np.nan, 100.0]
    np.testing.assert_allclose(scores["nc_test"], want, equal_nan=True)
    np.testing.assert_allclose(scores["noise_ceiling"], nc_percent, equal_nan=True)
    assert summary["nc_test_mean"] == pytest.approx(250 / 4)
    assert summary["noise_ceiling"] == {
        "source": "hand",
        "vertices": 5,
        "mean_percent": pytest.approx((72 + 50 + 40 + 30 + 25) / 5),
    }
    rows = {row["roi"]: row["mean"] for row in summary["roi_nc_test"]}
    assert rows["A"] == pytest.approx(25.0) and rows["B"] == pytest.approx(100.0)
    # the challenge's own steps (development kit): negative r set to 0, r² / NC · 100,
    # capped at 100, mean over vertices
    c = np.where(r < 0, 0, r)
    devkit = np.minimum(c**2 / (nc_percent / 100) * 100, 100)
    ok = np.isfinite(devkit)
    assert summary["nc_test_mean"] == pytest.approx(devkit[ok].mean())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        challenge_scores(r, nc_percent, "percent by mistake")


def test_split_scores_of_blocks_match_the_loops(tmp_path):
    """R² and r of predictions that come in uneven blocks, with responses read by rows
    from their files (rows of the split out of order), give the plain loops' numbers:
    special columns (constant truth, constant prediction, perfect, mean) included."""
    from napari_factortopy.core.metrics import SplitScores
    from napari_factortopy.core.responses import ResponseRows

    rng = np.random.default_rng(7)
    y = (rng.normal(size=(50, 9)) + 40.0).astype(np.float32)  # a large mean
    y[:, 4] = 2.5
    np.save(tmp_path / "y.npy", y)
    rows = rng.permutation(50)[:31]
    yt = y[rows]
    yp = (0.6 * yt + rng.normal(size=yt.shape)).astype(np.float32)
    yp[:, 7] = yt[:, 7]  # perfect
    yp[:, 8] = -1.0  # constant prediction
    yp[:, 1] = yt[:, 1].mean()  # the mean
    for responses in (y, ResponseRows([np.load(tmp_path / "y.npy", mmap_mode="r")])):
        s = SplitScores(responses, rows, max_bytes=2 * 9 * 8)  # two rows per block
        for _ in range(2):  # a second pass after reset gives the same
            s.reset()
            for lo, hi in ((0, 1), (1, 8), (8, 20), (20, 31)):
                s.add(yp[lo:hi])
            np.testing.assert_allclose(
                s.r2(), _r2_loop(yt, yp), rtol=1e-9, atol=1e-9, equal_nan=True
            )
            np.testing.assert_allclose(
                s.pearson(), _r_loop(yt, yp), rtol=1e-9, atol=1e-9, equal_nan=True
            )
        assert np.isnan(s.r2()[4]) and np.isnan(s.pearson()[8]) and s.r2()[7] == 1.0
    s.reset()
    s.add(yp[:10])
    with pytest.raises(ValueError, match="10 of the split's 31 rows"):
        s.r2()
    with pytest.raises(ValueError, match="42 predicted rows for a split of 31"):
        s.add(np.vstack([yp, yp[:1]]))
