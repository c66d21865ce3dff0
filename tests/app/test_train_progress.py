"""The Train panel's run state without Qt (app/train_progress.TrainRun): the progress
bar's plan, the status each record leaves, Stop's two presses, the pausable clock."""

from __future__ import annotations

from types import SimpleNamespace

from napari_factortopy.app.train_progress import (
    BUDGET_TICKS,
    STOPPING,
    TrainRun,
    diverged_warning,
    result_line,
)
from napari_factortopy.core.config import TrainConfig

STEP = {"kind": "step", "step": 12, "loss": 0.25, "elapsed": 3.0}
VALIDATION = {"kind": "validation", "step": 20, "epoch": 2, "val_score": 0.1, "best_score": 0.2}


def test_bar_counts_the_schedule_without_a_budget():
    run = TrainRun(TrainConfig(max_epochs=3, steps_per_epoch=7))
    assert run.budget is None and run.total_steps == 21 and run.bar_max == 21
    assert run.ticks(0, 21, STEP) == 12
    assert run.ticks(12, 21, {"kind": "step", "step": 40}) == 21  # not past the end
    assert run.ticks(12, 21, {"kind": "validation"}) == 12  # no step: stays
    # the auto recipe chose 2 × 5 steps: the bar's new maximum
    assert run.resolved(TrainConfig(max_epochs=2, steps_per_epoch=5)) == 10
    assert run.total_steps == 10 and run.bar_max == 10


def test_bar_follows_the_clock_with_a_budget():
    run = TrainRun(TrainConfig(max_seconds=100.0, max_epochs=10, steps_per_epoch=10))
    assert run.bar_max == BUDGET_TICKS and run.total_steps == 100
    # 25 s of 100: a quarter of the ticks (the schedule's 12 of 100 steps is behind)
    assert run.ticks(0, BUDGET_TICKS, STEP | {"elapsed": 25.0}) == BUDGET_TICKS // 4
    # the schedule ahead of the clock: 50 of 100 steps
    assert run.ticks(0, BUDGET_TICKS, {"step": 50, "elapsed": 10.0}) == BUDGET_TICKS // 2
    assert run.ticks(700, BUDGET_TICKS, STEP | {"elapsed": 25.0}) == 700  # never back
    # the auto recipe's schedule (1 × 20 steps) counts, the bar's maximum stays
    assert run.resolved(TrainConfig(max_epochs=1, steps_per_epoch=20)) is None
    assert run.ticks(0, BUDGET_TICKS, {"step": 5, "elapsed": 1.0}) == BUDGET_TICKS // 4


def test_status_of_each_record_before_and_after_stop():
    run = TrainRun(TrainConfig())
    saved = {"kind": "saved", "path": "/m/model.ftopy", "model": None}
    assert run.status({"kind": "start"}) == "training"
    assert run.status(STEP) == "step 12 · loss 0.2500"
    assert run.status(STEP, paused=True) is None  # "paused" stays
    assert run.status(VALIDATION) == "epoch 2 · val R² 0.1000 (best 0.2000)"
    assert run.status({"kind": "recipe", "config": TrainConfig()}) is None
    assert run.status({"kind": "diverged", "step": 3, "loss": 9.0}) is None
    assert run.status(saved) == "saved /m/model.ftopy"
    assert not run.stopping
    assert run.stop() is True and run.stopping and run.stop_event.is_set()
    assert run.stop() is False  # the second press: discard
    assert run.status(STEP) is None  # "stopping…" stays
    assert run.status(VALIDATION) == f"{STOPPING} (epoch 2 · val R² 0.1000 (best 0.2000))"
    assert run.status({"kind": "souping", "tried": 1, "total": 3}) == (
        f"{STOPPING} (soup: checkpoint 1 of 3 tried)"
    )
    assert run.status({"kind": "start"}) == f"{STOPPING} (training)"
    assert run.status(saved) == "saved /m/model.ftopy"


def test_the_run_clock_stands_still_while_paused():
    now = [10.0]
    run = TrainRun(TrainConfig(), clock=lambda: now[0])
    now[0] = 12.0
    run.clock.pause()
    now[0] = 20.0
    assert run.clock() == 12.0
    run.clock.resume()
    now[0] = 21.0
    assert run.clock() == 13.0


def test_diverged_warning_and_result_line():
    assert diverged_warning({"kind": "diverged", "step": 7, "loss": float("nan")}) == (
        "training diverged at step 7 (loss nan); keeping the last good checkpoint"
    )
    line = "converged: val R² 0.31 at epoch 4"
    assert result_line(SimpleNamespace(summary={"convergence": {"line": line}})) == line
    assert result_line(SimpleNamespace(summary={"convergence": {"line": ""}})) is None
    assert result_line(SimpleNamespace(summary={"convergence": None})) is None
    assert result_line(SimpleNamespace(summary=None)) is None
