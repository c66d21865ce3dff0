"""The end of a training run (METHOD.md §3): the greedy soup of the kept checkpoints,
the sharpness calibration and the test scores → :class:`TrainResult`.

:func:`finish` continues the run that :func:`napari_factortopy.core.training.train`
looped: ``run`` is that call's loop state (its model, features, responses, split,
recipe, timing, budget, clock and checkpoint state), read here and never rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .budget import (
    calibration_need,
    calibration_seconds,
    calibration_skip_reason,
    finish_seconds,
    test_seconds,
)
from .calibration import calibrate
from .checkpoint import state_copy
from .config import TrainConfig
from .metrics import SplitScores
from .prediction import prediction_blocks
from .soup import final_soup


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf before any checkpoint was kept."""


@dataclass
class TrainResult:
    """What :func:`~.training.train` returns (and puts in its final record).

    Attributes
    ----------
    state : dict of tensors
        Final weights (the soup, or the best checkpoint).
    val_score : float
        Mean validation R² of those weights.
    test_r2, test_r : arrays of shape (V,)
        Per-vertex R² and Pearson r on the test split.
    history : list of dict
        One record per validation.
    steps : int
    diverged : bool
    soup_members : list of int
    seconds : float
    epochs : int
        Validations done.
    stop_reason : str
        ``"early_stop"`` (patience ran out), ``"max_epochs"``, ``"budget"``,
        ``"user_stop"`` or ``"diverged"``.
    reg_strength : float
        ``max(0, 1 − t/T)`` at the last step: 1 = the regulariser at full strength,
        0 = finished.
    config : TrainConfig
        The recipe actually used (the ``auto`` recipe's resolved values).
    recipe : dict
        How the recipe was resolved (measured speeds, the rule), empty for ``paper``.
    validation_seconds : float or None
        Wall time of the last validation pass (None when none was timed).
    """

    state: dict[str, torch.Tensor]
    val_score: float
    test_r2: np.ndarray
    test_r: np.ndarray
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    diverged: bool = False
    soup_members: list[int] = field(default_factory=list)
    seconds: float = 0.0
    epochs: int = 0
    stop_reason: str = "max_epochs"
    reg_strength: float = 0.0
    config: TrainConfig | None = None
    recipe: dict = field(default_factory=dict)
    validation_seconds: float | None = None
    #: :func:`napari_factortopy.core.calibration.calibrate`'s result (None: not run).
    calibration: dict | None = None


def finish(run: Any) -> Iterator[dict]:
    """The soup, the calibration and the test scores; returns the :class:`TrainResult`."""
    state = run.state
    if not state["kept"]:
        raise TrainingDiverged(
            f"training diverged at step {state['step']} (loss is not finite) before the "
            "first validation; lower the learning rate or check the responses"
        )
    final, score, members = yield from _soup(run)
    final, score, calibration = yield from _calibrate(run, final, score)
    return (yield from _result(run, final, score, members, calibration))


def _soup(run: Any) -> Iterator[dict]:
    """:func:`~.soup.final_soup` of the kept checkpoints inside the budget; returns
    ``(state, val_score, members)`` and leaves the model set to it."""
    cfg, timing, budget, clock = run.cfg, run.timing, run.budget, run.clock
    has_time = None
    if budget is not None:
        # the soup uses what is left of the budget but the calibration's and the test's
        # time; the 5 % slack is for writing the file
        val = run.finish_val if run.finish_val is not None else (timing.val or 0.0)
        deadline = budget - finish_seconds(
            val, run.split, cfg, run.model.n_vertices, timing.test_read
        )

        def has_time() -> bool:
            return clock() - run.t_start + (timing.val or 0.0) <= deadline

    kept = run.state["kept"]
    return (yield from final_soup(run.model, kept, run.val_score, cfg.soup, has_time))


def _calibrate(run: Any, final: dict, score: float) -> Iterator[dict]:
    """The sharpness calibration when the recipe calibrates; returns
    ``(state, val_score, calibration or None)``."""
    cfg, split, timing, budget, model = (
        run.cfg, run.split, run.timing, run.budget, run.model
    )  # fmt: skip
    calibration = None
    # the validation time training's last budget check planned with (a validation
    # after it moves the median: the end keeps that check's choice)
    val = run.finish_val if run.finish_val is not None else (timing.val or 0.0)
    skipped = calibration_skip_reason(val, split, cfg, model.n_vertices)
    if skipped is not None:  # nothing was reserved for it: training kept the budget
        calibration = {
            "applied": False,
            "reason": skipped,
            "trials": [],
            "needed_seconds": calibration_need(val, split, cfg, model.n_vertices),
            "reserved_seconds": 0.0,
        }
        yield {"kind": "calibrated", **{k: v for k, v in calibration.items() if k != "trials"}}
    elif cfg.calibrates:  # (turned off at the start for a model it cannot apply to)
        calibration = yield from calibrate(
            model,
            run.features,
            run.y_all,
            split.train,
            split.val,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            time_left=None
            if budget is None
            else lambda: (
                budget
                - test_seconds(timing.val or 0.0, split, timing.test_read)
                - (run.clock() - run.t_start)
            ),
            clock=run.clock,
        )
        if calibration["applied"]:
            final = state_copy(model)
            score = run.val_score(model)  # every vertex, the calibrated model
            calibration["val_score"] = score
        calibration["needed_seconds"] = calibration_need(val, split, cfg, model.n_vertices)
        calibration["reserved_seconds"] = calibration_seconds(val, split, cfg, model.n_vertices)
        yield {"kind": "calibrated", **{k: v for k, v in calibration.items() if k != "trials"}}
    return final, score, calibration


def _result(run: Any, final: dict, score: float, members: list, calibration) -> Iterator[dict]:
    """Test scores and the :class:`TrainResult`, yielded as the "done" record."""
    cfg, state, split, model = run.cfg, run.state, run.split, run.model
    test = SplitScores(run.y_all, split.test)  # a batch at a time: nothing (n, V) held
    for block in prediction_blocks(model, run.features, split.test, cfg.eval_batch_size, cfg.amp):
        test.add(block)
    if "reg_decay_steps" in cfg.chosen and "reg_done_step" in state:  # where it really ended
        cfg = run.cfg = replace(cfg, reg_decay_steps=max(1, int(state["reg_done_step"])))
    result = TrainResult(
        state=final,
        val_score=score,
        test_r2=test.r2(),
        test_r=test.pearson(),
        history=state["history"],
        steps=state["step"],
        diverged=run.diverged,
        soup_members=members,
        seconds=run.clock() - run.t_start,
        epochs=state["epoch"],
        stop_reason=run.stop_reason,
        reg_strength=run.reg_strength(),
        config=cfg,
        recipe=dict(state["recipe"]),
        validation_seconds=run.timing.val,
        calibration=calibration,
    )
    yield {"kind": "done", "result": result}
    return result
