"""Training engine: splits, regulariser, soup, early stopping, resume, divergence."""

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.model import FactorTopy, Selectors
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import (
    TrainingDiverged,
    greedy_soup,
    predict,
    regulariser,
    train,
)


def test_split_by_group_is_disjoint_seeded_and_sized():
    groups = np.repeat(np.arange(50), 3)  # 50 images shown 3 times
    s = make_split(150, groups, seed=3)
    all_idx = np.concatenate([s.train, s.val, s.test])
    assert sorted(all_idx.tolist()) == list(range(150))
    for a, b in ((s.train, s.val), (s.train, s.test), (s.val, s.test)):
        assert not set(groups[a]) & set(groups[b])  # repeats never straddle
    assert len(set(groups[s.val])) == 5 and len(set(groups[s.test])) == 5
    s2 = make_split(150, groups, seed=3)
    np.testing.assert_array_equal(s.test, s2.test)
    assert not np.array_equal(make_split(150, groups, seed=4).test, s.test)


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(10, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="expected 10"):
        make_split(10, groups=np.arange(9))


def test_regulariser_closed_form():
    n_v, n_l = 6, 4
    uniform = Selectors(
        torch.zeros(n_v, 2), torch.full((n_v, n_l), 1 / n_l), torch.full((n_v,), 0.5)
    )
    assert regulariser(uniform).item() == pytest.approx(-1.0)
    onehot = torch.zeros(n_v, n_l)
    onehot[:, 2] = 1
    scale = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.25, 0.75])
    r = regulariser(Selectors(torch.zeros(n_v, 2), onehot, scale))
    assert r.item() == pytest.approx(np.mean((scale.numpy() - 0.5) ** 2))
    p = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(n_v, 1)
    expect = sum(x * math.log(x) for x in (0.7, 0.1, 0.1, 0.1)) / math.log(4)
    assert regulariser(Selectors(torch.zeros(n_v, 2), p, torch.full((n_v,), 0.5))).item() == (
        pytest.approx(expect, rel=1e-5)
    )


def test_greedy_soup_keeps_only_helpful_members():
    lin = torch.nn.Linear(2, 1, bias=False)
    target = torch.tensor([[1.0, -1.0]])

    def score(m):
        return -float((m.weight - target).norm().detach())

    def sd(w):
        return {"weight": torch.tensor([w])}

    cands = [(-0.2, sd([1.2, -1.0])), (-0.3, sd([0.8, -1.0])), (-5.0, sd([6.0, 4.0]))]
    state, members, best = greedy_soup(lin, cands, score)
    # best alone scores -0.2; with the second the average is exactly the target (0);
    # adding the far one would hurt
    assert members == [0, 1]
    assert best == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(state["weight"], target, atol=1e-6)


def _problem(n_images=96, v=30, widths=(4, 6), grid=(3, 3), seed=0):
    """Responses made by a known FactorTopy (fixed selectors) on random tokens."""
    rng = np.random.default_rng(seed)
    local = [rng.normal(size=(n_images, c, *grid)).astype(np.float32) for c in widths]
    glob = [rng.normal(size=(n_images, c)).astype(np.float32) for c in widths]
    coords = rng.normal(size=(v, 3))
    torch.manual_seed(seed)
    truth = FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=4, hidden=8))
    sel = Selectors(
        torch.as_tensor(rng.uniform(-0.6, 0.6, (v, 2)), dtype=torch.float32),
        torch.softmax(
            torch.as_tensor(rng.normal(size=(v, len(widths))) * 3, dtype=torch.float32), 1
        ),
        torch.as_tensor(rng.uniform(0.2, 0.8, v), dtype=torch.float32),
    )
    feats = InMemoryFeatures(local, glob)
    with torch.no_grad():
        y = predict(truth, feats, np.arange(n_images), selectors=sel)
    y = (y - y.mean(0)) / y.std(0)
    y = y + 0.3 * rng.normal(size=y.shape).astype(np.float32)
    return coords, feats, y.astype(np.float32)


def _fresh(coords, widths=(4, 6), grid=(3, 3), seed=1):
    torch.manual_seed(seed)
    return FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=8, hidden=16))


def _run(gen):
    recs = list(gen)
    return recs, recs[-1]["result"]


def test_training_learns_and_reports():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    model = _fresh(coords)
    before = np.nanmean(
        1
        - ((predict(model, feats, split.val) - y[split.val]) ** 2).sum(0)
        / ((y[split.val] - y[split.val].mean(0)) ** 2).sum(0)
    )
    cfg = TrainConfig(batch_size=8, steps_per_epoch=40, max_epochs=6, log_every=20, lr=5e-3)
    recs, res = _run(train(model, feats, y, split, cfg, snapshots=True))
    kinds = [r["kind"] for r in recs]
    assert kinds.count("validation") == 6 and kinds[-1] == "done"
    assert kinds.count("step") == 12
    vals = [r for r in recs if r["kind"] == "validation"]
    assert vals[-1]["best_score"] > before + 0.2
    assert vals[0]["selectors"]["layer"].shape == (30, 2)
    assert res.test_r2.shape == (30,) and res.steps == 240
    # the returned test R² equals an independent computation from the final weights
    pred = predict(model, feats, split.test)
    yt = y[split.test]
    r2 = 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(res.test_r2, r2, rtol=1e-4, atol=1e-5)


