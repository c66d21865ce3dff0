"""The Train panel's reading of a training job's records, without Qt: the status line of
each record, the progress bar's position and the time left as ``m:ss``.

The records are those of :func:`napari_factortopy.app.jobs.training_job`; the panel
(:mod:`napari_factortopy._napari._train_widget`) shows what these functions return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BUDGET_TICKS", "STOPPING", "clock_text", "progress_ticks", "status_line"]

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
