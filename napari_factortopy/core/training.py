"""Training FactorTopy (METHOD.md §3) as one generator of progress records.

:func:`train` yields plain dicts (``kind`` = ``"step"``, ``"validation"``,
``"diverged"``, ``"soup"``, ``"done"``) so that the CLI's progress bar, the napari
widget (through a ``thread_worker``) and the tests drive the same code. Closing the
generator between steps (``gen.close()``) saves a checkpoint when a checkpoint
folder is given; ``resume=True`` continues from it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .adamw import AdamW
from .atomic import atomic_path
from .calibration import calibrate
from .config import TrainConfig
from .metrics import pearson_r, r2_score
from .model import FactorTopy, Selectors
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


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf before any checkpoint was kept."""


class ResumeMismatch(ValueError):
    """``resume=True`` with checkpoints made for other data (dataset, cache, responses or
    split): the message names the folder, what they were made for and what was given."""


def regulariser(sel: Selectors) -> torch.Tensor:
    """``R = mean_v Σ_l π log π / log L + mean_v (α − ½)²`` (a scalar tensor)."""
    n_layers = sel.layer.shape[1]
    neg_entropy = (sel.layer * torch.log(sel.layer.clamp_min(1e-12))).sum(1)
    r_layer = neg_entropy.mean() / math.log(n_layers) if n_layers > 1 else sel.layer.sum() * 0
    return r_layer + ((sel.scale - 0.5) ** 2).mean()


def predict(
    model: FactorTopy,
    features: Any,
    indices: np.ndarray,
    batch_size: int = 64,
    amp: bool = True,
    selectors: Selectors | None = None,
) -> np.ndarray:
    """Predicted responses for images ``indices``.

    Parameters
    ----------
    model : FactorTopy
    features : FeatureSource
    indices : array of shape (n,)
    batch_size : int
    amp : bool
        bf16 autocast when the model is on CUDA.
    selectors : Selectors, optional
        Fixed selector outputs (e.g. a phantom's truth) instead of the MLPs'.

    Returns
    -------
    array of shape (n, V), float32
    """
    out = np.empty((len(indices), model.n_vertices), np.float32)
    for _ in predict_batches(model, features, indices, out, batch_size, amp, selectors):
        pass
    return out


def predict_batches(
    model: FactorTopy,
    features: Any,
    indices: np.ndarray,
    out: np.ndarray,
    batch_size: int = 64,
    amp: bool = True,
    selectors: Selectors | None = None,
) -> Iterator[int]:
    """:func:`predict` one batch at a time, so a caller can report progress or stop.

    Fills ``out`` (array of shape (n, V)) in place and yields the number of rows done
    after each batch. The model's train/eval mode is restored when the generator ends
    or is closed.
    """
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(dev, amp):
            sel = model.selectors() if selectors is None else selectors
        for lo in range(0, len(indices), batch_size):
            with torch.no_grad(), _autocast(dev, amp):
                loc, glo = features.get(indices[lo : lo + batch_size])
                out[lo : lo + len(loc[0])] = model(loc, glo, sel).float().cpu().numpy()
            yield lo + len(loc[0])
    finally:
        model.train(was_training)


def _autocast(dev: torch.device, amp: bool):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")


def _state_copy(model: FactorTopy) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype)
        for k in states[0]
    }


def greedy_soup(
    model: FactorTopy,
    candidates: list[tuple[float, dict[str, torch.Tensor]]],
    score_fn,
    has_time: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], list[int], float]:
    """Greedy soup (ours: on validation): add checkpoints best-first to a running
    uniform average while its validation score does not drop.

    Parameters
    ----------
    model : FactorTopy
        Used to evaluate averages (its weights are left set to the soup).
    candidates : list of (validation score, state dict)
    score_fn : callable
        ``score_fn(model) -> float`` validation score of the model's current weights.
    has_time : callable, optional
        ``has_time() -> bool``, asked before each trial: when it says no, the soup
        ends with the members it has (a budget's deadline).

    Returns
    -------
    state : dict
        The soup's weights.
    members : list of int
        Positions (in best-first order) of the checkpoints in the soup.
    score : float
        Its validation score.
    """
    trials = soup_trials(model, candidates, score_fn, has_time)
    while True:
        try:
            next(trials)
        except StopIteration as done:
            return done.value