def test_early_stopping_counts_epochs_without_improvement():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(lr=0.0, weight_decay=0.0, steps_per_epoch=5, patience=3, max_epochs=50)
    recs, _ = _run(train(_fresh(coords), feats, y, split, cfg))
    vals = [r for r in recs if r["kind"] == "validation"]
    # lr 0: epoch 1 improves on -inf, the next 3 do not -> stop after 4 validations
    assert len(vals) == 4 and [v["improved"] for v in vals] == [True, False, False, False]


def test_top_k_and_soup_use_validation_only():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=5, top_k=3, lr=5e-3)
    recs, _ = _run(train(_fresh(coords), feats, y, split, cfg))
    soup = next(r for r in recs if r["kind"] == "soup")
    best_single = max(r["val_score"] for r in recs if r["kind"] == "validation")
    assert soup["val_score"] >= best_single - 1e-9
    assert set(soup["members"]) <= {0, 1, 2} and soup["members"][0] == 0


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=4, log_every=5, lr=5e-3, soup=False)
    m_full = _fresh(coords)
    _, full = _run(train(m_full, feats, y, split, cfg))

    m_a = _fresh(coords)
    gen = train(m_a, feats, y, split, cfg, checkpoint_dir=tmp_path)
    for rec in gen:
        if rec["kind"] == "step" and rec["step"] == 25:  # mid-epoch stop
            gen.close()
            break
    assert (tmp_path / "checkpoint.pt").exists()
    m_b = _fresh(coords, seed=99)  # different init: everything must come from the checkpoint
    _, resumed = _run(train(m_b, feats, y, split, cfg, checkpoint_dir=tmp_path, resume=True))
    assert resumed.steps == full.steps == 40
    for k in full.state:
        np.testing.assert_allclose(
            resumed.state[k], full.state[k], rtol=1e-5, atol=1e-6, err_msg=k
        )
    assert [h["val_score"] for h in resumed.history] == pytest.approx(
        [h["val_score"] for h in full.history], rel=1e-5
    )


class _PoisonedFeatures:
    """Returns NaN tokens from call ``after`` on."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0
        self.widths, self.grid = inner.widths, inner.grid

    def get(self, idx):
        loc, glo = self.inner.get(idx)
        self.calls += 1
        if self.calls > self.after:
            loc = [t * float("nan") for t in loc]
        return loc, glo


def test_divergence_keeps_last_good_checkpoint():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=10, soup=False)
    # 10 training steps + validation batches (1 call each, batch 64 > 10 images) pass
    recs, res = _run(train(_fresh(coords), _PoisonedFeatures(feats, after=11), y, split, cfg))
    assert [r["kind"] for r in recs if r["kind"] in ("diverged", "validation")] == [
        "validation",
        "diverged",
    ]
    assert res.diverged and res.steps == 10
    with pytest.raises(TrainingDiverged, match="diverged at step 0"):
        list(train(_fresh(coords), _PoisonedFeatures(feats, after=0), y, split, cfg))


def test_bad_responses_shape_is_named():
    coords, feats, y = _problem()
    with pytest.raises(ValueError, match=r"shape \(N, 30\)"):
        list(train(_fresh(coords), feats, y[:, :5], make_split(len(y)), TrainConfig()))


class _SimClock:
    """A simulated clock: only feature reads take time (deterministic budget tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _SlowFeatures:
    """Feature reads that cost ``per_call + per_image · n`` simulated seconds."""

    def __init__(self, inner, clock, per_image=0.002, per_call=0.05):
        self.inner, self.clock = inner, clock
        self.per_image, self.per_call = per_image, per_call
        self.widths, self.grid = inner.widths, inner.grid

    def get(self, idx):
        self.clock.now += self.per_call + self.per_image * len(idx)
        return self.inner.get(idx)


def _validation_seconds(feats, split, batch=64):
    """Simulated cost of one validation pass (independent of the training code)."""
    n = len(split.val)
    calls = -(-n // batch)
    return calls * feats.per_call + n * feats.per_image


@pytest.mark.parametrize("budget", [1.5, 4.0])
def test_budget_is_honoured_whatever_steps_per_epoch(budget):
    """Paper recipe with 1000 steps between validations: the run validates early and
    ends within 5 % of the budget plus one validation pass."""
    coords, feats, y = _problem()
    clock = _SimClock()
    slow = _SlowFeatures(feats, clock)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=1000, max_seconds=budget, lr=5e-3)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    one_val = _validation_seconds(slow, split)
    assert clock.now <= 1.05 * budget + one_val, (clock.now, one_val)
    assert clock.now >= 0.9 * budget  # and it used the budget, not a fraction of it
    assert res.stop_reason == "budget" and res.epochs == 1 and 0 < res.steps < 1000
    assert [r["kind"] for r in recs].count("validation") == 1


def test_budget_with_frequent_validations_and_soup_stays_inside():
    coords, feats, y = _problem()
    clock = _SimClock()
    slow = _SlowFeatures(feats, clock)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_seconds=6.0, lr=5e-3, top_k=10)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    assert clock.now <= 1.05 * 6.0 + _validation_seconds(slow, split)
    assert res.stop_reason == "budget" and res.epochs > 5
    assert any(r["kind"] == "soup" for r in recs)


def test_budget_counts_from_the_callers_clock():
    coords, feats, y = _problem()
    clock = _SimClock()
    clock.now = 5.0
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=1000, max_seconds=3.0, lr=5e-3)
    slow = _SlowFeatures(feats, clock)
    # the caller started the clock at 4.0: 1 s of the budget is already spent
    gen = train(_fresh(coords), slow, y, split, cfg, started_at=4.0, clock=clock)
    _, res = _run(gen)
    assert clock.now - 4.0 <= 1.05 * 3.0 + _validation_seconds(slow, split)
    assert res.seconds == pytest.approx(clock.now - 4.0)


