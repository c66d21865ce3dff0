"""Training FactorTopy (METHOD.md §3) as one generator of progress records.

:func:`train` yields plain dicts (``kind`` = ``"step"``, ``"validation"``,
``"diverged"``, ``"soup"``, ``"done"``) so that the CLI's progress bar, the napari
widget (through a ``thread_worker``) and the tests drive the same code. Closing the
generator between steps (``gen.close()``) saves a checkpoint when a checkpoint
folder is given; ``resume=True`` continues from it.

This module is the loop; its parts live beside it, one job each:
:mod:`.prediction` (responses for images, batch by batch), :mod:`.soup` (greedy soup),
:mod:`.budget` (the time budget and the ``auto`` recipe), :mod:`.checkpoint` (the
run's identity, writing and resuming checkpoints) and :mod:`.run_end` (the soup, the
calibration and the test scores → :class:`TrainResult`). Their public names stay
importable from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .adamw import AdamW
from .budget import (
    AUTO_BATCHES,
    AUTO_REG_SHARE,
    AUTO_VALIDATION_SHARE,  # noqa: F401  (importable from here as before the split)
    AUTO_VALIDATIONS,  # noqa: F401
    AUTO_WARMUP_STEPS,
    CALIBRATION_MAX_SHARE,  # noqa: F401
    CALIBRATION_PASSES,  # noqa: F401
    PAPER_BATCH,  # noqa: F401
    PAPER_LR,  # noqa: F401
    Timing,
    calibration_skip_reason,
    check_budget,
    drifted,
    end_read_seconds,
    eta,
    finish_seconds,
    probe_batch,
    probe_done,
    replan_interval,
    resolve_auto_recipe,
    resolve_from_probe,
    time_validation,
)
from .checkpoint import (
    ResumeMismatch,
    resume_checkpoint,
    run_identity,
    save_checkpoint,
)
from .config import TrainConfig
from .kept import keep_state
from .metrics import SplitScores
from .model import FactorTopy, Selectors
from .prediction import autocast, predict, predict_batches, prediction_blocks
from .responses import ResponseRows
from .run_end import TrainingDiverged, TrainResult, finish
from .soup import greedy_soup, soup_trials
from .splits import Split

__all__ = [
    "ResumeMismatch",
    "TrainResult",
    "TrainingDiverged",
    "greedy_soup",
    "predict",
    "predict_batches",
    "regulariser",
    "resolve_auto_recipe",
    "run_identity",
    "soup_trials",
    "train",
]


def regulariser(sel: Selectors) -> torch.Tensor:
    """``R = mean_v Σ_l π log π / log L + mean_v (α − ½)²`` (a scalar tensor)."""
    n_layers = sel.layer.shape[1]
    neg_entropy = (sel.layer * torch.log(sel.layer.clamp_min(1e-12))).sum(1)
    r_layer = neg_entropy.mean() / math.log(n_layers) if n_layers > 1 else sel.layer.sum() * 0
    return r_layer + ((sel.scale - 0.5) ** 2).mean()


def train(
    model: FactorTopy,
    features: Any,
    responses: np.ndarray,
    split: Split,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    snapshots: bool = False,
    should_stop: Callable[[], bool] | None = None,
    started_at: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    identity: Mapping[str, Any] | None = None,
    kept_dir: str | Path | None = None,
) -> Iterator[dict]:
    """Train ``model`` in place, yielding progress records.

    Parameters
    ----------
    model : FactorTopy
        On the training device already.
    features : FeatureSource
        Tokens of every image in ``split`` (same device as the model).
    responses : array of shape (N, V), or ResponseRows
        Responses of all images (rows indexed like the splits). A
        :class:`~napari_factortopy.core.responses.ResponseRows` is read a batch of rows
        at a time (the validation and test rows when they are scored) and never held.
    split : Split
    config : TrainConfig
    checkpoint_dir : path, optional
        Where ``checkpoint.pt`` (model, optimiser, kept checkpoints, history, step)
        is written after every validation and when the generator is closed.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt``.
    snapshots : bool
        Attach the selectors (numpy ``space``, ``layer``, ``scale``) to every
        validation record (for live maps).
    should_stop : callable, optional
        Polled before every step; when it returns True training validates the
        current weights at once (unless it just did; a validation under way is that
        validation) and finishes normally (soup, test scores) with
        ``stop_reason="user_stop"``. Validation and the soup yield a record after
        every evaluation batch / soup trial, so a caller can show progress, pause, or
        close the generator there. (Closing the generator abandons the run, keeping
        only a checkpoint.)
    started_at : float, optional
        ``clock()`` when the budget's clock started (default: now), so
        a caller's set-up time counts against ``config.max_seconds``.
    clock : callable
        Seconds from a monotonic clock (default :func:`time.perf_counter`; tests pass
        a simulated clock to check the budget logic deterministically).
    identity : mapping, optional
        What the data are, beyond what this function sees (e.g. ``dataset`` and
        ``cache``: each ``{"what": text for people, "digest": str}``). With the
        responses' and the split's own entries (:func:`run_identity`) it is written
        into every checkpoint; resuming with other data raises :class:`ResumeMismatch`
        before anything is loaded or written.
    kept_dir : path, optional
        Where the ``top_k`` states kept for the soup wait as files of their parameters
        (:mod:`.kept`; 29 MiB each at 39,548 vertices) instead of in memory: for a run
        under a memory limit. The checkpoints then name these files, so with
        ``checkpoint_dir`` give a folder that lives as long as the checkpoints (the
        command line uses ``checkpoint_dir/kept``). A file is removed when its state
        drops out of the ``top_k``; the rest stay for the caller to remove. The model
        is the same either way.

    Yields
    ------
    dict
        ``kind="step"``: step, epoch, loss, loss_fit, loss_reg, reg_strength, elapsed,
        eta.
        ``kind="recipe"``: the ``auto`` recipe's resolved ``config`` and ``info``.
        ``kind="validating"``: step, done, total (images of the validation split
        predicted so far, after each evaluation batch).
        ``kind="souping"``: tried, total (soup trials done, after each).
        ``kind="calibrating"``: stage, val_score; ``kind="calibrated"``: the
        calibration's result (when ``config.calibrates``).
        ``kind="validation"``: step, epoch, val_score, best_score, improved, elapsed,
        eta, reg_strength (and ``selectors`` when ``snapshots``).
        ``kind="diverged"``: step, loss. ``kind="soup"``: members, val_score.
        ``kind="done"``: result (:class:`TrainResult`).

    Returns
    -------
    TrainResult
        Also the generator's return value.

    Raises
    ------
    TrainingDiverged
        The loss became non-finite before the first validation.
    ResumeMismatch
        ``resume`` with checkpoints made for another dataset, cache, responses or split
        (the checkpoints are left as they are).
    ValueError
        A budget too small for one validation (the message gives the minimum).
    """
    run = _Run(
        model,
        features,
        responses,
        split,
        config,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        snapshots=snapshots,
        should_stop=should_stop,
        started_at=started_at,
        clock=clock,
        identity=identity,
        kept_dir=kept_dir,
    )
    yield from run.loop()
    return (yield from finish(run))


class _Run:
    """One call of :func:`train`: the loop's state and its steps (see :func:`train` for
    the parameters). Set up here: the inputs checked, the optimiser, the batch order's
    generator and the loop's ``state`` (from the checkpoint when resuming)."""

    def __init__(
        self,
        model: FactorTopy,
        features: Any,
        responses: np.ndarray,
        split: Split,
        config: TrainConfig | None,
        *,
        checkpoint_dir: str | Path | None,
        resume: bool,
        snapshots: bool,
        should_stop: Callable[[], bool] | None,
        started_at: float | None,
        clock: Callable[[], float],
        identity: Mapping[str, Any] | None,
        kept_dir: str | Path | None = None,
    ) -> None:
        self.model, self.features, self.split, self.clock = model, features, split, clock
        self.snapshots, self.should_stop = snapshots, should_stop
        self.kept_dir = None if kept_dir is None else Path(kept_dir)
        cfg = config or TrainConfig()
        if cfg.calibrates and not _has_layer_softmax(model):  # e.g. a baseline: say so
            cfg = replace(cfg, calibrate=False)
        dev = next(model.parameters()).device
        by_rows = isinstance(responses, ResponseRows)  # rows read when needed
        # torch needs writable memory
        y_all = responses if by_rows else np.require(responses, np.float32, ["C", "W"])
        if y_all.ndim != 2 or y_all.shape[1] != model.n_vertices:
            raise ValueError(
                f"responses must have shape (N, {model.n_vertices}); found {y_all.shape}"
            )
        if len(split.train) == 0 or len(split.val) == 0:
            raise ValueError("the split needs training and validation images")
        if by_rows:
            y_dev = None
        elif dev.type != "cpu":
            y_dev = torch.as_tensor(y_all, device=dev)
        else:
            y_dev = torch.from_numpy(y_all)
        # torch.optim's update without torch.optim, which imports torch._dynamo (~3 s)
        opt = AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)
        state = {
            "step": 0,
            "epoch": 0,
            "best": -math.inf,
            "bad_epochs": 0,
            "kept": [],
            "history": [],
            "elapsed": 0.0,
            "config": cfg.to_dict(),
            "recipe": {},
            "last_val": 0,  # the step of the last validation
        }
        ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
        run_id = run_identity(y_all, split, identity) if ckpt_path is not None else {}
        if resume:
            state, rng, cfg = resume_checkpoint(ckpt_path, model, opt, cfg, run_id, split)
        self.cfg, self.dev, self.y_all, self.y_dev, self.opt = cfg, dev, y_all, y_dev, opt
        self.rng, self.state, self.ckpt_path, self.run_id = rng, state, ckpt_path, run_id
        self.val_scores: SplitScores | None = None  # made at the first validation

        clock0 = clock() if started_at is None else float(started_at)
        self.t_start = clock0 - state["elapsed"]
        self.budget = cfg.max_seconds
        self.train_idx = np.asarray(split.train)
        if "order" not in state:
            state["order"], state["pos"] = _epoch_order(features, self.train_idx, rng), 0
        elif hasattr(features, "plan"):  # resumed: a streaming source reads ahead along it
            features.plan(state["order"][state["pos"] :])
        self.timing = Timing()
        self.auto_pending = cfg.recipe == "auto" and not state["recipe"]
        # a given batch size is kept: only its speed is measured
        self.probe_batches = AUTO_BATCHES if "batch_size" in cfg.chosen else (cfg.batch_size,)
        self.probe: dict[int, list[float]] = {}
        # the step time the validation interval was planned with (0: none yet), and
        # the durations of the steps since (the auto recipe re-plans when they drift)
        self.plan_step: float = 0.0
        self.recent: list[float] = []
        self.stop_reason = "max_epochs"
        self.diverged = False
        # the validation time of the last budget check (the run's end plans with it, as
        # training's last check did) and whether that check left the calibration out
        self.finish_val: float | None = None
        self.calibration_skipped = False
        model.train()

    def save(self) -> None:
        """Write the checkpoint (when the run has a checkpoint folder)."""
        if self.ckpt_path is None:
            return
        save_checkpoint(self.ckpt_path, self.model, self.opt, self.state, self.rng, self.run_id)

    def scored_val(self, m: FactorTopy) -> Iterator[int]:
        """Predict the validation images a batch at a time into :attr:`val_scores`
        (neither the predictions nor the responses held whole); yields the images done
        after each batch."""
        if self.val_scores is None:  # the responses' sums, read once per run
            self.val_scores = SplitScores(self.y_all, self.split.val)
        scores, cfg = self.val_scores, self.cfg
        scores.reset()
        for block in prediction_blocks(
            m, self.features, self.split.val, cfg.eval_batch_size, cfg.amp
        ):
            scores.add(block)
            yield scores.done

    def val_score(self, m: FactorTopy) -> float:
        """Mean validation R² of ``m``."""
        for _ in self.scored_val(m):
            pass
        return float(np.nanmean(self.val_scores.r2()))

    def reg_strength(self) -> float:
        cfg, state, budget = self.cfg, self.state, self.budget
        if "reg_decay_steps" in cfg.chosen:  # by time: over the first half of the training time
            # (the budget less what the calibration and the test scores will take)
            training = budget - finish_seconds(
                self.timing.val or 0.0,
                self.split,
                cfg,
                self.model.n_vertices,
                self.timing.test_read,
            )
            span = AUTO_REG_SHARE * max(training, 0.5 * budget)
            return max(0.0, 1.0 - (self.clock() - self.t_start) / span)
        return max(0.0, 1.0 - state["step"] / cfg.reg_decay_steps)

    def add_validation(self, seconds: float) -> None:
        """Record a validation's wall time, and with it the time the end will take to
        read the test features (:func:`~.budget.end_read_seconds`, at the read speed so
        far)."""
        self.timing.add_validation(seconds)
        self.timing.test_read = end_read_seconds(self.features, self.split)

    def since_validation(self) -> int:
        return self.state["step"] - self.state["last_val"]

    def validate(self) -> Iterator[dict]:
        """Yields "validating" records between batches; returns the "validation" one."""
        model, split, cfg, state = self.model, self.split, self.cfg, self.state
        clock = self.clock
        t0 = clock()
        for done in self.scored_val(model):
            if done < len(split.val):
                yield {
                    "kind": "validating",
                    "step": state["step"],
                    "done": done,
                    "total": len(split.val),
                }
        score = float(np.nanmean(self.val_scores.r2()))
        state["epoch"] += 1
        state["last_val"] = state["step"]
        self.add_validation(clock() - t0)
        improved = score > state["best"]
        if improved:
            state["best"], state["bad_epochs"] = score, 0
        else:
            state["bad_epochs"] += 1
        dropped = keep_state(
            state["kept"], score, model, cfg.top_k, folder=self.kept_dir, step=state["step"]
        )
        elapsed = clock() - self.t_start
        state["elapsed"] = elapsed
        rec = {
            "kind": "validation",
            "step": state["step"],
            "epoch": state["epoch"],
            "val_score": score,
            "best_score": state["best"],
            "improved": improved,
            "elapsed": elapsed,
            "eta": eta(elapsed, state["step"], cfg, self.budget),
            "reg_strength": self.reg_strength(),
        }
        state["history"].append(dict(rec))
        self.save()
        for path in dropped:  # named by no checkpoint any more
            Path(path).unlink(missing_ok=True)
        if self.snapshots:
            with torch.no_grad():
                rec["selectors"] = model.selectors().numpy()
        return rec

    # ---- the loop
    def loop(self) -> Iterator[dict]:
        """Steps and validations until a stopping rule (:attr:`stop_reason`); closing the
        generator saves a checkpoint."""
        state = self.state
        try:
            while state["epoch"] < self.cfg.max_epochs:
                if state["bad_epochs"] >= self.cfg.patience:
                    self.stop_reason = "early_stop"
                    break
                if self.should_stop is not None and self.should_stop():
                    self.stop_reason = "user_stop"
                    if self.since_validation() or not state["kept"]:
                        # (a stop before the first step validates the initial weights:
                        # the run ends with a model, not a "diverged" error)
                        yield (yield from self.validate())
                    break
                batch_size = self.cfg.batch_size
                if self.auto_pending:  # compare batch sizes on real training steps
                    batch_size = probe_batch(self.probe, state["step"], self.probe_batches)
                losses = yield from self.step(batch_size)
                if losses is None:  # diverged
                    break
                if (yield from self.after_step(batch_size, *losses)):  # out of time
                    break
        except GeneratorExit:
            state["elapsed"] = self.clock() - self.t_start
            self.save()
            raise

    def step(self, batch_size: int) -> Iterator[dict]:
        """One optimisation step on the next batch of the epoch's order.

        Returns ``(loss, fit, reg, seconds)`` (tensors and the step's duration on the
        clock), or None after yielding a "diverged" record.
        """
        model, features, cfg, state = self.model, self.features, self.cfg, self.state
        clock, y_dev, dev = self.clock, self.y_dev, self.dev
        if state["pos"] + batch_size > len(state["order"]):
            state["order"], state["pos"] = _epoch_order(features, self.train_idx, self.rng), 0
        batch = state["order"][state["pos"] : state["pos"] + batch_size]
        state["pos"] += batch_size
        t_step = clock()
        loc, glo = features.get(batch)
        if y_dev is None:  # read from the files: this batch's rows only
            target = torch.from_numpy(self.y_all[batch]).to(dev)
        else:
            target = y_dev[torch.as_tensor(batch, device=y_dev.device)].to(dev)
        with autocast(dev, cfg.amp):
            sel = model.selectors()
            if not bool(torch.isfinite(sel.space).all()):  # NaN weights: stop now
                self.diverged, self.stop_reason = True, "diverged"
                yield {"kind": "diverged", "step": state["step"], "loss": float("nan")}
                return None
            pred = model(loc, glo, sel)
            fit = F.smooth_l1_loss(pred.float(), target, beta=cfg.smooth_l1_beta)
            decay = self.reg_strength()
            if decay == 0.0 and "reg_done_step" not in state:
                state["reg_done_step"] = state["step"]
            reg = regulariser(sel)
            loss = fit + cfg.reg_weight * decay * reg
        if not torch.isfinite(loss):
            self.diverged, self.stop_reason = True, "diverged"
            yield {"kind": "diverged", "step": state["step"], "loss": float(loss.detach())}
            return None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        self.opt.step()
        state["step"] += 1
        seconds = clock() - t_step
        self.timing.add_step(seconds, state["step"])
        return loss, fit, reg, seconds

    def after_step(self, batch_size: int, loss, fit, reg, seconds: float) -> Iterator[dict]:
        """The ``auto`` recipe's probe, the step record, and a validation when it is due
        or the budget runs out. Returns True when the budget has run out."""
        state, clock = self.state, self.clock
        if self.auto_pending:
            self.probe.setdefault(batch_size, []).append(seconds)
            if probe_done(self.probe, self.probe_batches):
                yield from self.resolve_recipe()
        if state["step"] % self.cfg.log_every == 0:
            elapsed = clock() - self.t_start
            yield {
                "kind": "step",
                "step": state["step"],
                "epoch": state["epoch"],
                "loss": float(loss.detach()),
                "loss_fit": float(fit.detach()),
                "loss_reg": float(reg.detach()),
                "reg_strength": self.reg_strength(),
                "elapsed": elapsed,
                "eta": eta(elapsed, state["step"], self.cfg, self.budget),
            }
        auto = self.cfg.recipe == "auto" and not self.auto_pending
        if auto:
            self.recent.append(seconds)
            if (now := drifted(self.plan_step, self.recent)) is not None:
                self.timing.reset_steps(now)  # the speed changed since the plan:
                self.replan("drift")  # re-cut the interval before the next validation is due
        out_of_time = self.out_of_time()
        yield from self.calibration_plan()
        if out_of_time or self.since_validation() >= self.cfg.steps_per_epoch:
            yield (yield from self.validate())
            if out_of_time:
                self.stop_reason = "budget"
                return True
            if auto:
                self.replan()
        return False

    def replan(self, why: str = "validation") -> None:
        """The ``auto`` recipe's validation interval re-planned from the current speed
        (:func:`~.budget.replan_interval`); remembers the speed and step it used, and
        each change of the interval in the recipe record (``recipe["replans"]``: step,
        elapsed, why, step and validation seconds, the new interval)."""
        clock, state = self.clock, self.state
        before = self.cfg.steps_per_epoch
        elapsed = clock() - self.t_start
        self.cfg = replan_interval(
            self.cfg, elapsed, self.budget, self.timing, self.split, self.model.n_vertices
        )
        self.plan_step, self.recent = self.timing.step, []
        state["config"] = self.cfg.to_dict()
        if self.cfg.steps_per_epoch != before and isinstance(state.get("recipe"), dict):
            state["recipe"].setdefault("replans", []).append(
                {
                    "step": int(state["step"]),
                    "elapsed": round(float(elapsed), 3),
                    "why": why,
                    "step_seconds": round(float(self.timing.step), 4),
                    "validation_seconds": round(float(self.timing.val or 0.0), 3),
                    "steps_per_epoch": int(self.cfg.steps_per_epoch),
                }
            )

    def resolve_recipe(self) -> Iterator[dict]:
        """The ``auto`` recipe from the probe's timings: the config, the timing, the
        learning rate; yields the "recipe" record."""
        timing, clock = self.timing, self.clock
        cfg, info = resolve_from_probe(
            self.cfg, self.probe, self.model, self.features, self.split, self.budget,
            clock() - self.t_start, clock,
        )  # fmt: skip
        self.cfg = cfg
        self.add_validation(info["validation_seconds"])
        timing.reset_steps(info["step_seconds"])
        self.plan_step, self.recent = info["step_seconds"], []
        check_budget(self.budget, timing, self.split, cfg, self.model.n_vertices)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr
        self.state["config"], self.state["recipe"] = cfg.to_dict(), info
        self.auto_pending = False
        yield {"kind": "recipe", "config": cfg, "info": info}

    def calibration_plan(self) -> Iterator[dict]:
        """A "calibration_plan" record when the last budget check changed whether the
        calibration fits the budget (said up front: a calibration skipped for want of
        time lets training keep the whole budget)."""
        if self.finish_val is None:
            return
        skip = calibration_skip_reason(
            self.finish_val, self.split, self.cfg, self.model.n_vertices
        )
        if (skip is not None) == self.calibration_skipped:
            return
        self.calibration_skipped = skip is not None
        text = skip or "the calibration fits the budget again: its time is reserved"
        yield {"kind": "calibration_plan", "skipped": skip is not None, "text": text}

    def out_of_time(self) -> bool:
        """Whether one more step, a validation and the run's end would overrun the budget
        (the first such check also times a validation)."""
        timing, split, cfg, budget = self.timing, self.split, self.cfg, self.budget
        out_of_time = False
        if budget is not None:
            if timing.val is None and self.state["step"] >= AUTO_WARMUP_STEPS:
                self.add_validation(
                    time_validation(self.model, self.features, split, cfg, self.clock)
                )
                check_budget(budget, timing, split, cfg, self.model.n_vertices)
            if timing.val is not None:
                self.finish_val = timing.val
                elapsed = self.clock() - self.t_start
                finish = timing.val + finish_seconds(
                    timing.val, split, cfg, self.model.n_vertices, timing.test_read
                )
                out_of_time = elapsed + timing.step + finish > budget
        return out_of_time


def _has_layer_softmax(model: Any) -> bool:
    """A FactorTopy that selects layers: what the calibration applies to (the
    baselines trained by :func:`train` have no layer softmax)."""
    return isinstance(model, FactorTopy) and model.config.select_layer


def _epoch_order(features: Any, train_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An epoch's batch order: the feature source's own when it has one (a streamed
    cache keeps batches within windows of whole chunks), else a permutation."""
    own = getattr(features, "epoch_order", None)
    return rng.permutation(train_idx) if own is None else own(train_idx, rng)