def soup_trials(
    model: FactorTopy,
    candidates: list[tuple[float, dict[str, torch.Tensor]]],
    score_fn,
    has_time: Callable[[], bool] | None = None,
) -> Iterator[dict]:
    """:func:`greedy_soup` as a generator: yields ``{"kind": "souping", "tried",
    "total"}`` after each trial and returns ``(state, members, score)``."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
    members = [order[0]]
    best_state = candidates[order[0]][1]
    best = candidates[order[0]][0]
    for k, i in enumerate(order[1:], start=1):
        if has_time is not None and not has_time():
            break
        trial = _average([candidates[j][1] for j in [*members, i]])
        model.load_state_dict(trial)
        score = score_fn(model)
        if score >= best:
            members.append(i)
            best, best_state = score, trial
        yield {"kind": "souping", "tried": k, "total": len(order) - 1}
    model.load_state_dict(best_state)
    ranks = [order.index(m) for m in members]
    return best_state, ranks, best


@dataclass
class TrainResult:
    """What :func:`train` returns (and puts in its final record).

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


#: Steps run before the ``auto`` recipe measures the speed (not counted in the probe).
AUTO_WARMUP_STEPS = 5
#: Validations the ``auto`` recipe plans inside the budget.
AUTO_VALIDATIONS = 20
#: Largest fraction of the budget the ``auto`` recipe lets validations take.
AUTO_VALIDATION_SHARE = 0.1
#: Share of the budget over which the ``auto`` recipe decays the regulariser (the rest
#: is left to the sharpened selectors).
AUTO_REG_SHARE = 0.5
#: Time reserved for the sharpness calibration, in passes over the training and
#: validation images measured by the validation time (its six temperatures are scored
#: on a probe of vertices in one pass, then every vertex's readout is refitted: about
#: six such passes on the issue-8 phantoms on a quiet machine; the calibration stops
#: itself at the deadline when a loaded machine makes it slower).
CALIBRATION_PASSES = 7
#: Most of a budget reserved for the calibration: with a small budget training comes
#: first, and the calibration runs only if it fits in what is left.
CALIBRATION_MAX_SHARE = 0.2
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
      (and at most the paper's 1000 steps);
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
) -> Iterator[dict]:
    """Train ``model`` in place, yielding progress records.

    Parameters
    ----------
    model : FactorTopy
        On the training device already.
    features : FeatureSource
        Tokens of every image in ``split`` (same device as the model).
    responses : array of shape (N, V)
        Responses of all images (rows indexed like the splits).
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
    cfg = config or TrainConfig()
    if cfg.calibrates and not _has_layer_softmax(model):  # e.g. a baseline: say so
        cfg = replace(cfg, calibrate=False)
    dev = next(model.parameters()).device
    y_all = np.require(responses, np.float32, ["C", "W"])  # torch needs writable memory
    if y_all.ndim != 2 or y_all.shape[1] != model.n_vertices:
        raise ValueError(f"responses must have shape (N, {model.n_vertices}); found {y_all.shape}")
    if len(split.train) == 0 or len(split.val) == 0:
        raise ValueError("the split needs training and validation images")
    y_dev = torch.as_tensor(y_all, device=dev) if dev.type != "cpu" else torch.from_numpy(y_all)
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
        if ckpt_path is None or not ckpt_path.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_identity(ckpt_path, saved, run_id, split)
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as exc:
            raise ValueError(
                f"{ckpt_path}: the checkpoint was written for a model of another shape "
                f"(other layers, widths or vertices) than this run's: {str(exc)[:300]}"
            ) from exc
        _check_resume(ckpt_path, saved["state"].get("config"), cfg)
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state["order"] = state["order"].numpy()
        # checkpoints written before the step of the last validation was kept
        state.setdefault("last_val", state["step"] - state["step"] % cfg.steps_per_epoch)
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]
        # the recipe in force when the run stopped; the stopping rules of this call
        cfg = replace(
            TrainConfig.from_dict(state.get("config") or cfg.to_dict()),
            max_seconds=cfg.max_seconds,
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            log_every=cfg.log_every,
            eval_batch_size=cfg.eval_batch_size,
        )
        for group in opt.param_groups:
            group["lr"] = cfg.lr

    def save_checkpoint():
        if ckpt_path is None:
            return
        with atomic_path(ckpt_path) as tmp:
            torch.save(
                {
                    "model": _state_copy(model),
                    "optimizer": opt.state_dict(),
                    "state": {**state, "order": torch.as_tensor(state["order"])},
                    "rng": rng.bit_generator.state,
                    "identity": run_id,
                },
                tmp,
            )

    def score_val(pred: np.ndarray) -> float:
        """Mean validation R² of predictions (n_val, V)."""
        return float(np.nanmean(r2_score(y_all[split.val], pred)))

    def val_score(m: FactorTopy) -> float:
        return score_val(predict(m, features, split.val, cfg.eval_batch_size, cfg.amp))

    clock0 = clock() if started_at is None else float(started_at)
    t_start = clock0 - state["elapsed"]
    budget = cfg.max_seconds
    train_idx = np.asarray(split.train)
    if "order" not in state:
        state["order"], state["pos"] = _epoch_order(features, train_idx, rng), 0
    elif hasattr(features, "plan"):  # resumed: a streaming source reads ahead along it
        features.plan(state["order"][state["pos"] :])
    timing = _Timing()
    auto_pending = cfg.recipe == "auto" and not state["recipe"]
    # a given batch size is kept: only its speed is measured
    probe_batches = AUTO_BATCHES if "batch_size" in cfg.chosen else (cfg.batch_size,)
    probe: dict[int, list[float]] = {}
    stop_reason = "max_epochs"
    diverged = False
    model.train()

    def reg_strength() -> float:
        if "reg_decay_steps" in cfg.chosen:  # by time: over the first half of the training time
            # (the budget less what the calibration and the test scores will take)
            training = budget - _finish_seconds(timing.val or 0.0, split, cfg)
            span = AUTO_REG_SHARE * max(training, 0.5 * budget)
            return max(0.0, 1.0 - (clock() - t_start) / span)
        return max(0.0, 1.0 - state["step"] / cfg.reg_decay_steps)

    def since_validation() -> int:
        return state["step"] - state["last_val"]

    def validate() -> Iterator[dict]:
        """Yields "validating" records between batches; returns the "validation" one."""
        t0 = clock()
        pred = np.empty((len(split.val), model.n_vertices), np.float32)
        batches = predict_batches(model, features, split.val, pred, cfg.eval_batch_size, cfg.amp)
        for done in batches:
            if done < len(split.val):
                yield {
                    "kind": "validating",
                    "step": state["step"],
                    "done": done,
                    "total": len(split.val),
                }
        score = score_val(pred)
        state["epoch"] += 1
        state["last_val"] = state["step"]
        timing.val = clock() - t0
        improved = score > state["best"]
        if improved:
            state["best"], state["bad_epochs"] = score, 0
        else:
            state["bad_epochs"] += 1
        state["kept"].append((score, _state_copy(model)))
        state["kept"].sort(key=lambda t: -t[0])
        del state["kept"][cfg.top_k :]
        elapsed = clock() - t_start
        state["elapsed"] = elapsed
        rec = {
            "kind": "validation",
            "step": state["step"],
            "epoch": state["epoch"],
            "val_score": score,
            "best_score": state["best"],
            "improved": improved,
            "elapsed": elapsed,
            "eta": _eta(elapsed, state["step"], cfg, budget),
            "reg_strength": reg_strength(),
        }
        state["history"].append(dict(rec))
        save_checkpoint()
        if snapshots:
            with torch.no_grad():
                rec["selectors"] = model.selectors().numpy()
        return rec

    try:
        while state["epoch"] < cfg.max_epochs:
            if state["bad_epochs"] >= cfg.patience:
                stop_reason = "early_stop"
                break
            if should_stop is not None and should_stop():
                stop_reason = "user_stop"
                if since_validation():
                    yield (yield from validate())
                break
            batch_size = cfg.batch_size
            if auto_pending:  # compare batch sizes on real training steps
                batch_size = _probe_batch(probe, state["step"], probe_batches)
            if state["pos"] + batch_size > len(state["order"]):
                state["order"], state["pos"] = _epoch_order(features, train_idx, rng), 0
            batch = state["order"][state["pos"] : state["pos"] + batch_size]
            state["pos"] += batch_size
            t_step = clock()
            loc, glo = features.get(batch)
            target = y_dev[torch.as_tensor(batch, device=y_dev.device)].to(dev)
            with _autocast(dev, cfg.amp):
                sel = model.selectors()
                if not bool(torch.isfinite(sel.space).all()):  # NaN weights: stop now
                    diverged, stop_reason = True, "diverged"
                    yield {"kind": "diverged", "step": state["step"], "loss": float("nan")}
                    break
                pred = model(loc, glo, sel)
                fit = F.smooth_l1_loss(pred.float(), target, beta=cfg.smooth_l1_beta)
                decay = reg_strength()
                if decay == 0.0 and "reg_done_step" not in state:
                    state["reg_done_step"] = state["step"]
                reg = regulariser(sel)
                loss = fit + cfg.reg_weight * decay * reg
            if not torch.isfinite(loss):
                diverged, stop_reason = True, "diverged"
                yield {"kind": "diverged", "step": state["step"], "loss": float(loss.detach())}
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            state["step"] += 1
            timing.add_step(clock() - t_step, state["step"])
            if auto_pending:
                probe.setdefault(batch_size, []).append(clock() - t_step)
                if _probe_done(probe, probe_batches):
                    cfg, info = _resolve_from_probe(
                        cfg, probe, model, features, split, budget, clock() - t_start, clock
                    )
                    timing.val = info["validation_seconds"]
                    timing.reset_steps(info["step_seconds"])
                    _check_budget(budget, timing, split, cfg)
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr
                    state["config"], state["recipe"] = cfg.to_dict(), info
                    auto_pending = False
                    yield {"kind": "recipe", "config": cfg, "info": info}
            if state["step"] % cfg.log_every == 0:
                elapsed = clock() - t_start
                yield {
                    "kind": "step",
                    "step": state["step"],
                    "epoch": state["epoch"],
                    "loss": float(loss.detach()),
                    "loss_fit": float(fit.detach()),
                    "loss_reg": float(reg.detach()),
                    "reg_strength": reg_strength(),
                    "elapsed": elapsed,
                    "eta": _eta(elapsed, state["step"], cfg, budget),
                }
            out_of_time = False
            if budget is not None:
                if timing.val is None and state["step"] >= AUTO_WARMUP_STEPS:
                    timing.val = _time_validation(model, features, split, cfg, clock)
                    _check_budget(budget, timing, split, cfg)
                if timing.val is not None:
                    elapsed = clock() - t_start
                    finish = timing.val + _finish_seconds(timing.val, split, cfg)
                    out_of_time = elapsed + timing.step + finish > budget
            if out_of_time or since_validation() >= cfg.steps_per_epoch:
                yield (yield from validate())
                if out_of_time:
                    stop_reason = "budget"
                    break
                if cfg.recipe == "auto" and not auto_pending:
                    cfg = _replan_interval(cfg, clock() - t_start, budget, timing, split)
                    state["config"] = cfg.to_dict()
    except GeneratorExit:
        state["elapsed"] = clock() - t_start
        save_checkpoint()
        raise

    if not state["kept"]:
        raise TrainingDiverged(
            f"training diverged at step {state['step']} (loss is not finite) before the "
            "first validation; lower the learning rate or check the responses"
        )
    deadline = None
    if budget is not None:
        # the soup uses what is left of the budget but the calibration's and the test's
        # time; the 5 % slack is for writing the file
        deadline = budget - _finish_seconds(timing.val or 0.0, split, cfg)
    if cfg.soup and len(state["kept"]) > 1:
        final, members, score = yield from soup_trials(
            model,
            state["kept"],
            val_score,
            has_time=None
            if deadline is None
            else lambda: clock() - t_start + (timing.val or 0.0) <= deadline,
        )
        yield {"kind": "soup", "members": members, "val_score": score}
    else:
        final, score, members = state["kept"][0][1], state["kept"][0][0], [0]
        model.load_state_dict(final)
    calibration = None
    if cfg.calibrates:  # (turned off at the start for a model it cannot apply to)
        calibration = yield from calibrate(
            model,
            features,
            y_all,
            split.train,
            split.val,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            time_left=None
            if budget is None
            else lambda: budget - _test_seconds(timing.val or 0.0, split) - (clock() - t_start),
            clock=clock,
        )
        if calibration["applied"]:
            final = _state_copy(model)
            score = val_score(model)  # every vertex, the calibrated model
            calibration["val_score"] = score
        calibration["reserved_seconds"] = _calibration_seconds(timing.val or 0.0, split, cfg)
        yield {"kind": "calibrated", **{k: v for k, v in calibration.items() if k != "trials"}}
    test_pred = predict(model, features, split.test, cfg.eval_batch_size, cfg.amp)
    y_test = y_all[split.test]
    if "reg_decay_steps" in cfg.chosen and "reg_done_step" in state:  # where it really ended
        cfg = replace(cfg, reg_decay_steps=max(1, int(state["reg_done_step"])))
    result = TrainResult(
        state=final,
        val_score=score,
        test_r2=r2_score(y_test, test_pred),
        test_r=pearson_r(y_test, test_pred),
        history=state["history"],
        steps=state["step"],
        diverged=diverged,
        soup_members=members,
        seconds=clock() - t_start,
        epochs=state["epoch"],
        stop_reason=stop_reason,
        reg_strength=reg_strength(),
        config=cfg,
        recipe=dict(state["recipe"]),
        validation_seconds=timing.val,
        calibration=calibration,
    )
    yield {"kind": "done", "result": result}
    return result


class _Timing:
    """Running estimates of a step's and a validation's wall time (seconds)."""

    def __init__(self) -> None:
        self.step = 0.0
        self.val: float | None = None
        self._n = 0

    def add_step(self, seconds: float, step: int) -> None:
        if step <= 2:  # the first steps pay one-off costs (allocation, kernels)
            return
        self._n += 1
        # mean of the first few, then an exponential average (speed can drift)
        w = 1.0 / self._n if self._n < 20 else 0.05
        self.step += w * (seconds - self.step)

    def reset_steps(self, seconds: float) -> None:
        self.step, self._n = seconds, 20


def _time_validation(
    model: FactorTopy, features: Any, split: Split, cfg: TrainConfig, clock=time.perf_counter
) -> float:
    """Seconds of one validation pass, from one timed evaluation batch."""
    n = min(len(split.val), cfg.eval_batch_size)
    t0 = clock()
    predict(model, features, np.asarray(split.val[:n]), cfg.eval_batch_size, cfg.amp)
    per_image = (clock() - t0) / max(n, 1)
    return per_image * len(split.val)


def _has_layer_softmax(model: Any) -> bool:
    """A FactorTopy that selects layers: what the calibration applies to (the
    baselines trained by :func:`train` have no layer softmax)."""
    return isinstance(model, FactorTopy) and model.config.select_layer


def _calibration_seconds(val_seconds: float, split: Split, cfg: TrainConfig) -> float:
    """Time to reserve for the calibration (0 when the run does not calibrate)."""
    if not cfg.calibrates:
        return 0.0
    share = (len(split.train) + len(split.val)) / max(len(split.val), 1)
    seconds = CALIBRATION_PASSES * share * val_seconds
    if cfg.max_seconds is not None:
        seconds = min(seconds, CALIBRATION_MAX_SHARE * cfg.max_seconds)
    return seconds


def _finish_seconds(val_seconds: float, split: Split, cfg: TrainConfig) -> float:
    """Time after the last validation: the calibration (if any) and the test scores."""
    return _calibration_seconds(val_seconds, split, cfg) + _test_seconds(val_seconds, split)


def _test_seconds(val_seconds: float, split: Split) -> float:
    return val_seconds * len(split.test) / max(len(split.val), 1)


def _replan_interval(
    cfg: TrainConfig, elapsed: float, budget: float, timing: _Timing, split: Split
) -> TrainConfig:
    """The ``auto`` recipe's validation interval, re-planned from the current speed (a
    shared machine's speed changes), by the rule of :func:`resolve_auto_recipe` applied
    to the whole budget: about the same number of validations over the run, not 20 more
    in whatever time is left (which would crowd them, and patience, into the end). A
    given interval is kept."""
    if "steps_per_epoch" not in cfg.chosen:
        return cfg
    val = timing.val or 0.0
    usable = budget - val - _finish_seconds(val, split, cfg)
    if usable <= 0 or timing.step <= 0 or elapsed >= budget:
        return cfg
    planned, _ = resolve_auto_recipe(cfg, usable, timing.step, val, cfg.batch_size)
    return replace(cfg, steps_per_epoch=planned.steps_per_epoch)


def _check_budget(budget: float, timing: _Timing, split: Split, cfg: TrainConfig) -> None:
    """Stop at once when the budget cannot hold warm-up, one validation, the calibration
    (when the run calibrates) and the test."""
    val = timing.val or 0.0
    minimum = AUTO_WARMUP_STEPS * timing.step + val + _finish_seconds(val, split, cfg)
    if minimum > budget:
        raise ValueError(
            f"a budget of {budget:g} s is too small for one validation: this run needs "
            f"at least {math.ceil(minimum)} s (warm-up {AUTO_WARMUP_STEPS} steps, one "
            f"validation {val:.2g} s, the calibration and the test scores)"
        )


def _probe_batch(
    probe: dict[int, list[float]], step: int, batches: tuple[int, ...] = AUTO_BATCHES
) -> int:
    """The batch size of the next probe step: warm-up at the first of ``batches``, then
    3 timed steps each."""
    for b in batches:
        if len(probe.get(b, [])) < (AUTO_WARMUP_STEPS if b == batches[0] else 3):
            return b
    return batches[-1]


def _probe_done(probe: dict[int, list[float]], batches: tuple[int, ...] = AUTO_BATCHES) -> bool:
    return all(
        len(probe.get(b, [])) >= (AUTO_WARMUP_STEPS if b == batches[0] else 3) for b in batches
    )


def _resolve_from_probe(cfg, probe, model, features, split, budget, elapsed, clock):
    # per batch size: the median of its last 3 steps (the first ones warm up)
    step_s = {b: float(np.median(ts[-3:])) for b, ts in probe.items()}
    batch = max(step_s, key=lambda b: (b / step_s[b], -b))  # the given one, if given
    t0 = clock()
    val_s = _time_validation(model, features, split, cfg, clock)
    elapsed += clock() - t0
    remaining = budget - elapsed - val_s - _finish_seconds(val_s, split, cfg)
    resolved, info = resolve_auto_recipe(cfg, remaining, step_s[batch], val_s, batch)
    info["images_per_second"] = {str(b): b / s for b, s in step_s.items()}
    return resolved, info


def _epoch_order(features: Any, train_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An epoch's batch order: the feature source's own when it has one (a streamed
    cache keeps batches within windows of whole chunks), else a permutation."""
    own = getattr(features, "epoch_order", None)
    return rng.permutation(train_idx) if own is None else own(train_idx, rng)


