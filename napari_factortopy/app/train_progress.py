"""The Train panel's reading of a training job's records, without Qt: the status line of
each record, the progress bar's position and the time left as ``m:ss``; and a run as the
panel follows it (:class:`TrainRun`: its stop request, the pausable clock its budget is
measured by, the bar's plan and the status each record leaves).

The records are those of :func:`napari_factortopy.app.jobs.training_job`; the panel
(:mod:`napari_factortopy._napari._train_widget`) shows what these functions return.

Stop ends training as a budget would (the current weights validated, the best
checkpoints souped, the result scored and saved, "stopped by the user" in its summary);
validation and soup report every batch, so the status says "stopping…" with their phase
in brackets until the model opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from napari_factortopy.app.jobs import PausableClock

if TYPE_CHECKING:
    from napari_factortopy.core.config import TrainConfig

__all__ = [
    "BUDGET_TICKS",
    "STOPPING",
    "TrainRun",
    "clock_text",
    "diverged_warning",
    "progress_ticks",
    "result_line",
    "status_line",
]

#: Units of the progress bar in a budget run (it follows the clock, not the steps).
BUDGET_TICKS = 1000
#: The status from Stop until the model opens (the run's phase is added in brackets).
STOPPING = "stopping: validating, then saving the best model…"


def status_line(rec: Mapping[str, Any]) -> str | None:
    """The status line of a record (None for the kinds that have none: "start",
    "diverged", "recipe", "saved", …)."""
    kind = rec["kind"]
    if kind == "phantom":
        return f"building the phantom: {rec.get('stage', '')}"
    if kind == "step":
        eta = rec.get("eta")
        left = f" · {clock_text(eta)} left" if eta is not None and eta == eta else ""
        return f"step {rec['step']} · loss {rec['loss']:.4f}{left}"
    if kind == "validating":
        return f"validating: {rec['done']} of {rec['total']} images"
    if kind == "calibrating":
        return f"calibrating the layer sharpness: {rec['stage']}…"
    if kind == "calibrated":
        from napari_factortopy.core.calibration import calibration_line

        return f"calibration: {calibration_line(rec)}"
    if kind == "calibration_plan":
        return rec["text"]
    if kind == "souping":
        return f"soup: checkpoint {rec['tried']} of {rec['total']} tried"
    if kind == "validation":
        return (
            f"epoch {rec['epoch']} · val R² {rec['val_score']:.4f} (best {rec['best_score']:.4f})"
        )
    return None


def progress_ticks(
    value: int,
    maximum: int,
    step: int | None,
    elapsed: float | None,
    budget: float | None,
    total_steps: int,
) -> int:
    """The progress bar's next value (from its ``value`` and ``maximum``).

    Without a budget the bar counts the schedule's steps; with one it follows the
    clock (the budget's share used, or the schedule's if that is ahead, in
    :data:`BUDGET_TICKS`) and never moves back.
    """
    if budget is None:
        return value if step is None else min(step, maximum)
    done = (step or 0) / total_steps
    if elapsed is not None and elapsed == elapsed:
        done = max(done, elapsed / budget)
    return max(value, round(BUDGET_TICKS * min(done, 1.0)))


def clock_text(seconds: float) -> str:
    """Seconds as ``m:ss`` (or ``h:mm:ss``)."""
    m, sec = divmod(round(float(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def diverged_warning(rec: Mapping[str, Any]) -> str:
    """The warning of a "diverged" record."""
    return (
        f"training diverged at step {rec['step']} (loss {rec['loss']}); "
        "keeping the last good checkpoint"
    )


def result_line(model: Any) -> str | None:
    """The saved model's convergence line, and why its selectors are degenerate when
    they are (None when its summary has no convergence line and its selectors are fine)."""
    from napari_factortopy.core.selector_check import model_selector_check

    conv = (model.summary or {}).get("convergence") or {}
    parts = [str(conv["line"])] if conv.get("line") else []
    check = model_selector_check(model)
    if check and check["line"]:
        parts.append(f"DEGENERATE SELECTORS: {check['line']}")
    return "; ".join(parts) or None


class TrainRun:
    """One training run as the panel follows it: its stop request, the clock its budget
    is measured by, the progress bar's plan and the status line each record leaves.

    Parameters
    ----------
    train : TrainConfig
        The run's recipe: its budget (``max_seconds``) and schedule (``max_epochs`` ×
        ``steps_per_epoch``).
    clock : callable
        The monotonic clock under :attr:`clock` (default :func:`time.perf_counter`).

    Attributes
    ----------
    stop_event : threading.Event
        Set by :meth:`stop`; the job polls ``stop_event.is_set`` before every step.
    clock : PausableClock
        The budget's clock, paused while the run is.
    budget : float or None
        Seconds of the run's budget.
    total_steps : int
        The schedule's steps (the auto recipe's, once it chose them).
    """

    def __init__(self, train: TrainConfig, clock: Callable[[], float] = time.perf_counter):
        self.stop_event = threading.Event()
        self.clock = PausableClock(clock)
        self.budget = train.max_seconds
        self.total_steps = max(train.max_epochs * train.steps_per_epoch, 1)

    @property
    def stopping(self) -> bool:
        """Whether Stop was pressed."""
        return self.stop_event.is_set()

    def stop(self) -> bool:
        """Ask the run to finish with the best model so far; False when it was asked
        already (a second press discards the run)."""
        if self.stop_event.is_set():
            return False
        self.stop_event.set()
        return True

    @property
    def bar_max(self) -> int:
        """The progress bar's maximum: :data:`BUDGET_TICKS` with a budget, else the
        schedule's steps."""
        return BUDGET_TICKS if self.budget else self.total_steps

    def ticks(self, value: int, maximum: int, rec: Mapping[str, Any]) -> int:
        """The progress bar's value after a "step" or "validation" record
        (:func:`progress_ticks`)."""
        return progress_ticks(
            value, maximum, rec.get("step"), rec.get("elapsed"), self.budget, self.total_steps
        )

    def resolved(self, config: TrainConfig) -> int | None:
        """The auto recipe chose ``config``: its schedule is the run's; returns the bar's
        new maximum (None without a change: with a budget the bar follows the clock)."""
        self.total_steps = max(int(config.max_epochs * config.steps_per_epoch), 1)
        return self.total_steps if self.budget is None else None

    def say(self, line: str) -> str:
        """A progress line as the status shows it: after Stop, in brackets after
        :data:`STOPPING` (which stays until the model opens)."""
        return f"{STOPPING} ({line})" if self.stopping else line

    def status(self, rec: Mapping[str, Any], paused: bool = False) -> str | None:
        """The status after ``rec`` (None: it stays as it is): "training" at the start, a
        step's line unless the run is ``paused`` or stopping, the other records' lines
        (:func:`status_line`) through :meth:`say`, "saved <path>" at the end."""
        kind = rec["kind"]
        if kind == "saved":
            return f"saved {rec['path']}"
        if kind == "step":
            return None if paused or self.stopping else status_line(rec)
        line = "training" if kind == "start" else status_line(rec)
        return None if line is None else self.say(line)
