"""The recovery report's numbers on constructed cases with known answers."""

import numpy as np
import pytest

from napari_factortopy.app.recovery import (
    markdown_table,
    recovery_metrics,
    recovery_report,
    seed_consistency,
)
from napari_factortopy.core.analyses import confidence, hierarchy_slope

ROI_NAMES = ["V1", "V2/V3", "OPA", "EBA"]


def _truth(v=200, n_layers=16, seed=0):
    rng = np.random.default_rng(seed)
    roi = np.repeat(np.arange(1, 5), v // 4)
    argmax = np.array([2, 6, 9, 12])[roi - 1] + rng.integers(-1, 2, size=v)
    layer = np.zeros((v, n_layers))
    layer[np.arange(v), argmax] = 0.6
    layer[np.arange(v), argmax - 1] = 0.25
    layer[np.arange(v), argmax + 1] = 0.15
    truth = {
        "layer": layer,
        "argmax": argmax,
        "confidence": confidence(layer),
        "space": rng.uniform(-0.8, 0.8, size=(v, 2)),
        "scale": rng.uniform(0, 0.6, size=v),
    }
    return truth, roi


def test_the_truth_itself_recovers_perfectly():
    truth, roi = _truth()
    m = recovery_metrics(truth["layer"], truth["space"], truth["scale"], truth, roi, ROI_NAMES)
    assert m["layer_exact"] == 1 and m["layer_within1"] == 1
    assert m["rf_error_median"] == 0 and m["scale_error_mean"] == 0
    assert m["hierarchy_slope"] == pytest.approx(m["hierarchy_slope_truth"])
    assert m["confidence_mean"] == pytest.approx(m["confidence_truth_mean"])
    for name in ROI_NAMES:
        assert m["per_roi"][name]["layer_exact"] == 1
        assert m["per_roi"][name]["n_vertices"] == 50


def test_known_shifts_give_known_numbers():
    truth, roi = _truth()
    v = len(roi)
    layer = truth["layer"].copy()
    # first half: argmax one layer up; second quarter of those… a quarter two layers up
    up1 = np.arange(v) % 4 == 0
    up2 = np.arange(v) % 4 == 1
    layer[up1] = np.roll(layer[up1], 1, axis=1)
    layer[up2] = np.roll(layer[up2], 2, axis=1)
    space = truth["space"] + np.array([0.3, 0.4])  # 0.5 away everywhere
    scale = truth["scale"] + 0.1
    m = recovery_metrics(layer, space, scale, truth, roi, ROI_NAMES)
    assert m["layer_exact"] == pytest.approx(0.5)
    assert m["layer_within1"] == pytest.approx(0.75)
    assert m["rf_error_median"] == pytest.approx(0.5)
    assert m["scale_error_mean"] == pytest.approx(0.1)
    assert m["confidence_mean"] == pytest.approx(m["confidence_truth_mean"])  # rolled, same H
    # hierarchy: the same closed form as core.analyses on both
    lev = roi  # V1, V2/V3, OPA, EBA are levels 1..4
    assert m["hierarchy_slope"] == pytest.approx(hierarchy_slope(layer, lev).slope)
    assert m["hierarchy_slope_truth"] == pytest.approx(hierarchy_slope(truth["layer"], lev).slope)
    # a uniform fitted selector: zero confidence, zero slope
    flat = np.full_like(layer, 1 / layer.shape[1])
    m = recovery_metrics(flat, space, scale, truth, roi, ROI_NAMES)
    assert m["confidence_mean"] == pytest.approx(0, abs=1e-12)
    assert m["hierarchy_slope"] == pytest.approx(0, abs=1e-12)


def test_truth_argmax_and_confidence_default_to_the_layer_weights():
    truth, roi = _truth()
    lean = {"layer": truth["layer"], "space": truth["space"]}
    m = recovery_metrics(truth["layer"], truth["space"], truth["scale"], lean, roi, ROI_NAMES)
    assert m["layer_exact"] == 1
    assert m["confidence_truth_mean"] == pytest.approx(truth["confidence"].mean())
    assert np.isnan(m["scale_error_mean"])
    with pytest.raises(ValueError, match="differ"):
        recovery_metrics(truth["layer"][:, :8], truth["space"], None, truth, roi, ROI_NAMES)


def test_seed_consistency():
    truth, _ = _truth()
    a = truth["layer"]
    b = a.copy()
    b[:50] = np.roll(b[:50], 1, axis=1)  # 50 of 200 vertices one layer off
    c = a.copy()
    c[150:] = np.roll(c[150:], 3, axis=1)  # 50 others three layers off
    s = seed_consistency([a, b, c])
    assert s["all_exact"] == pytest.approx(0.5)
    assert s["all_within1"] == pytest.approx(0.75)
    assert s["pairwise_exact"] == pytest.approx((0.75 + 0.75 + 0.5) / 3)
    assert s["n_models"] == 3
    assert seed_consistency([a, a])["all_exact"] == 1
    with pytest.raises(ValueError, match="at least 2"):
        seed_consistency([a])


class _Phantom:
    """A stand-in PhantomSubject."""

    def __init__(self, truth, roi, n_images=40, seed=0):
        from types import SimpleNamespace

        rng = np.random.default_rng(seed)
        v = len(roi)
        self.truth = truth
        self.surface = SimpleNamespace(roi=roi, vertex_ids=np.arange(v))
        self.signal = rng.normal(size=(n_images, v)).astype(np.float32)
        self.responses = self.signal + rng.normal(size=(n_images, v)).astype(np.float32)
        self.root = "phantom"
        self.generator = "mismatch"


def test_report_on_a_fitted_model():
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.metrics import r2_score

    truth, roi = _truth()
    v = len(roi)
    ph = _Phantom(truth, roi)
    fitted = FittedModel(
        config={"widths": [8] * 16},
        state={},
        space=truth["space"],
        layer=truth["layer"],
        scale=truth["scale"],
        vertex_ids=np.arange(v),
        n_lh=v // 2,
        roi=roi,
        roi_names=ROI_NAMES,
        split={"test": np.arange(30, 40)},
        scores={"r2_test": np.full(v, 0.2)},
        summary={"steps": 123, "train_seconds": 4.5, "convergence": {"line": "converged"}},
    )
    r = recovery_report(fitted, ph)
    assert r["layer_exact"] == 1 and r["rf_error_median"] == 0
    assert r["steps"] == 123 and r["convergence"] == "converged"
    expect = np.mean(r2_score(ph.responses[30:40], ph.signal[30:40]))
    assert r["r2_truth_mean"] == pytest.approx(expect, rel=1e-6)
    assert r["r2_ratio"] == pytest.approx(0.2 / expect, rel=1e-6)
    fitted.summary = {}
    assert recovery_report(fitted, ph)["convergence"] is None
    ph.surface.vertex_ids = np.arange(v) + 1
    with pytest.raises(ValueError, match="not the phantom's"):
        recovery_report(fitted, ph)


def test_markdown_table():
    t = markdown_table(
        [{"a": 0.12345, "b": None, "c": "x|y"}, {"a": float("nan"), "b": 3, "c": "z"}],
        [("A", "a"), ("B", "b"), ("C", "c")],
    )
    assert t.splitlines() == [
        "| A | B | C |",
        "|---|---|---|",
        "| 0.123 | – | x\\|y |",
        "| – | 3 | z |",
    ]