def test_budget_too_small_for_one_validation_names_the_minimum():
    coords, feats, y = _problem()
    clock = _SimClock()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(max_seconds=0.2)
    slow = _SlowFeatures(feats, clock, per_image=0.01, per_call=0.02)
    with pytest.raises(ValueError, match=r"too small for one validation: .* at least 1 s"):
        list(train(_fresh(coords), slow, y, split, cfg, clock=clock))


def test_calibration_need_counts_the_refit_of_every_vertex():
    """The calibration's time, by hand: 6 passes for the probe plus 1.5 per unit of the
    refit's work (V over the probe's 500 vertices × 6 temperatures), each pass the
    validation time scaled to the training and validation images."""
    from napari_factortopy.core.budget import (
        calibration_need,
        calibration_seconds,
        calibration_skip_reason,
        finish_seconds,
    )

    split = make_split(9841, seed=0)  # Algonauts' subject 1: 7,873 / 984 / 984
    n_tv = len(split.train) + len(split.val)
    cfg = TrainConfig(recipe="auto", max_seconds=5000)
    need = calibration_need(6.7, split, cfg, 39548)
    assert need == pytest.approx((6 + 1.5 * 39548 / 3000) * n_tv / len(split.val) * 6.7)
    assert 1400 < need < 1600  # the 5,000-s run: ≈ 200 s + a refit estimated at 1,228 s
    # ... more than 20 % of 5,000 s: nothing reserved, and the reason says what would hold it
    assert calibration_seconds(6.7, split, cfg, 39548) == 0.0
    assert finish_seconds(6.7, split, cfg, 39548) == pytest.approx(6.7)  # the test scores
    why = calibration_skip_reason(6.7, split, cfg, 39548)
    assert f"≈ {need:,.0f} s" in why and f"≥ {math.ceil(need / 0.2):,} s" in why
    # a budget that holds it reserves all of it
    big = TrainConfig(recipe="auto", max_seconds=8000)
    assert calibration_seconds(6.7, split, big, 39548) == pytest.approx(need)
    assert calibration_skip_reason(6.7, split, big, 39548) is None
    # fewer vertices than the probe: the probe is every vertex, the refit 1/6 of it
    assert calibration_need(1.0, split, cfg, 300) == pytest.approx(
        (6 + 1.5 / 6) * n_tv / len(split.val)
    )
    # a run that does not calibrate needs nothing
    assert calibration_need(6.7, split, TrainConfig(max_seconds=5000), 39548) == 0.0


@pytest.mark.parametrize("budget", [10.0, 30.0])
def test_a_calibration_the_budget_cannot_hold_is_skipped_up_front(budget):
    """Need ≈ 3.8 s (simulated): a 10-s budget (20 % = 2 s) cannot hold it, so nothing
    is reserved, training runs to the budget and the run says so before its first
    validation; a 30-s budget reserves it and calibrates."""
    coords, feats, y = _problem()
    clock = _SimClock()
    slow = _SlowFeatures(feats, clock)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=1000, max_seconds=budget, lr=5e-3, calibrate=True)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    one_val = _validation_seconds(slow, split)
    n_tv = len(split.train) + len(split.val)
    need = (6 + 1.5 * len(coords) / (len(coords) * 6)) * n_tv / len(split.val) * one_val
    kinds = [r["kind"] for r in recs]
    cal = res.calibration
    assert cal["needed_seconds"] == pytest.approx(need)
    last_val = [r for r in recs if r["kind"] == "validation"][-1]
    if need > 0.2 * budget:
        assert kinds.index("calibration_plan") < kinds.index("validation")
        plan = recs[kinds.index("calibration_plan")]
        assert plan["skipped"] and f"≈ {need:,.0f} s" in plan["text"]
        assert not cal["applied"] and cal["reserved_seconds"] == 0.0
        assert cal["reason"] == plan["text"]
        assert "calibrating" not in kinds
        # training kept the budget: its last validation ends near it, not 20 % before
        assert last_val["elapsed"] >= budget - 3 * one_val
    else:
        assert "calibration_plan" not in kinds and "calibrating" in kinds
        assert cal["reserved_seconds"] == pytest.approx(need)
        assert last_val["elapsed"] <= budget - need
    assert clock.now <= 1.05 * budget + one_val


def test_user_stop_validates_and_keeps_the_best_so_far():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=100, lr=5e-3)
    seen = {"steps": 0}

    def stop():
        return seen["steps"] >= 25

    gen = train(_fresh(coords), feats, y, split, cfg, should_stop=stop)
    recs = []
    for rec in gen:
        recs.append(rec)
        seen["steps"] = rec.get("step", seen["steps"]) if rec["kind"] == "step" else seen["steps"]
    # log_every 50 > 25: steps are counted from the validations instead
    res = recs[-1]["result"]
    assert res.stop_reason == "user_stop"
    vals = [r for r in recs if r["kind"] == "validation"]
    assert res.val_score >= max(v["val_score"] for v in vals) - 1e-9
    assert res.test_r2.shape == (30,)


def test_user_stop_mid_epoch_adds_a_validation():
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=100, lr=5e-3, log_every=1)
    steps = []
    gen = train(_fresh(coords), feats, y, split, cfg, should_stop=lambda: len(steps) >= 15)
    recs = []
    for rec in gen:
        recs.append(rec)
        if rec["kind"] == "step":
            steps.append(rec["step"])
    vals = [r["step"] for r in recs if r["kind"] == "validation"]
    assert vals == [10, 15]  # the regular one, and one at the stop
    assert recs[-1]["result"].stop_reason == "user_stop"


