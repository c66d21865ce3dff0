"""How a training run ended, and whether its maps can be read as finished.

A map trained with the regulariser still on (METHOD.md §3: ``λ·max(0, 1 − t/T)·R``
pulls every layer selector toward uniform) is pale and compressed toward the middle
layers; a run stopped while validation R² was still rising is unfinished too. This
module turns what training recorded into one verdict that the model file keeps
(``summary["convergence"]``) and that ``factortopy info``, napari and exported
figures show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .metrics import format_number

__all__ = ["PLATEAU_GAIN", "STOP_REASONS", "assess_convergence", "calibration_line"]

#: How training can stop (``TrainResult.stop_reason``).
STOP_REASONS = ("early_stop", "max_epochs", "budget", "user_stop", "diverged")

#: A run counts as plateaued when the best validation R² of the last quarter of its
#: validations beats the best before it by less than this (absolute R²).
PLATEAU_GAIN = 0.002

_WHY = {
    "max_epochs": "reached the maximum number of epochs",
    "budget": "stopped by the time budget",
    "user_stop": "stopped by the user",
    "diverged": "training diverged",
}


def _still_rising(val_scores: Sequence[float]) -> float | None:
    """Gain of the last quarter's best over the best before it (None: too few)."""
    scores = [float(s) for s in val_scores if s is not None and math.isfinite(float(s))]
    if len(scores) < 4:
        return None
    cut = len(scores) - max(1, len(scores) // 4)
    return max(scores[cut:]) - max(scores[:cut])


def assess_convergence(
    stop_reason: str,
    reg_strength: float,
    epochs: int,
    steps: int,
    val_scores: Sequence[float],
    test_r2_mean: float | None = None,
) -> dict:
    """The convergence verdict of a finished run.

    Parameters
    ----------
    stop_reason : str
        One of :data:`STOP_REASONS`.
    reg_strength : float
        The regulariser's strength ``max(0, 1 − t/T)`` at the last step, in [0, 1].
    epochs, steps : int
        Validations and optimiser steps done.
    val_scores : sequence of float, length ``epochs``
        Mean validation R² at each validation.
    test_r2_mean : float, optional
        Mean test R² of the final weights; a negative value (worse than predicting
        the mean) makes the model ``"failed"`` whatever else happened.

    Returns
    -------
    dict
        ``state``: ``"converged"``, ``"not_converged"`` or ``"failed"``;
        ``stop_reason``, ``epochs``, ``steps``, ``reg_strength``, ``val_gain_last_quarter``
        (None with fewer than 4 validations) and ``line``: one sentence for a person,
        e.g. ``"NOT converged: stopped by the time budget with the regulariser at 80 %"``.
    """
    if stop_reason not in STOP_REASONS:
        raise ValueError(f"stop_reason must be one of {STOP_REASONS}; found {stop_reason!r}")
    gain = _still_rising(val_scores)
    reg_pct = round(100 * float(reg_strength))
    base = {
        "stop_reason": stop_reason,
        "epochs": int(epochs),
        "steps": int(steps),
        "reg_strength": float(reg_strength),
        "val_gain_last_quarter": gain,
    }
    if test_r2_mean is not None and math.isfinite(test_r2_mean) and test_r2_mean < 0:
        line = (
            f"FAILED: test R² {test_r2_mean:.3g} is below 0 (worse than predicting each "
            "vertex's mean); check the learning rate and the inputs"
        )
        return {**base, "state": "failed", "line": line}
    if test_r2_mean is not None and not math.isfinite(test_r2_mean):
        return {**base, "state": "failed", "line": "FAILED: the test R² is not finite"}
    if stop_reason == "early_stop" and reg_strength <= 0:
        return {
            **base,
            "state": "converged",
            "line": f"converged (early stop after {epochs} epochs, {steps} steps)",
        }
    if stop_reason == "diverged":
        return {
            **base,
            "state": "not_converged",
            "line": f"NOT converged: training diverged at step {steps}; the best "
            "checkpoint before it was kept",
        }
    why = _WHY.get(stop_reason, "stopped early by patience")
    if reg_strength > 0:
        line = f"NOT converged: {why} with the regulariser at {reg_pct} %"
        return {**base, "state": "not_converged", "line": line}
    if gain is not None and gain < PLATEAU_GAIN:
        line = (
            f"converged ({why} after {epochs} epochs; the regulariser had finished and "
            f"validation R² had plateaued: +{max(gain, 0):.4f} over the last quarter)"
        )
        return {**base, "state": "converged", "line": line}
    if gain is None:
        line = f"NOT converged: {why} after only {epochs} validations (too few to see a plateau)"
    else:
        line = (
            f"NOT converged: {why} while validation R² was still rising "
            f"(+{gain:.4f} over the last quarter)"
        )
    return {**base, "state": "not_converged", "line": line}


def calibration_line(cal: dict) -> str:
    """One line for a person on a calibration result (``summary["calibration"]``; torch-free,
    so `factortopy info` need not import torch)."""
    conf = {float(t["tau"]): t["confidence"] for t in cal.get("trials", [])}
    if not cal.get("applied"):
        why = cal.get("reason") or "no temperature with a refitted readout beat the trained one"
        return f"not applied ({why})"
    tau = float(cal["tau"])
    sharp = ""
    if tau != 1.0 and 1.0 in conf and tau in conf:
        sharp = f", mean layer confidence {conf[1.0]:.2f} → {conf[tau]:.2f}"
    what = (
        "kept as trained (×1)"
        if tau == 1.0
        else f"{'sharpened' if tau > 1 else 'softened'} ×{tau:g}"
    )
    return (
        f"layer softmax {what}{sharp}, readout refitted (ridge λ "
        f"{cal.get('ridge')}): validation R² on {cal.get('n_probe')} probe vertices "
        f"{format_number(cal.get('baseline_probe'))} → {format_number(cal.get('best_probe'))} "
        f"({format_number(cal.get('seconds'), '.0f')} s)"
    )