def _digest(*parts: Any) -> str:
    """A short sha256 of arrays and strings (the identity of some data)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def run_identity(
    responses: np.ndarray, split: Split, given: Mapping[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    """What a run trains on, as its checkpoints record it.

    Parameters
    ----------
    responses : array of shape (N, V)
    split : Split
    given : mapping, optional
        The caller's entries (``dataset``, ``cache``, …), each ``{"what", "digest"}``.

    Returns
    -------
    dict
        ``given``'s entries, then ``responses`` (shape and a digest of 64 evenly spaced
        rows: cheap at 9,841 × 37,984) and ``split`` (seed, sizes and a digest of the
        three index arrays), each ``{"what": text for people, "digest": str}``.
    """
    n, v = responses.shape
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, 64)).astype(np.int64))
    sizes = "/".join(str(len(a)) for a in (split.train, split.val, split.test))
    out = {str(k): {"what": str(e["what"]), "digest": str(e["digest"])}
           for k, e in (given or {}).items()}  # fmt: skip
    out["responses"] = {
        "what": f"responses of {n} rows × {v} vertices",
        "digest": _digest(np.asarray(responses[rows], np.float32), (n, v)),
    }
    out["split"] = {
        "what": f"split seed {split.seed}: {sizes} train/val/test rows",
        "digest": _digest(
            *(np.asarray(a, np.int64) for a in (split.train, split.val, split.test))
        ),
    }
    return out


def _check_identity(path: Path, saved: Mapping, run_id: Mapping, split: Split) -> None:
    """Refuse checkpoints made for other data, before anything is loaded or written.

    Checkpoints written before identities were recorded are checked as far as they
    can be: their batch order must name images of this run's training split.
    """
    folder = path.parent
    keep = (
        "the checkpoints are left as they are: resume with the data they were made for, "
        "or give another --checkpoints folder (starting without --resume overwrites them)"
    )
    made = saved.get("identity")
    if not made:
        order = np.asarray(saved.get("state", {}).get("order", np.zeros(0)))
        if order.size and not np.isin(order, np.asarray(split.train)).all():
            raise ResumeMismatch(
                f"{folder}: these checkpoints were made for another dataset or split (written "
                "by an older version, they do not record which; their batch order names "
                f"images outside this run's {len(split.train)} training rows); {keep}"
            )
        return
    diff = [
        f"{key}: made for {made[key]['what']} [{made[key]['digest']}], given "
        f"{run_id[key]['what']} [{run_id[key]['digest']}]"
        for key in run_id
        if key in made and made[key].get("digest") != run_id[key]["digest"]
    ]
    if diff:
        raise ResumeMismatch(
            f"{folder}: these checkpoints were made for other data than this run's: "
            + "; ".join(diff)
            + f"; {keep}"
        )


def _check_resume(path: Path, saved: dict | None, cfg: TrainConfig) -> None:
    """Refuse to resume with a recipe other than the checkpoint's (budget aside)."""
    if not saved:
        return
    ignore = {"max_seconds", "max_epochs", "patience", "log_every", "eval_batch_size"}
    if saved.get("recipe") == "auto":  # the auto recipe's own values were resolved
        ignore |= {"batch_size", "lr", "steps_per_epoch", "reg_decay_steps"}
    want = cfg.to_dict()
    diff = {
        k: (saved[k], want[k])
        for k in want
        if k in saved and k not in ignore and saved[k] != want[k]
    }
    if diff:
        listed = ", ".join(f"{k} {a!r} (checkpoint) vs {b!r} (now)" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path}: cannot resume with another recipe: {listed}; resume with the "
            "checkpoint's settings or start a new run"
        )


def _eta(elapsed: float, step: int, cfg: TrainConfig, budget: float | None) -> float:
    max_steps = cfg.max_epochs * cfg.steps_per_epoch
    by_steps = elapsed / max(step, 1) * max(max_steps - step, 0)
    if budget is not None:
        return max(0.0, min(by_steps, budget - elapsed))
    return by_steps