def test_validation_and_soup_report_every_batch_and_a_stop_during_validation_finishes_it():
    """Stop pressed while a validation is under way: that validation completes (it is
    the stop's validation), no step follows, the soup runs and the result is scored."""
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    n_val = len(split.val)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=100, lr=5e-3, eval_batch_size=3)
    recs: list[dict] = []

    def stop():
        return sum(r["kind"] == "validating" for r in recs) > (n_val - 1) // 3 + 1

    for rec in train(_fresh(coords), feats, y, split, cfg, should_stop=stop):
        recs.append(rec)
    kinds = [r["kind"] for r in recs]
    # the first validation's progress: ceil(n_val / 3) - 1 records, done 3, 6, ...
    first = [r["done"] for r in recs[: kinds.index("validation")] if r["kind"] == "validating"]
    assert first == list(range(3, n_val, 3)) and all(r["total"] == n_val for r in recs[:1])
    vals = [r for r in recs if r["kind"] == "validation"]
    assert [v["step"] for v in vals] == [10, 20]  # the second one was finished, not dropped
    after = kinds[kinds.index("validation", kinds.index("validation") + 1) :]
    assert "step" not in after and "validating" not in after
    souping = [r for r in recs if r["kind"] == "souping"]
    assert [r["tried"] for r in souping] == [1] and souping[0]["total"] == 1
    res = recs[-1]["result"]
    assert res.stop_reason == "user_stop" and res.steps == 20


def test_auto_recipe_closed_form():
    from napari_factortopy.core.training import resolve_auto_recipe

    cfg = TrainConfig(max_seconds=300, recipe="auto")
    # 250 s left, 0.1 s/step, 2 s/validation at batch 16
    res, info = resolve_auto_recipe(cfg, 250.0, 0.1, 2.0, 16)
    # validations <= 10 %: >= 2 / (0.1 * 0.1) = 200 steps apart; ~20 validations of
    # 2500 steps would be 125: the larger wins
    assert res.steps_per_epoch == 200
    planned = int(250.0 / (0.1 + 2.0 / 200))
    assert info["planned_steps"] == planned == 2272
    assert res.reg_decay_steps == planned // 2
    assert res.batch_size == 16 and res.lr == pytest.approx(2e-3)
    assert res.recipe == "auto" and res.max_seconds == 300
    # never more than the paper's T, never more than 1000 steps between validations
    res2, _ = resolve_auto_recipe(cfg, 1e6, 0.01, 0.01, 8)
    assert res2.reg_decay_steps == 6000 and res2.steps_per_epoch == 1000
    # a slow validation (120 s, measured under load) at 2.27 s/step with 4,000 s left:
    # the 10 % rule asks for ceil(120 / 0.227) = 529 steps, but no stretch between
    # validations may pass 15 % of the time: ceil(0.15 * 4000 / 2.27) = 265 steps
    # (the 4,500-s rehearsal re-planned to 530 and validated once in its last 1,300 s)
    res3, _ = resolve_auto_recipe(TrainConfig(max_seconds=4500, recipe="auto"), 4000.0, 2.27,
                                  120.0, 32)  # fmt: skip
    assert res3.steps_per_epoch == 265


def test_auto_recipe_keeps_what_was_given():
    from napari_factortopy.core.training import resolve_auto_recipe

    # what differs from the paper's default counts as given (never overwritten)
    cfg = TrainConfig(max_seconds=300, recipe="auto", batch_size=16, lr=5e-4)
    assert cfg.given == ("batch_size", "lr") and cfg.chosen == (
        "steps_per_epoch",
        "reg_decay_steps",
    )
    # the speed measured favours 32, but 16 was given; lr is not rescaled
    res, info = resolve_auto_recipe(cfg, 250.0, 0.1, 2.0, 32)
    assert (res.batch_size, res.lr) == (16, 5e-4)
    assert res.steps_per_epoch == 200  # chosen, as in the closed form above
    assert res.reg_decay_steps == int(250.0 / (0.1 + 2.0 / 200)) // 2
    assert info["given"] == {"batch_size": 16, "lr": 5e-4}
    assert info["chosen"] == ["steps_per_epoch", "reg_decay_steps"]
    # a given interval and T are kept too, and the plan is made around them
    cfg = TrainConfig(max_seconds=300, recipe="auto", steps_per_epoch=50, reg_decay_steps=7000)
    res, info = resolve_auto_recipe(cfg, 250.0, 0.1, 2.0, 32)
    assert (res.steps_per_epoch, res.reg_decay_steps) == (50, 7000)
    assert (res.batch_size, res.lr) == (32, pytest.approx(4e-3))  # chosen
    assert info["planned_steps"] == int(250.0 / (0.1 + 2.0 / 50))
    # a default value is given when listed; the paper's batch 8 then stays
    cfg = TrainConfig(max_seconds=300, recipe="auto", given=("batch_size",))
    assert resolve_auto_recipe(cfg, 250.0, 0.1, 2.0, 32)[0].batch_size == 8
    with pytest.raises(ValueError, match="given must list fields"):
        TrainConfig(max_seconds=300, recipe="auto", given=("seed",))
    # stored and read back; a file written before `given` existed: all chosen
    assert TrainConfig.from_dict(res.to_dict()) == res
    old = {k: v for k, v in res.to_dict().items() if k != "given"}
    assert TrainConfig.from_dict(old).given == ()


