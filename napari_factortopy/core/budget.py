"""The time budget of a training run and the ``auto`` recipe planned inside it.

A run with ``TrainConfig.max_seconds`` keeps running estimates of a step's and a
validation's wall time (:class:`Timing`), reserves the time the run's end needs (the
calibration and the test scores: :func:`finish_seconds`), refuses a budget too small
for one validation (:func:`check_budget`), and with ``recipe="auto"`` probes batch
sizes on real steps and plans the schedule (:func:`resolve_auto_recipe`,
:func:`replan_interval`).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from .calibration import refit_work
from .config import TrainConfig
from .model import FactorTopy
from .prediction import predict
from .splits import Split

__all__ = [
    "AUTO_BATCHES",
    "AUTO_MAX_GAP",
    "AUTO_REG_SHARE",
    "AUTO_VALIDATIONS",
    "AUTO_VALIDATION_SHARE",
    "AUTO_WARMUP_STEPS",
    "CALIBRATION_MAX_SHARE",
    "CALIBRATION_PASSES",
    "CALIBRATION_REFIT_PASSES",
    "PAPER_BATCH",
    "PAPER_LR",
    "VALIDATIONS_KEPT",
    "Timing",
    "calibration_fits",
    "calibration_need",
    "calibration_seconds",
    "calibration_skip_reason",
    "check_budget",
    "end_read_seconds",
    "eta",
    "finish_seconds",
    "probe_batch",
    "probe_done",
    "replan_interval",
    "resolve_auto_recipe",
    "resolve_from_probe",
    "test_seconds",
    "time_validation",
]

#: Steps run before the ``auto`` recipe measures the speed (not counted in the probe).
AUTO_WARMUP_STEPS = 5
#: Validations the ``auto`` recipe plans inside the budget.
AUTO_VALIDATIONS = 20
#: Largest fraction of the budget the ``auto`` recipe lets validations take.
AUTO_VALIDATION_SHARE = 0.1
#: Share of the budget over which the ``auto`` recipe decays the regulariser (the rest
#: is left to the sharpened selectors).
AUTO_REG_SHARE = 0.5
#: Time the sharpness calibration needs, in passes over the training and validation
#: images measured by the validation time: this many for its probe (six temperatures
#: scored on a probe of vertices), plus :data:`CALIBRATION_REFIT_PASSES` per unit of the
#: refit's work (:func:`~.calibration.refit_work`: 0.67 at the demo's 2,000 vertices,
#: 13.2 at Algonauts' 39,548). Measured: about 6–7 passes in all on the issue-8
#: phantoms (2,000 vertices), and ≈ 200 s + a refit estimated at ≈ 1,228 s against a
#: validation of 6.7 s over 10 % of the images (≈ 24 passes) at Algonauts' full size;
#: the rule gives 7.0 and 25.8. The calibration stops itself at the deadline when a
#: loaded machine makes it slower.
CALIBRATION_PASSES = 6
CALIBRATION_REFIT_PASSES = 1.5
#: Most of a budget the calibration may take. When it needs more, nothing is reserved:
#: the calibration is skipped and training keeps the whole budget (a smaller reserve
#: would be spent on a probe whose refit then does not fit).
CALIBRATION_MAX_SHARE = 0.2
#: The ``auto`` recipe re-plans its validation interval between validations when the
#: running step time has drifted by more than this factor from the one the interval was
#: planned with (e.g. the probe's first steps read few token rows, which stay in cache;
#: trained selectors spread over the grid and steps became 3–4× slower at Algonauts'
#: size, so a plan of 20 validations gave 2).
AUTO_REPLAN_DRIFT = 1.5
#: Steps timed after a plan before its drift is judged.
AUTO_REPLAN_STEPS = 10
#: Validations whose median is the validation time the budget plans with.
VALIDATIONS_KEPT = 3
#: Longest stretch between two validations the ``auto`` recipe plans, as a share of the
#: time left for training (the validation-share rule gives way to it).
AUTO_MAX_GAP = 0.15
#: Batch sizes the ``auto`` recipe compares (images per second), and the paper's pair.
AUTO_BATCHES = (8, 16, 32)
PAPER_BATCH, PAPER_LR = 8, 1e-3


def resolve_auto_recipe(
    cfg: TrainConfig,
    remaining: float,
    step_seconds: float,
    val_seconds: float,
    batch_size: int,
) -> tuple[TrainConfig, dict]:
    """The ``auto`` recipe: a schedule that finishes inside the remaining budget.

    It chooses only the settings the user left unset: a field named in ``cfg.given``
    (:attr:`TrainConfig.given`: ``batch_size``, ``lr``, ``steps_per_epoch``,
    ``reg_decay_steps``) is kept as it is, and the rule below plans the others around
    it. The rule (measured, then written down):

    - batch size: the one of :data:`AUTO_BATCHES` with the most images per second
      (measured by the caller); learning rate scaled linearly from the paper's
      1e-3 at batch 8 (``lr = 1e-3 · batch / 8``, with the given batch size if any);
    - validation interval: about :data:`AUTO_VALIDATIONS` validations in the budget,
      but never more than :data:`AUTO_VALIDATION_SHARE` of the time spent validating
      unless that would leave more than :data:`AUTO_MAX_GAP` of the time between two
      validations (and at most the paper's 1000 steps);
    - regulariser decay: over the first half of the training time (the budget less
      the time kept for the calibration and the test scores), so the sharpened
      selectors get at least the other half. :func:`train` applies it by the clock
      (``λ·max(0, 1 − elapsed / (training/2))``), which keeps the promise when a shared
      machine's speed changes after this plan; ``T`` here is the plan (half the
      steps expected to fit, at most the paper's ``T``) and the run records the step
      where the decay really ended. The validation interval is re-planned at each
      validation from the current speed, by the same rule. A given ``T`` decays by
      the step (``λ·max(0, 1 − t/T)``, as the paper's recipe does).

    Parameters
    ----------
    cfg : TrainConfig
        The requested recipe (``recipe="auto"``).
    remaining : float
        Seconds of the budget left for training steps and their validations.
    step_seconds : float
        Measured seconds per training step at ``batch_size``.
    val_seconds : float
        Measured (or estimated) seconds per validation pass.
    batch_size : int
        The chosen batch size (ignored when ``cfg.given`` names ``batch_size``).

    Returns
    -------
    config : TrainConfig
        ``cfg`` with the resolved ``batch_size``, ``lr``, ``steps_per_epoch``,
        ``reg_decay_steps`` (the given ones unchanged).
    info : dict
        The measurements, the planned steps and the rule, for the model file;
        ``given`` (the fields kept as the user set them, with their values) and
        ``chosen`` (the fields this rule chose).
    """
    given = set(cfg.given)
    if "batch_size" in given:
        batch_size = cfg.batch_size
    step_seconds = max(step_seconds, 1e-6)
    if "steps_per_epoch" in given:
        spe = cfg.steps_per_epoch
    else:
        min_spe = math.ceil(val_seconds / (AUTO_VALIDATION_SHARE * step_seconds))
        # ... but a slow validation (measured while other work took the cores) may not
        # push the next one further than AUTO_MAX_GAP of the time away: it would then be
        # re-measured only at the end (the 4,500-s rehearsal: 530 steps, 1,300 s)
        min_spe = min(min_spe, math.ceil(AUTO_MAX_GAP * remaining / step_seconds))
        steps_guess = max(1, int(remaining / step_seconds))
        spe = min(1000, max(10, min_spe, math.ceil(steps_guess / AUTO_VALIDATIONS)))
    planned = max(1, int(remaining / (step_seconds + val_seconds / spe)))
    decay = cfg.reg_decay_steps
    if "reg_decay_steps" not in given:
        decay = max(1, min(cfg.reg_decay_steps, int(planned * AUTO_REG_SHARE)))
    lr = cfg.lr if "lr" in given else PAPER_LR * batch_size / PAPER_BATCH
    resolved = replace(
        cfg, batch_size=batch_size, lr=lr, steps_per_epoch=spe, reg_decay_steps=decay
    )
    info = {
        "name": "auto",
        "step_seconds": step_seconds,
        "validation_seconds": val_seconds,
        "planned_steps": planned,
        "steps_per_epoch": spe,
        "given": {k: getattr(resolved, k) for k in resolved.given},
        "chosen": list(resolved.chosen),
        "rule": (
            "batch: most images/s of 8/16/32; lr = 1e-3 * batch / 8; steps between "
            f"validations: ~{AUTO_VALIDATIONS} validations in the budget, validations "
            f"<= {AUTO_VALIDATION_SHARE:.0%} of it, <= 1000, re-planned at each "
            f"validation; regulariser decays over the first {AUTO_REG_SHARE:.0%} of the "
            "budget by the clock (reg_decay_steps records the step where it ended); "
            "settings the user gave are kept as given"
        ),
    }
    return resolved, info


class Timing:
    """Running estimates of a step's and a validation's wall time (seconds).

    ``val`` is the median of the last :data:`VALIDATIONS_KEPT` validations timed
    (:meth:`add_validation`): one validation slowed by another program on a shared
    machine (280 s among passes of 7 s in the full-size rehearsal) no longer ends the
    run early nor stretches the interval, while two slow ones in a row move it.
    """

    def __init__(self) -> None:
        self.step = 0.0
        self.val: float | None = None
        #: seconds to read the test features at the end (a streamed cache; 0 in memory)
        self.test_read = 0.0
        self._n = 0
        self._vals: list[float] = []

    def add_validation(self, seconds: float) -> None:
        """Record one validation pass's wall time and update :attr:`val`."""
        self._vals = [*self._vals, float(seconds)][-VALIDATIONS_KEPT:]
        self.val = float(np.median(self._vals))

    def add_step(self, seconds: float, step: int) -> None:
        if step <= 2:  # the first steps pay one-off costs (allocation, kernels)
            return
        self._n += 1
        # mean of the first few, then an exponential average (speed can drift)
        w = 1.0 / self._n if self._n < 20 else 0.05
        self.step += w * (seconds - self.step)

    def reset_steps(self, seconds: float) -> None:
        self.step, self._n = seconds, 20


def time_validation(
    model: FactorTopy, features: Any, split: Split, cfg: TrainConfig, clock=time.perf_counter
) -> float:
    """Seconds of one validation pass, from one timed evaluation batch."""
    n = min(len(split.val), cfg.eval_batch_size)
    t0 = clock()
    predict(model, features, np.asarray(split.val[:n]), cfg.eval_batch_size, cfg.amp)
    per_image = (clock() - t0) / max(n, 1)
    return per_image * len(split.val)


def calibration_need(val_seconds: float, split: Split, cfg: TrainConfig, n_vertices: int) -> float:
    """Seconds the calibration of a model of ``n_vertices`` needs, uncapped (0 when the
    run does not calibrate).

    In passes over the training and validation images, timed by the validation pass:
    :data:`CALIBRATION_PASSES` for the probe (its readouts, their scores, the final
    validation), and :data:`CALIBRATION_REFIT_PASSES` per unit of the refit's work
    relative to the probe pass (:func:`~.calibration.refit_work`, which grows with the
    vertices). The refit's extra reads of a streamed cache (one per chunk of vertices
    whose Gram matrices fit its memory) are not counted: its Gram products dominate.
    """
    if not cfg.calibrates:
        return 0.0
    share = (len(split.train) + len(split.val)) / max(len(split.val), 1)
    passes = CALIBRATION_PASSES + CALIBRATION_REFIT_PASSES * refit_work(n_vertices)
    return passes * share * val_seconds


def calibration_fits(val_seconds: float, split: Split, cfg: TrainConfig, n_vertices: int) -> bool:
    """Whether the calibration's need fits :data:`CALIBRATION_MAX_SHARE` of the budget
    (always, without a budget)."""
    need = calibration_need(val_seconds, split, cfg, n_vertices)
    return cfg.max_seconds is None or need <= CALIBRATION_MAX_SHARE * cfg.max_seconds


def calibration_seconds(
    val_seconds: float, split: Split, cfg: TrainConfig, n_vertices: int
) -> float:
    """Time to reserve for the calibration: its need when that fits
    :data:`CALIBRATION_MAX_SHARE` of the budget, else 0 (the calibration is then
    skipped and training keeps the whole budget: a reserve too small for the refit
    would be spent for nothing)."""
    if not calibration_fits(val_seconds, split, cfg, n_vertices):
        return 0.0
    return calibration_need(val_seconds, split, cfg, n_vertices)


def calibration_skip_reason(
    val_seconds: float, split: Split, cfg: TrainConfig, n_vertices: int
) -> str | None:
    """Why a budgeted run skips its calibration, for a person (None when it does not)."""
    if not cfg.calibrates or calibration_fits(val_seconds, split, cfg, n_vertices):
        return None
    need = calibration_need(val_seconds, split, cfg, n_vertices)
    return (
        f"the calibration of {n_vertices:,} vertices needs ≈ {need:,.0f} s, more than "
        f"{CALIBRATION_MAX_SHARE:.0%} of the {cfg.max_seconds:,g}-s budget: skipped, and "
        f"training keeps the whole budget; a budget of ≥ "
        f"{math.ceil(need / CALIBRATION_MAX_SHARE):,} s would hold it"
    )


def finish_seconds(
    val_seconds: float, split: Split, cfg: TrainConfig, n_vertices: int, read_seconds: float = 0.0
) -> float:
    """Time after the last validation: the calibration (if any) and the test scores
    (``read_seconds``: reading the test features from disk, :func:`end_read_seconds`)."""
    calibration = calibration_seconds(val_seconds, split, cfg, n_vertices)
    return calibration + test_seconds(val_seconds, split, read_seconds)


def test_seconds(val_seconds: float, split: Split, read_seconds: float = 0.0) -> float:
    """The test scores' time: a validation's, scaled to the test split's size, plus
    ``read_seconds`` to read the test features (a streamed cache; 0 in memory)."""
    return val_seconds * len(split.test) / max(len(split.val), 1) + read_seconds


def end_read_seconds(features: Any, split: Split) -> float:
    """Seconds a feature source that streams from disk will spend reading the test
    images' features at the run's end (its ``read_seconds``, at the speed it has read so
    far). 0 for features in memory, and when the validation images are not held in
    memory either: a validation then reads its chunks too, and its time, scaled to the
    test split, already carries the reading."""
    estimate = getattr(features, "read_seconds", None)
    if estimate is None or getattr(features, "resident", None) is None:
        return 0.0
    return float(estimate(split.test))


def replan_interval(
    cfg: TrainConfig,
    elapsed: float,
    budget: float,
    timing: Timing,
    split: Split,
    n_vertices: int,
) -> TrainConfig:
    """The ``auto`` recipe's validation interval, re-planned from the current speed (a
    shared machine's speed changes), by the rule of :func:`resolve_auto_recipe` applied
    to the whole budget: about the same number of validations over the run, not 20 more
    in whatever time is left (which would crowd them, and patience, into the end). A
    given interval is kept."""
    if "steps_per_epoch" not in cfg.chosen:
        return cfg
    val = timing.val or 0.0
    usable = budget - val - finish_seconds(val, split, cfg, n_vertices, timing.test_read)
    if usable <= 0 or timing.step <= 0 or elapsed >= budget:
        return cfg
    planned, _ = resolve_auto_recipe(cfg, usable, timing.step, val, cfg.batch_size)
    return replace(cfg, steps_per_epoch=planned.steps_per_epoch)


def drifted(planned_step: float, recent: list[float]) -> float | None:
    """The current step time when it has left the one a plan was made with
    (``planned_step``) by more than :data:`AUTO_REPLAN_DRIFT`, else None.

    ``recent`` holds the durations (s) of the steps since the plan; the current step
    time is their median, judged once :data:`AUTO_REPLAN_STEPS` have been timed (a
    running average would lag: after 10 steps 4× slower it reads 2.2×).
    """
    if len(recent) < AUTO_REPLAN_STEPS or planned_step <= 0:
        return None
    now = float(np.median(recent))
    ratio = now / planned_step
    return now if ratio > AUTO_REPLAN_DRIFT or ratio < 1 / AUTO_REPLAN_DRIFT else None


def check_budget(
    budget: float, timing: Timing, split: Split, cfg: TrainConfig, n_vertices: int
) -> None:
    """Stop at once when the budget cannot hold warm-up, one validation, the calibration
    (when the run calibrates) and the test."""
    val = timing.val or 0.0
    minimum = (
        AUTO_WARMUP_STEPS * timing.step
        + val
        + finish_seconds(val, split, cfg, n_vertices, timing.test_read)
    )
    if minimum > budget:
        raise ValueError(
            f"a budget of {budget:g} s is too small for one validation: this run needs "
            f"at least {math.ceil(minimum)} s (warm-up {AUTO_WARMUP_STEPS} steps, one "
            f"validation {val:.2g} s, the calibration and the test scores)"
        )


def probe_batch(
    probe: dict[int, list[float]], step: int, batches: tuple[int, ...] = AUTO_BATCHES
) -> int:
    """The batch size of the next probe step: warm-up at the first of ``batches``, then
    3 timed steps each."""
    for b in batches:
        if len(probe.get(b, [])) < (AUTO_WARMUP_STEPS if b == batches[0] else 3):
            return b
    return batches[-1]


def probe_done(probe: dict[int, list[float]], batches: tuple[int, ...] = AUTO_BATCHES) -> bool:
    return all(
        len(probe.get(b, [])) >= (AUTO_WARMUP_STEPS if b == batches[0] else 3) for b in batches
    )


def resolve_from_probe(cfg, probe, model, features, split, budget, elapsed, clock):
    # per batch size: the median of its last 3 steps (the first ones warm up)
    step_s = {b: float(np.median(ts[-3:])) for b, ts in probe.items()}
    batch = max(step_s, key=lambda b: (b / step_s[b], -b))  # the given one, if given
    t0 = clock()
    val_s = time_validation(model, features, split, cfg, clock)
    elapsed += clock() - t0
    read_s = end_read_seconds(features, split)
    remaining = (
        budget - elapsed - val_s - finish_seconds(val_s, split, cfg, model.n_vertices, read_s)
    )
    resolved, info = resolve_auto_recipe(cfg, remaining, step_s[batch], val_s, batch)
    info["images_per_second"] = {str(b): b / s for b, s in step_s.items()}
    return resolved, info


def eta(elapsed: float, step: int, cfg: TrainConfig, budget: float | None) -> float:
    max_steps = cfg.max_epochs * cfg.steps_per_epoch
    by_steps = elapsed / max(step, 1) * max(max_steps - step, 0)
    if budget is not None:
        return max(0.0, min(by_steps, budget - elapsed))
    return by_steps
