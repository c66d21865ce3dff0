"""Sharpness calibration: the ridge readout against a naive per-vertex solve, the folded
temperature against softmax(τ·logits), and the choice against the validation split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_factortopy.core.analyses import confidence
from napari_factortopy.core.calibration import (
    _layer_logits,
    _selectors,
    calibrate,
    calibration_line,
    ridge_readout,
)
from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import predict, train

from .test_training import _fresh, _problem


def _drain(gen):
    recs = []
    while True:
        try:
            recs.append(next(gen))
        except StopIteration as done:
            return recs, done.value


def _trained(seed=0):
    coords, feats, y = _problem(n_images=160, v=24, seed=seed)
    split = make_split(len(y), seed=0)
    model = _fresh(coords)
    cfg = TrainConfig(batch_size=8, steps_per_epoch=40, max_epochs=4, lr=5e-3, log_every=1000)
    for _ in train(model, feats, y, split, cfg):
        pass
    return model, feats, y, split


def test_ridge_readout_equals_a_naive_per_vertex_solve():
    model, feats, y, split = _trained()
    rows = np.array([0, 3, 7, 11, 20])
    logits = _layer_logits(model)
    with torch.no_grad():
        sel = _selectors(model.selectors(), logits, 1.7, rows)
    (readouts,) = ridge_readout(model, feats, y, split.train, [sel], rows, (1e-2, 1.0))
    # naive: every training image's features for these vertices, one vertex at a time
    loc, glo = feats.get(split.train)
    with torch.no_grad():
        f = model.select([x.float() for x in loc], [x.float() for x in glo], sel).double()
    d = model.config.bottleneck
    for (beta, bias), lam in zip(readouts, (1e-2, 1.0), strict=True):
        for k, v in enumerate(rows):
            fv = f[k].numpy()  # (n, D)
            yv = y[split.train, v].astype(np.float64)
            fc, yc = fv - fv.mean(0), yv - yv.mean()
            g = fc.T @ fc
            w = np.linalg.solve(g + lam * np.trace(g) / d * np.eye(d), fc.T @ yc)
            # (the Gram matrices are summed from float32 products: ~1e-5 relative)
            err = np.linalg.norm(beta[k] - d * w) / np.linalg.norm(d * w)
            assert err < 1e-4, (v, lam, err)
            np.testing.assert_allclose(bias[k], yv.mean() - fv.mean(0) @ w, rtol=1e-4, atol=1e-5)


def test_calibration_folds_the_temperature_and_refits_the_readout_exactly():
    model, feats, y, split = _trained()
    with torch.no_grad():
        before = model.selectors()
        logits = _layer_logits(model).clone()
    recs, res = _drain(calibrate(model, feats, y, split.train, split.val, n_probe=10))
    assert [r["stage"] for r in recs] == ["trained readout", "ridge readouts", "chosen"]
    assert res["applied"], res
    tau, lam = res["tau"], res["ridge"]
    assert len(res["trials"]) == 6 * 4 and res["n_probe"] == 10
    assert res["best_probe"] == max(t["val_score"] for t in res["trials"])
    assert res["best_probe"] > res["baseline_probe"]
    with torch.no_grad():
        after = model.selectors()
    np.testing.assert_allclose(
        after.layer.numpy(), torch.softmax(tau * logits, -1).numpy(), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_array_equal(after.space.numpy(), before.space.numpy())
    np.testing.assert_array_equal(after.scale.numpy(), before.scale.numpy())
    np.testing.assert_array_equal(after.layer.argmax(1).numpy(), before.layer.argmax(1).numpy())
    # the readout of every vertex is the ridge solution at the chosen (τ, λ)
    rows = np.arange(model.n_vertices)
    (((beta, bias),),) = ridge_readout(model, feats, y, split.train, [after], rows, (lam,))
    np.testing.assert_allclose(model.beta.detach().numpy(), beta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.bias.detach().numpy(), bias, rtol=1e-4, atol=1e-6)
    # so predictions are the ridge predictions
    pred = predict(model, feats, split.val)
    loc, glo = feats.get(split.val)
    with torch.no_grad():
        f = model.select(loc, glo, after).double().numpy()  # (V, n, D)
    want = np.einsum("vnd,vd->nv", f, beta) / model.config.bottleneck + bias
    np.testing.assert_allclose(pred, want, rtol=1e-4, atol=1e-5)
    assert f"×{tau:g}" in calibration_line(res)


def test_flat_selectors_are_sharpened_toward_the_truths_confidence():
    """The problem's truth has sharp layer weights (softmax of 3·N(0, 1)); a model whose
    logits were shrunk 4× fits worse; the validation picks a sharper temperature."""
    model, feats, y, split = _trained(seed=3)
    with torch.no_grad():
        model.layer_mlp[-1].weight.mul_(0.25)
        flat = float(confidence(model.selectors().layer.numpy()).mean())
    _, res = _drain(calibrate(model, feats, y, split.train, split.val))
    assert res["applied"] and res["tau"] >= 2.0, res
    with torch.no_grad():
        sharp = float(confidence(model.selectors().layer.numpy()).mean())
    assert sharp > flat + 0.05


def test_nothing_changes_when_no_trial_beats_the_trained_readout():
    model, feats, y, split = _trained()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # an absurd penalty: every refitted readout predicts the mean
    _, res = _drain(
        calibrate(model, feats, y, split.train, split.val, temperatures=(1.0,), ridges=(1e9,))
    )
    assert not res["applied"] and res["tau"] == 1.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert calibration_line(res).startswith("not applied")


def test_a_deadline_leaves_the_model_unchanged_and_says_why():
    model, feats, y, split = _trained()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # out of time during the probe pass
    _, res = _drain(calibrate(model, feats, y, split.train, split.val, time_left=lambda: -1.0))
    assert not res["applied"] and "out of time during the probe pass" in res["reason"]
    # time for the probe pass, none for the refit of every vertex
    _, res = _drain(_late(model, feats, y, split))
    assert not res["applied"] and "no time left for the refit" in res["reason"], res
    assert res["refit_estimate_seconds"] > 0 and "not applied" in calibration_line(res)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def _late(model, feats, y, split):
    """calibrate() whose deadline passes once the probe has been scored."""
    left = [1e9]
    inner = calibrate(model, feats, y, split.train, split.val, time_left=lambda: left[0])
    while True:
        try:
            rec = next(inner)
        except StopIteration as done:
            return done.value
        if rec["stage"] == "chosen":
            left[0] = 0.0
        yield rec


def test_calibrate_setting_resolves_per_recipe():
    assert TrainConfig().calibrates is False
    assert TrainConfig(recipe="auto", max_seconds=60).calibrates is True
    assert TrainConfig(recipe="auto", max_seconds=60, calibrate=False).calibrates is False
    assert TrainConfig(calibrate=True).calibrates is True
    with pytest.raises(ValueError, match="calibrate must be true, false or None"):
        TrainConfig(calibrate="yes")
    assert TrainConfig.from_dict(TrainConfig(calibrate=True).to_dict()).calibrate is True


def test_a_calibrating_paper_run_records_it_and_scores_the_calibrated_model():
    coords, feats, y = _problem(n_images=160, v=24, seed=1)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(
        batch_size=8, steps_per_epoch=40, max_epochs=3, lr=5e-3, log_every=1000, calibrate=True
    )
    model = _fresh(coords)
    recs = list(train(model, feats, y, split, cfg))
    kinds = [r["kind"] for r in recs]
    assert kinds.index("calibrated") < kinds.index("done")
    res = recs[-1]["result"]
    assert res.calibration is not None and "trials" in res.calibration
    pred = predict(model, feats, split.test)
    yt = y[split.test]
    r2 = 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(res.test_r2, r2, rtol=1e-4, atol=1e-5)
    if res.calibration["applied"]:
        assert res.calibration["val_score"] == res.val_score