def test_auto_run_trains_with_the_given_batch_lr_and_t():
    """Given batch 16, lr 5e-4 and T = 30: every training step reads 16 images (the
    speed test included), AdamW runs at 5e-4 and λ decays by the step as the paper's;
    the recipe still chooses the validation interval."""
    coords, feats, y = _problem()
    clock = _SimClock()
    slow = _SlowFeatures(feats, clock, per_image=0.004, per_call=0.05)  # 32 is fastest
    sizes = []
    real_get = slow.get

    def spy(idx):
        sizes.append(len(idx))
        return real_get(idx)

    slow.get = spy
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(
        max_seconds=30.0, recipe="auto", log_every=1, batch_size=16, lr=5e-4, reg_decay_steps=30
    )
    model = _fresh(coords)
    lrs = []
    from napari_factortopy.core.adamw import AdamW

    real_step = AdamW.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    AdamW.step = step
    try:
        recs, res = _run(train(model, slow, y, split, cfg, clock=clock))
    finally:
        AdamW.step = real_step
    steps = [r for r in recs if r["kind"] == "step"]
    assert res.steps == len(steps) == len(lrs) > 30
    assert set(lrs) == {5e-4}
    # training reads are the steps' batches; validation reads are eval batches (64)
    assert sizes.count(16) == res.steps and not {8, 32} & set(sizes)
    assert set(res.recipe["images_per_second"]) == {"16"}
    assert res.recipe["given"] == {"batch_size": 16, "lr": 5e-4, "reg_decay_steps": 30}
    for r in steps:
        assert r["reg_strength"] == pytest.approx(max(0.0, 1 - r["step"] / 30))
    assert (res.config.batch_size, res.config.lr, res.config.reg_decay_steps) == (16, 5e-4, 30)
    assert res.config.steps_per_epoch != 1000  # chosen for the budget


def test_auto_recipe_run_finishes_the_regulariser_inside_the_budget():
    coords, feats, y = _problem()
    clock = _SimClock()
    # a read costs 0.05 s + 0.004 s per image: batch 32 gives the most images per second
    slow = _SlowFeatures(feats, clock, per_image=0.004, per_call=0.05)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(max_seconds=60.0, recipe="auto", log_every=1)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    recipe = next(r for r in recs if r["kind"] == "recipe")
    resolved = recipe["config"]
    assert res.recipe["name"] == "auto"
    assert resolved.batch_size == 32 and resolved.lr == pytest.approx(4e-3)
    assert (res.config.batch_size, res.config.lr) == (resolved.batch_size, resolved.lr)
    step_s = 0.05 + 0.004 * 32
    assert res.recipe["step_seconds"] == pytest.approx(step_s)
    # the regulariser ended by half the budget: at most about half of the steps
    assert res.reg_strength == 0.0
    assert res.config.reg_decay_steps <= 0.55 * res.steps
    done = next(r for r in recs if r["kind"] == "step" and r["reg_strength"] == 0.0)
    assert done["elapsed"] <= 0.5 * 60.0 + 1.0
    assert clock.now <= 1.05 * 60.0 + _validation_seconds(slow, split)
    assert res.stop_reason in ("budget", "early_stop")
    # at a constant speed the re-planned interval stays put: no crowding at the end
    steps = [r["step"] for r in recs if r["kind"] == "validation"]
    gaps = np.diff(steps)[:-1]  # the last validation may come early, for the budget
    assert len(gaps) >= 5 and gaps.max() <= 1.5 * gaps.min(), steps


def test_auto_recipe_replans_when_steps_slow_down_after_the_probe():
    """The plan promises about AUTO_VALIDATIONS validations in the budget, one every
    budget / AUTO_VALIDATIONS seconds. Steps 4× slower than the probe's right after it:
    the interval is re-cut within AUTO_REPLAN_STEPS steps, so no gap between validations
    is much longer than promised (without the re-plan the first came after 106 s of a
    600-s budget, promised 30)."""
    from napari_factortopy.core.budget import AUTO_REPLAN_STEPS, AUTO_VALIDATIONS

    coords, feats, y = _problem()
    clock = _SimClock()
    # steps 4x slower right after the probe (it read few token rows, which stay in cache:
    # at Algonauts' size 0.78 s planned, 3.4 s real)
    slow = _SlowingFeatures(feats, clock, after=26, per_image=0.004, per_call=0.05)
    split = make_split(len(y), seed=0)
    budget = 600.0
    cfg = TrainConfig(max_seconds=budget, recipe="auto", log_every=1)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    real_step = 4.0 * (0.05 + 0.004 * 32)  # batch 32 is the probe's choice
    assert res.recipe["step_seconds"] == pytest.approx(0.05 + 0.004 * 32)
    times = [r["elapsed"] for r in recs if r["kind"] == "validation"]
    promised = budget / AUTO_VALIDATIONS
    gaps = np.diff([0.0, *times])[:-1]  # the last one may come early, for the budget
    assert len(times) >= 0.75 * AUTO_VALIDATIONS, times
    assert gaps.max() <= 1.5 * promised, times
    # the first re-plan came AUTO_REPLAN_STEPS steps after the probe, from their median
    assert times[0] <= 30 * 0.2 + (AUTO_REPLAN_STEPS + promised / real_step) * real_step
    assert clock.now <= 1.05 * budget + _validation_seconds(slow, split)
    # each change of the interval is in the recipe record, the first on the drift
    replans = res.recipe["replans"]
    assert replans[0]["why"] == "drift" and replans[0]["step"] <= 30 + AUTO_REPLAN_STEPS
    assert replans[0]["step_seconds"] > 1.5 * res.recipe["step_seconds"]  # what drifted
    assert replans[0]["steps_per_epoch"] < res.recipe["steps_per_epoch"]
    intervals = [res.recipe["steps_per_epoch"], *(r["steps_per_epoch"] for r in replans)]
    assert all(a != b for a, b in itertools.pairwise(intervals))
    assert [r["elapsed"] for r in replans] == sorted(r["elapsed"] for r in replans)


