"""Issue 22, the Train panel as a newcomer meets it: a budget set back to 0 (defect 6),
the progress bar of a budget run (defect 7), Pause and the budget's clock, and Stop's
message (item 5). Each drives the docked panel: controls set, buttons clicked."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from napari_factortopy.core.config import TrainConfig

from ._drive import dock
from .conftest import TINY_PHANTOM

#: A budget run's minutes: enough for the tiny phantom's probe, one validation and the
#: finish even on a loaded machine (the runs are discarded after a few seconds).
BUDGET_MIN = 1.0


@pytest.fixture(scope="module")
def built_phantom(phantom_root):
    """The tiny phantom subject, built (the panel's Train button then only trains)."""
    from napari_factortopy.data.phantom import build_phantom

    if not (phantom_root / "phantom.json").exists():
        for _ in build_phantom(phantom_root, TINY_PHANTOM, device="cpu"):
            pass
    return phantom_root


def _train_panel(viewer, phantom, out, minutes: float = 0.0):
    train = dock(viewer, "Train")
    train.phantom.value = str(phantom)
    train.out.value = str(out)
    train.bottleneck.value = 8
    train.device.value = "cpu"
    train.max_minutes.value = minutes
    return train


def _records(train) -> list[dict]:
    """Every record the panel gets from now on (in order, after the panel's own slot)."""
    seen: list[dict] = []
    train.worker.yielded.connect(lambda rec: seen.append({**rec, "status": train.status.value}))
    return seen


def _discard(train, qtbot) -> None:
    """Stop, then Discard: the run ends unsaved."""
    with qtbot.waitSignal(train.worker.finished, timeout=60_000):
        train.stop_button.native.click()
        train.stop_button.native.click()


def _shown_percent(train) -> int:
    """The percentage the progress bar shows."""
    text = train.progress.native.text()
    assert text.endswith("%"), text
    return int(text[:-1])


def test_budget_back_to_zero_puts_the_paper_settings_back(
    make_napari_viewer, qtbot, tmp_path, built_phantom
):
    """Defect 6: an auto run fills its values into the controls; the budget set back to 0
    makes the recipe paper, and the controls (and the job) are the paper's again."""
    viewer = make_napari_viewer()
    train = _train_panel(viewer, built_phantom, tmp_path / "auto.ftopy", BUDGET_MIN)
    assert train.recipe.value == "auto"
    train.start_button.native.click()
    qtbot.waitUntil(lambda: train.recipe_info.value != "" or train.worker is None, timeout=60_000)
    assert train.worker is not None, train.status.value  # (a refused budget says why)
    _discard(train, qtbot)
    paper = TrainConfig()
    names = ("lr", "batch_size", "steps_per_epoch", "reg_decay_steps")
    filled = {n: getattr(train, n).value for n in names}
    assert filled != {n: getattr(paper, n) for n in names}, filled  # the run wrote its own
    train.max_minutes.value = 0
    assert train.recipe.value == "paper"
    assert {n: getattr(train, n).value for n in names} == {n: getattr(paper, n) for n in names}
    assert float(train.lr.native.text()) == paper.lr  # as the control shows it
    cfg = train.job().train
    assert replace(cfg, log_every=paper.log_every) == paper  # what the saved model records


def test_budget_run_progress_follows_the_clock(make_napari_viewer, qtbot, tmp_path, built_phantom):
    """Defect 7: with a budget the bar shows the budget's share used (not steps of a
    schedule of tens of thousands of steps)."""
    viewer = make_napari_viewer()
    train = _train_panel(viewer, built_phantom, tmp_path / "b.ftopy", BUDGET_MIN)
    train.start_button.native.click()
    seen = _records(train)
    bars: list[tuple[float, int]] = []
    train.worker.yielded.connect(
        lambda r: bars.append((r["elapsed"], _shown_percent(train))) if r["kind"] == "step" else 0
    )
    qtbot.waitUntil(
        lambda: (bool(bars) and bars[-1][0] > 4.0) or train.worker is None, timeout=60_000
    )
    assert train.worker is not None, train.status.value
    _discard(train, qtbot)
    budget = 60 * BUDGET_MIN
    elapsed, shown = bars[-1]
    assert shown >= 6 and abs(shown - 100 * elapsed / budget) <= 2, (elapsed, shown)
    assert [p for _, p in bars] == sorted(p for _, p in bars)  # never goes back
    assert any(r["kind"] == "recipe" for r in seen)


def test_stop_message_stays_until_the_model_opens(
    make_napari_viewer, qtbot, tmp_path, built_phantom
):
    """Item 5: after Stop the status keeps saying "stopping…" (validation, soup and
    calibration add their phase in brackets) until the saved model opens."""
    viewer = make_napari_viewer()
    train = _train_panel(viewer, built_phantom, tmp_path / "stopped.ftopy")
    train.steps_per_epoch.value, train.max_epochs.value = 1000, 100
    train.start_button.native.click()
    seen = _records(train)
    qtbot.waitUntil(lambda: sum(r["kind"] == "step" for r in seen) >= 3, timeout=60_000)
    with qtbot.waitSignal(train.worker.finished, timeout=60_000):
        train.stop_button.native.click()
        n_stop = len(seen)
    after = [r for r in seen[n_stop:] if r["kind"] != "saved"]
    assert "validation" in {r["kind"] for r in after}, after
    assert all(r["status"].startswith("stopping") for r in after), [r["status"] for r in after]
    assert train.status.value.startswith("saved")
    # a few steps choose nothing: its name says so ("stopped [degenerate]")
    assert [ly.name.split(" [")[0] for ly in viewer.layers] == ["stopped"]


def test_pause_does_not_use_up_the_budget(make_napari_viewer, qtbot, tmp_path, built_phantom):
    """Item 5: a pause stops the budget's clock: the run goes on where it was."""
    viewer = make_napari_viewer()
    train = _train_panel(viewer, built_phantom, tmp_path / "p.ftopy", BUDGET_MIN)
    train.start_button.native.click()
    seen = _records(train)
    qtbot.waitUntil(
        lambda: any(r["kind"] == "step" and r["elapsed"] > 1.0 for r in seen), timeout=60_000
    )
    with qtbot.waitSignal(train.worker.paused, timeout=10_000):
        train.pause_button.native.click()
    qtbot.waitUntil(lambda: train.status.value == "paused", timeout=5_000)
    before = [r["elapsed"] for r in seen if r["kind"] == "step"][-1]
    n_before, shown_before = len(seen), _shown_percent(train)
    pause = 3.0
    t0 = time.perf_counter()
    qtbot.wait(int(1000 * pause))
    assert len(seen) == n_before  # nothing ran while paused
    train.pause_button.native.click()  # Resume
    qtbot.waitUntil(lambda: sum(r["kind"] == "step" for r in seen[n_before:]) >= 3, timeout=30_000)
    waited = time.perf_counter() - t0
    assert waited >= pause
    first = next(r for r in seen[n_before:] if r["kind"] == "step")
    # the step after the pause is timed as if the pause had not been
    assert first["elapsed"] - before < 1.0, (before, first["elapsed"])
    assert _shown_percent(train) - shown_before < 100 * pause / (60 * BUDGET_MIN) / 2
    _discard(train, qtbot)


def test_a_calibration_the_budget_cannot_hold_is_said_in_a_toast(
    make_napari_viewer, qtbot, tmp_path, built_phantom, monkeypatch
):
    """A budget run whose calibration cannot fit (here: a cap of nothing) tells the user
    in a notification, not only in a status line the next step overwrites."""
    import napari_factortopy.core.budget as budget

    from ._drive import Toasts

    monkeypatch.setattr(budget, "CALIBRATION_MAX_SHARE", 1e-9)
    viewer = make_napari_viewer()
    toasts = Toasts()
    try:
        train = _train_panel(viewer, built_phantom, tmp_path / "c.ftopy", BUDGET_MIN)
        train.start_button.native.click()
        seen = _records(train)
        qtbot.waitUntil(lambda: any(r["kind"] == "calibration_plan" for r in seen), timeout=60_000)
        qtbot.waitUntil(lambda: any("skipped" in m for m in toasts.messages()), timeout=5_000)
        said = next(m for m in toasts.messages() if "skipped" in m)
        assert "needs ≈" in said and "a budget of ≥" in said, said
        _discard(train, qtbot)
    finally:
        toasts.close()


def test_a_runtime_error_in_training_reaches_the_user_and_ends_the_run(
    make_napari_viewer, qtbot, tmp_path, built_phantom, monkeypatch
):
    """torch's failures are RuntimeErrors (here as CUDA's out-of-memory reads), which
    superqt's generator worker took for a deleted worker: no error, no "finished", and
    the panel said "training…" for ever. Now the user sees the error and can start again."""
    from napari_factortopy.core.model import FactorTopy

    from ._drive import Toasts

    def out_of_memory(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FactorTopy, "forward", out_of_memory)
    viewer = make_napari_viewer()
    toasts = Toasts()
    try:
        train = _train_panel(viewer, built_phantom, tmp_path / "oom.ftopy")
        train.start_button.native.click()
        with qtbot.waitSignal(train.worker.finished, timeout=60_000):
            pass
        assert train.status.value.startswith("failed: CUDA out of memory"), train.status.value
        assert any("out of memory" in m for m in toasts.messages()), toasts
        assert train.start_button.enabled and train.worker is None
        assert not (tmp_path / "oom.ftopy").exists()
    finally:
        toasts.close()


def test_reporting_runtime_errors_passes_records_sends_and_returns():
    from napari_factortopy._napari._workers import JobFailed, reporting_runtime_errors

    def job(n):
        got = []
        for i in range(n):
            got.append((yield i))
        if n > 2:
            raise RuntimeError("shape mismatch")
        return got

    gen = reporting_runtime_errors(job)(2)
    assert next(gen) == 0 and gen.send("a") == 1
    with pytest.raises(StopIteration) as stop:
        gen.send("b")
    assert stop.value.value == ["a", "b"]
    gen = reporting_runtime_errors(job)(3)
    with pytest.raises(JobFailed, match="shape mismatch") as failed:
        list(gen)
    assert isinstance(failed.value.__cause__, RuntimeError)


def test_pausable_clock_stands_still_while_paused():
    from napari_factortopy.app.jobs import PausableClock

    now = [100.0]
    clock = PausableClock(lambda: now[0])
    now[0] = 105.0
    assert clock() == 105.0
    clock.pause()
    now[0] = 115.0
    assert clock() == 105.0 and clock.paused
    clock.pause()  # again: no effect
    clock.resume()
    now[0] = 117.0
    assert clock() == 107.0 and not clock.paused
    clock.resume()  # when running: no effect
    assert clock() == 107.0


def test_the_non_obvious_settings_explain_themselves(make_napari_viewer):
    """Item 7: hovering recipe, calibration and the regulariser says what they do."""
    viewer = make_napari_viewer()
    train = dock(viewer, "Train")
    says = {
        "recipe": ("budget", "chooses", "paper"),
        "calibrate": ("sharpness", "confidence", "validation"),
        "reg_weight": ("collapse", "0 = no regulariser"),
        "reg_decay_steps": ("falls linearly to 0",),
    }
    for name, words in says.items():
        tip = getattr(train, name).native.toolTip()
        assert all(w in tip for w in words), (name, tip)
