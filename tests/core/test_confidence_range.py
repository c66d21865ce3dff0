"""The supported confidence range: the paired test against a plain loop, re-tempering
against a softmax of the logits, and the calibration's stored profile against the
calibrated model's own predictions."""

from __future__ import annotations

import math

import numpy as np
import torch

from napari_factortopy.core.analyses import confidence
from napari_factortopy.core.calibration import _layer_logits, calibrate
from napari_factortopy.core.confidence_range import (
    confidence_range,
    range_text,
    supported_ratios,
    tempered_confidence,
)
from napari_factortopy.core.metrics import r2_score
from napari_factortopy.core.training import predict

from .test_calibration import _drain, _trained


def _profile(rng, n_probe=60, v=200, shifts=(-0.05, 0.0, 0.0, 0.001, -0.004, -0.03), noise=0.002):
    taus = [0.75, 1.0, 1.5, 2.0, 3.0, 5.0]
    probe = np.sort(rng.choice(v, n_probe, replace=False))
    ref = rng.uniform(0.1, 0.4, n_probe)
    r2 = [ref + s + noise * rng.standard_normal(n_probe) for s in shifts]
    return {
        "probe": probe.tolist(),
        "temperatures": taus,
        "r2": [list(x) for x in r2],
        "reference": list(ref),
        "applied_tau": 1.5,
    }


def _naive(profile, members=None, z=2.0):
    """The supported ratios by loops over temperatures and vertices."""
    probe = profile["probe"]
    keep = [j for j, p in enumerate(probe) if members is None or members[p]]
    ok = []
    for t, row in zip(profile["temperatures"], profile["r2"], strict=True):
        d = [row[j] - profile["reference"][j] for j in keep]
        m = sum(d) / len(d)
        sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
        if m >= -z * sd / math.sqrt(len(d)):
            ok.append(t / profile["applied_tau"])
    return min([*ok, 1.0]), max([*ok, 1.0])


def test_supported_ratios_equal_a_plain_loop():
    rng = np.random.default_rng(0)
    prof = _profile(rng)
    lo, hi, n, pooled, open_lo, open_hi = supported_ratios(prof)
    assert (lo, hi) == _naive(prof) and n == 60 and not pooled
    # τ 1, 1.5, 2 supported (shifts 0, 0, +0.001; 2 s.e. ≈ 0.0005), 0.75, 3, 5 are not
    # (−0.05, −0.004, −0.03): ratios 1/1.5 … 2/1.5
    assert math.isclose(lo, 1 / 1.5) and math.isclose(hi, 2 / 1.5)
    assert not open_lo and not open_hi
    # a set with its own probe vertices, and one with too few (pooled)
    members = np.zeros(200, bool)
    members[prof["probe"][:30]] = True
    got = supported_ratios(prof, members)
    assert got[:2] == _naive(prof, members) and got[2] == 30 and not got[3]
    few = np.zeros(200, bool)
    few[prof["probe"][:5]] = True
    assert supported_ratios(prof, few)[2:4] == (60, True)


def test_re_tempering_equals_a_softmax_of_the_scaled_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 7)) * 2
    tau = 1.5
    pi = np.exp(tau * logits)
    pi /= pi.sum(1, keepdims=True)
    for r in (0.5, 1.0, 2.0, 10 / 3):
        direct = np.exp(r * tau * logits - (r * tau * logits).max(1, keepdims=True))
        direct /= direct.sum(1, keepdims=True)
        np.testing.assert_allclose(tempered_confidence(pi, r), confidence(direct), atol=1e-12)
    # monotone: sharper is more confident, and a one-hot row stays one-hot
    c = [tempered_confidence(pi, r).mean() for r in (0.5, 1.0, 2.0)]
    assert c[0] < c[1] < c[2]
    assert tempered_confidence(np.eye(4)[:2], 0.3).tolist() == [1.0, 1.0]


def test_range_brackets_the_stored_mean_and_says_where_the_grid_ends():
    rng = np.random.default_rng(2)
    prof = _profile(rng, shifts=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))  # all supported
    logits = rng.normal(size=(200, 5))
    pi = np.exp(1.5 * logits)
    pi /= pi.sum(1, keepdims=True)
    r = confidence_range(pi, prof)
    assert r.open_lo and r.open_hi and r.lo < r.mean < r.hi
    assert math.isclose(r.mean, confidence(pi).mean())
    assert math.isclose(r.lo, tempered_confidence(pi, 0.75 / 1.5).mean())
    assert math.isclose(r.hi, tempered_confidence(pi, 5.0 / 1.5).mean())
    assert range_text(r).startswith("≤") and "–≥" in range_text(r)


def test_the_calibration_keeps_a_profile_of_the_kept_readout():
    model, feats, y, split = _trained()
    with torch.no_grad():
        logits = _layer_logits(model).clone()
    _, res = _drain(calibrate(model, feats, y, split.train, split.val, n_probe=16))
    prof = res["profile"]
    assert res["applied"] and prof["applied_tau"] == res["tau"]
    assert len(prof["r2"]) == 6 and all(len(row) == 16 for row in prof["r2"])
    # the reference is the calibrated model's own validation R² on the probe vertices
    probe = np.asarray(prof["probe"])
    pred = predict(model, feats, split.val, amp=False)
    own = r2_score(y[split.val][:, probe], pred[:, probe])
    np.testing.assert_allclose(prof["reference"], own, atol=2e-5)
    # and the chosen temperature's curve holds it (its best ridge is the chosen one)
    k = prof["temperatures"].index(res["tau"])
    np.testing.assert_allclose(prof["r2"][k], prof["reference"], atol=1e-6)
    # re-tempering the calibrated weights by 1/τ gives back the trained softmax's confidence
    with torch.no_grad():
        layer = model.selectors().layer.numpy()
    trained = torch.softmax(logits, -1).numpy()
    np.testing.assert_allclose(
        tempered_confidence(layer, 1 / res["tau"]), confidence(trained), atol=1e-5
    )


def test_roi_table_and_info_rows_carry_each_rois_range():
    from types import SimpleNamespace

    from napari_factortopy.scene.tables import roi_rows

    rng = np.random.default_rng(3)
    v = 200
    prof = _profile(rng, v=v, n_probe=80)
    logits = rng.normal(size=(v, 5)) * 2
    pi = np.exp(1.5 * logits)
    pi /= pi.sum(1, keepdims=True)
    roi = np.repeat([1, 2, 3, 4], 50)
    model = SimpleNamespace(
        roi=roi,
        roi_names=["V1", "V2", "OPA", "EBA"],
        layer=pi,
        scale=np.full(v, 0.5),
        n_layers=5,
        backbone={},
        scores={},
        summary={"calibration": {"profile": prof}},
        evaluation={},
    )
    rows = {r["roi"]: r for r in roi_rows(model)}
    for k, name in enumerate(model.roi_names, start=1):
        want = confidence_range(pi, prof, roi == k)
        assert rows[name]["confidence_lo"] == want.lo and rows[name]["confidence_hi"] == want.hi
        assert want.lo <= rows[name]["confidence"] <= want.hi
        # the ROI's own probe vertices (80 spread over 4 ROIs: about 20 each) or the pool's
        n_own = int(np.isin(prof["probe"], np.flatnonzero(roi == k)).sum())
        assert want.pooled == (n_own < 20) and want.n_probe == (80 if want.pooled else n_own)