def test_auto_recipe_needs_a_budget_and_configs_are_checked():
    with pytest.raises(ValueError, match="give max_seconds"):
        TrainConfig(recipe="auto")
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig(recipe="fast")
    for bad in (
        {"steps_per_epoch": 0},
        {"batch_size": 0},
        {"lr": 1e30},
        {"lr": float("nan")},
        {"max_seconds": -1},
        {"patience": 2.5},
        {"reg_weight": -0.1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_resume_with_another_learning_rate_is_refused(tmp_path):
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=4, lr=5e-3)
    gen = train(_fresh(coords), feats, y, split, cfg, checkpoint_dir=tmp_path)
    for rec in gen:
        if rec["kind"] == "validation":
            gen.close()
            break
    other = TrainConfig(steps_per_epoch=10, max_epochs=4, lr=1e-2)
    with pytest.raises(ValueError, match=r"lr 0.005 \(checkpoint\) vs 0.01 \(now\)"):
        list(train(_fresh(coords), feats, y, split, other, checkpoint_dir=tmp_path, resume=True))
    # a longer run (more epochs) may resume
    longer = TrainConfig(steps_per_epoch=10, max_epochs=6, lr=5e-3)
    _, res = _run(
        train(_fresh(coords), feats, y, split, longer, checkpoint_dir=tmp_path, resume=True)
    )
    assert res.steps == 60 and res.config.lr == 5e-3


def test_non_finite_weights_end_as_divergence_not_a_crash():
    """A learning rate that blows the selector MLPs up to NaN stops with 'diverged'."""
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    model = _fresh(coords)
    cfg = TrainConfig(steps_per_epoch=5, max_epochs=3, soup=False, lr=1.0)
    gen = train(model, feats, y, split, cfg)
    recs = []
    for rec in gen:
        recs.append(rec)
        if rec["kind"] == "validation":
            with torch.no_grad():  # poison the space selector's weights after epoch 1
                model.space_mlp[-1].weight.fill_(float("nan"))
    kinds = [r["kind"] for r in recs]
    assert "diverged" in kinds and kinds[-1] == "done"
    assert recs[-1]["result"].stop_reason == "diverged"


class _SlowingFeatures(_SlowFeatures):
    """Reads get 4× slower after ``after`` calls (another job took the cores)."""

    def __init__(self, inner, clock, after, **kw):
        super().__init__(inner, clock, **kw)
        self.after, self.calls = after, 0

    def get(self, idx):
        self.calls += 1
        if self.calls == self.after:
            self.per_call *= 4
            self.per_image *= 4
        return super().get(idx)


def test_auto_recipe_keeps_its_promise_when_the_machine_slows_down():
    """The regulariser still ends by about half the budget when steps get 4× slower
    after the speed was measured: T is brought forward at each validation."""
    coords, feats, y = _problem()
    clock = _SimClock()
    slow = _SlowingFeatures(feats, clock, after=40, per_image=0.004, per_call=0.05)
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(max_seconds=60.0, recipe="auto", log_every=1)
    recs, res = _run(train(_fresh(coords), slow, y, split, cfg, clock=clock))
    planned = next(r for r in recs if r["kind"] == "recipe")["config"].reg_decay_steps
    assert res.config.reg_decay_steps < planned  # brought forward
    done = next(r for r in recs if r["kind"] == "step" and r["reg_strength"] == 0.0)
    assert done["elapsed"] <= 0.5 * 60.0 + _validation_seconds(slow, split) + 1.0
    assert res.reg_strength == 0.0
    assert clock.now <= 60.0 * 1.05 + _validation_seconds(slow, split)


class _OneSlowValidation(_SlowFeatures):
    """The ``nth`` read pass over the validation images costs ``extra`` simulated seconds
    more (another program took the cores once); pass 1 is the budget's timing probe."""

    def __init__(self, inner, clock, val, nth, extra, **kw):
        super().__init__(inner, clock, **kw)
        self.val, self.nth, self.extra = {int(i) for i in val}, nth, extra
        self.passes, self.in_val = 0, False

    def get(self, idx):
        is_val = {int(i) for i in np.asarray(idx)} <= self.val
        if is_val and not self.in_val:
            self.passes += 1
            if self.passes == self.nth:
                self.clock.now += self.extra
        self.in_val = is_val
        return super().get(idx)


@pytest.mark.parametrize("nth", [3, 4])
def test_one_slow_validation_does_not_end_the_run_early(nth):
    """One validation pass takes 40 % of the budget (in the full-size rehearsal a 280-s
    pass among 7-s ones ended a 1,500-s run at 634 s): the run still uses its budget,
    because the validation time it plans with is the median of the last three (planning
    with the last pass alone, it stopped at 0.61 and 0.71 of the budget)."""
    from napari_factortopy.core.budget import Timing

    coords, feats, y = _problem()
    clock = _SimClock()
    split = make_split(len(y), seed=0)
    slow = _SlowFeatures(feats, clock)
    one_val = _validation_seconds(slow, split)
    budget = 12.0
    odd = _OneSlowValidation(feats, clock, split.val, nth=nth, extra=0.4 * budget)
    cfg = TrainConfig(steps_per_epoch=15, max_seconds=budget, lr=5e-3)
    _recs, res = _run(train(_fresh(coords), odd, y, split, cfg, clock=clock))
    assert odd.passes >= nth  # the slow pass happened, during training
    assert res.stop_reason == "budget"
    assert 0.9 * budget <= clock.now <= 1.05 * budget + one_val, (clock.now, one_val)
    # the estimate itself: a median of the last three, against a sorted-list by hand
    timing = Timing()
    for seconds, want in ((2.0, 2.0), (60.0, 31.0), (3.0, 3.0), (2.5, 3.0), (50.0, 3.0)):
        timing.add_validation(seconds)
        assert timing.val == pytest.approx(want)


def test_a_stop_before_the_first_step_keeps_the_initial_model():
    """Stop pressed before training took a step (the panel closed at once, or Stop while
    the mesh loaded): the run validates the initial weights and ends with them, stopped
    by the user (it raised "training diverged at step 0" and the panel's worker hung)."""
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    model = _fresh(coords)
    cfg = TrainConfig(steps_per_epoch=10, max_epochs=3, lr=5e-3)
    recs, res = _run(train(model, feats, y, split, cfg, should_stop=lambda: True))
    assert [r["kind"] for r in recs if r["kind"] in ("step", "validation")] == ["validation"]
    assert res.stop_reason == "user_stop" and res.steps == 0
    # its test R² is the initial weights' (a plain computation from the model)
    pred = predict(model, feats, split.test)
    yt = y[split.test]
    want = 1 - ((pred - yt) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(res.test_r2, want, rtol=1e-4, atol=1e-5)


def test_responses_read_from_their_files_train_the_same_model(tmp_path, monkeypatch):
    """Responses kept in their .npy files (two files side by side, the first with a
    row that is not part of the data, the second in float64) and read a batch of rows
    at a time train exactly the model the array in memory trains: same records, same
    weights, same soup, calibration and test scores; the checkpoint identity agrees."""
    from napari_factortopy.core.responses import ResponseRows

    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    left = np.concatenate([np.full((1, 12), 9.0, np.float32), y[:, :12]])
    right = np.concatenate([np.zeros((1, 18)), y[:, 12:]]).astype(np.float64)
    np.save(tmp_path / "lh.npy", left)
    np.save(tmp_path / "rh.npy", right)
    parts = [np.load(tmp_path / f"{h}.npy", mmap_mode="r") for h in ("lh", "rh")]
    from_files = ResponseRows(parts).subset_rows(np.arange(1, len(y) + 1))
    np.testing.assert_array_equal(np.asarray(from_files), y)

    def whole(*_):
        raise AssertionError("training read every response row at once")

    monkeypatch.setattr(ResponseRows, "__array__", whole)  # rows are read as needed only
    cfg = TrainConfig(batch_size=8, steps_per_epoch=10, max_epochs=3, lr=5e-3, calibrate=True)
    runs = []
    for i, responses in enumerate((y, from_files)):
        model = _fresh(coords)
        gen = train(model, feats, responses, split, cfg, checkpoint_dir=tmp_path / str(i))
        recs, res = _run(gen)
        runs.append((recs, res, torch.load(tmp_path / str(i) / "checkpoint.pt")["identity"]))
    (recs_a, a, id_a), (recs_b, b, id_b) = runs
    assert [r["kind"] for r in recs_a] == [r["kind"] for r in recs_b]
    assert [h["val_score"] for h in a.history] == [h["val_score"] for h in b.history]
    for k in a.state:
        assert torch.equal(torch.as_tensor(a.state[k]), torch.as_tensor(b.state[k])), k
    np.testing.assert_array_equal(a.test_r2, b.test_r2)

    def timeless(c):
        return {k: v for k, v in c.items() if "seconds" not in k}

    assert a.calibration["applied"] and timeless(a.calibration) == timeless(b.calibration)
    assert id_a == id_b


def test_kept_states_share_the_fixed_buffers_and_checkpoints_store_them_once(tmp_path):
    """A kept state copies the parameters (training changes them afterwards) but shares
    the vertex positions and their encoding, which never change: the kept states of a
    run take one encoding in memory, and checkpoint.pt stores it once."""
    from napari_factortopy.core.checkpoint import state_copy

    coords, feats, y = _problem(v=400)
    model = _fresh(coords)
    kept = state_copy(model)
    with torch.no_grad():
        model.beta.add_(1.0)
    assert not torch.equal(kept["beta"], model.beta)  # a copy
    assert kept["encoding"].data_ptr() == model.encoding.data_ptr()  # shared
    assert kept["coords"].data_ptr() == model.coords.data_ptr()

    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=2, max_epochs=5, top_k=5, soup=False, lr=1e-3)
    model = _fresh(coords)
    _run(train(model, feats, y, split, cfg, checkpoint_dir=tmp_path))
    ckpt = torch.load(tmp_path / "checkpoint.pt")
    states = [s for _, s in ckpt["state"]["kept"]]
    assert len(states) == 5
    params = sum(p.numel() * 4 for p in model.parameters())
    buffers = sum(b.numel() * 4 for b in model.buffers())
    assert buffers > 0.5 * params  # at this size too, the buffers weigh
    # the model, the optimiser's two moments and five kept parameter sets; buffers once
    # or twice (the model's own and the kept states'), not six times
    size = (tmp_path / "checkpoint.pt").stat().st_size
    assert size < (1 + 2 + 5) * params + 2 * buffers + 200_000, size / 2**20


def test_kept_states_on_disk_train_the_same_model(tmp_path, monkeypatch):
    """A run under a memory limit keeps its best states as files of their parameters:
    at most top_k files at any time (a dropped state's file goes once the checkpoint no
    longer names it), no parameter set copied in memory, and exactly the model, soup
    and test scores of the run that keeps them in memory."""
    from napari_factortopy.core import kept as kept_module

    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=5, max_epochs=7, lr=5e-3, top_k=3, patience=99)
    _, mem = _run(train(_fresh(coords), feats, y, split, cfg, checkpoint_dir=tmp_path / "a"))

    def no_copy(_model):
        raise AssertionError("a kept state was copied in memory")

    monkeypatch.setattr(kept_module, "state_copy", no_copy)
    folder = tmp_path / "b" / "kept"
    counts = []
    gen = train(
        _fresh(coords), feats, y, split, cfg, checkpoint_dir=tmp_path / "b", kept_dir=folder
    )
    for rec in gen:
        if rec["kind"] == "validation":
            counts.append(len(list(folder.iterdir())))
    disk = rec["result"]
    assert counts == [1, 2, 3, 3, 3, 3, 3]  # top_k files at most, from the third on
    for k in mem.state:
        assert torch.equal(torch.as_tensor(mem.state[k]), torch.as_tensor(disk.state[k])), k
    np.testing.assert_array_equal(mem.test_r2, disk.test_r2)
    assert [h["val_score"] for h in mem.history] == [h["val_score"] for h in disk.history]

    # the checkpoint names the files that are there, best first, with their scores
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state"]["kept"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]["kept"]
    assert [s for s, _ in a] == [s for s, _ in b]
    assert sorted(e for _, e in b) == sorted(str(p) for p in folder.iterdir())
    model = _fresh(coords)
    params = {n for n, _ in model.named_parameters()}
    for (_, state), (_, path) in zip(a, b, strict=True):
        on_disk = torch.load(path, weights_only=True)
        assert set(on_disk) == params  # parameters only: the buffers never change
        for k in params:
            assert torch.equal(on_disk[k], state[k]), k


