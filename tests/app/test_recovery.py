"""Phantom recovery with the real thresholds, through the demo pipeline a user runs.

``run_demo_pipeline`` (what ``factortopy demo --no-gui`` runs) builds a reduced phantom
subject (EfficientNet-Lite0 features of 2,000 procedurally generated stimuli, a
FactorTopy-shaped truth, noisy responses), trains FactorTopy on it, soups, scores and
writes ``model.ftopy``, ``truth.ftopy``, ``layer_map.png`` and ``recovery.json``. The
fitted selectors must find the truth: the argmax layer of at least 85 % of the
vertices, the receptive-field centre within 0.15 (median, grid units of [−1, 1]), and
the hierarchy slope across the ROI levels (paper Table 2).

Training is capped at 16 epochs of 100 steps (1,600 steps, ``DemoOptions.max_epochs``)
so that the result does not depend on the machine's speed; the wall-clock budget is a
large fuse. With the cap the run is deterministic; measured (2 CPU threads):

====  ===============  ===============  ===============  ========
seed  layer_agreement  rf_error_median  hierarchy slope  r2_ratio
====  ===============  ===============  ===============  ========
0     0.922            0.020            0.569 (0.600)    0.908
1     0.886            0.017            0.574 (0.600)    0.917
2     0.893            0.017            0.598 (0.600)    0.922
====  ===============  ===============  ===============  ========

With one torch thread (how ``scripts/test.sh``'s parallel workers run it) seed 0 gives
0.924 / 0.021 / 0.569 / 0.909 in 163 s (2026-12-07).

Wall time: about 2.5 min on a quiet 2-core machine (extraction of 2,000 stimuli
≈ 30 s, 1,600 steps at ≈ 64 ms); over the 90 s aimed at. Smaller settings were not
robust: 1,200 stimuli and 1,200 steps gave 0.923 / 0.770 /
0.913; a bottleneck of 16 or 400–1,200 vertices plateaued near 0.8 (the thin ROI rings
of a small phantom and the residual blocks 11/12 behind EBA are the hard part).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from napari_factortopy.app.demo import DemoOptions, run_demo_pipeline
from napari_factortopy.core.fitted_model import FittedModel

OPTIONS = DemoOptions(
    n_vertices=2000,
    n_images=2000,
    train_seconds=3600.0,  # a fuse only: the epoch cap below ends training
    bottleneck=32,
    steps_per_epoch=100,
    max_epochs=16,
    device="cpu",
    seed=0,
)
MAX_EPOCHS = OPTIONS.max_epochs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the demo pipeline once; return its output folder, records and wall time."""
    out = tmp_path_factory.mktemp("recovery")
    t0 = time.perf_counter()
    records = list(run_demo_pipeline(out, OPTIONS))
    return out, records, time.perf_counter() - t0


def test_training_ran_the_capped_schedule(demo):
    _, records, _ = demo
    done = [
        r["record"] for r in records if r["stage"] == "train" and r["record"]["kind"] == "done"
    ]
    assert len(done) == 1
    validations = [
        r["record"]
        for r in records
        if r["stage"] == "train" and r["record"]["kind"] == "validation"
    ]
    assert [v["step"] for v in validations] == [100 * (i + 1) for i in range(MAX_EPOCHS)]


def test_layer_and_space_are_recovered(demo):
    out, records, _ = demo
    assert records[-1]["stage"] == "done"
    rec = records[-1]["recovery"]
    assert rec == json.loads((out / "recovery.json").read_text())
    assert rec["layer_agreement"] >= 0.85, rec["per_roi"]
    assert rec["rf_error_median"] <= 0.15, rec["per_roi"]
    # test-split R² close to what the truth itself reaches on the noisy responses
    assert rec["r2_ratio"] >= 0.8


def test_recovery_numbers_are_those_of_the_saved_models(demo):
    """The report's numbers, recomputed from ``model.ftopy`` and ``truth.ftopy``."""
    out, records, _ = demo
    rec = records[-1]["recovery"]
    fitted = FittedModel.load(out / "model.ftopy")
    truth = FittedModel.load(out / "truth.ftopy")
    assert fitted.summary["steps"] == 100 * MAX_EPOCHS
    agree = np.mean(fitted.layer.argmax(1) == truth.layer.argmax(1))
    assert rec["layer_agreement"] == pytest.approx(agree)
    rf = np.median(np.linalg.norm(fitted.space - truth.space, axis=1))
    assert rec["rf_error_median"] == pytest.approx(rf, rel=1e-5)


def test_hierarchy_slope_follows_the_truth(demo):
    """Positive and within 0.1 of the truth's slope (0.6 by the phantom's design)."""
    rec = demo[1][-1]["recovery"]
    assert rec["hierarchy_slope_truth"] == pytest.approx(0.6, abs=0.01)
    assert abs(rec["hierarchy_slope"] - rec["hierarchy_slope_truth"]) <= 0.1