def test_resume_with_kept_states_on_disk(tmp_path):
    """A run stopped and resumed with its kept states on disk ends like the one that
    was not stopped; a checkpoint whose kept files are gone is refused, naming one."""
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=5, max_epochs=5, lr=5e-3, top_k=2, patience=99)
    _, full = _run(train(_fresh(coords), feats, y, split, cfg))

    ckpt, folder = tmp_path / "ckpt", tmp_path / "ckpt" / "kept"
    gen = train(_fresh(coords), feats, y, split, cfg, checkpoint_dir=ckpt, kept_dir=folder)
    for rec in gen:
        if rec["kind"] == "step" and rec["step"] == 17:
            gen.close()
            break
    files = sorted(folder.iterdir())
    assert len(files) == 2
    kw = {"checkpoint_dir": ckpt, "resume": True, "kept_dir": folder}
    _, resumed = _run(train(_fresh(coords, seed=99), feats, y, split, cfg, **kw))
    assert resumed.steps == full.steps == 25
    for k in full.state:
        np.testing.assert_allclose(resumed.state[k], full.state[k], rtol=1e-5, atol=1e-6)

    named = [e for _, e in torch.load(ckpt / "checkpoint.pt")["state"]["kept"]]
    Path(named[1]).unlink()
    before = (ckpt / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="kept states.*missing: " + re.escape(named[1])):
        list(train(_fresh(coords), feats, y, split, cfg, **kw))
    assert (ckpt / "checkpoint.pt").read_bytes() == before


def test_the_soup_of_kept_files_is_the_plain_average_of_its_members(tmp_path):
    """The soup's running float64 sum, with some candidates read from files, gives the
    members and weights of a plain greedy loop that averages the members afresh for
    every trial (bit for bit)."""
    from napari_factortopy.core.soup import greedy_soup

    coords, _, _ = _problem()
    model = _fresh(coords)
    params = [n for n, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(3)
    target = {n: p.detach().clone() for n, p in model.named_parameters()}
    states, cands = [], []
    for i in range(6):
        s = {k: v.clone() for k, v in model.state_dict().items()}
        for n in params:
            s[n] = target[n] + torch.randn(s[n].shape, generator=gen) * (0.1 + 0.3 * (i % 3))
        states.append(s)
        score = -float(sum((s[n] - target[n]).norm() ** 2 for n in params))
        if i % 2:  # every other candidate waits in a file of its parameters
            torch.save({n: s[n] for n in params}, tmp_path / f"{i}.pt")
            cands.append((score, str(tmp_path / f"{i}.pt")))
        else:
            cands.append((score, s))

    def score_fn(m):
        return -float(sum((p.detach() - target[n]).norm() ** 2 for n, p in m.named_parameters()))

    # the plain loop
    order = sorted(range(6), key=lambda i: -cands[i][0])
    members, best = [order[0]], cands[order[0]][0]
    want = states[order[0]]
    for i in order[1:]:
        trial = {
            k: sum(states[j][k].double() for j in [*members, i]).div(len(members) + 1).float()
            for k in want
        }
        probe = _fresh(coords)
        probe.load_state_dict(trial)
        if score_fn(probe) >= best:
            members.append(i)
            best, want = score_fn(probe), trial

    got, ranks, score = greedy_soup(model, cands, score_fn)
    assert len(members) > 1 and len(members) < 6  # the test means something
    assert ranks == [order.index(m) for m in members]
    assert score == best
    for k in want:
        assert torch.equal(got[k], want[k]), k
