"""Training FactorTopy (METHOD.md §3) as one generator of progress records.

:func:`train` yields plain dicts (``kind`` = ``"step"``, ``"validation"``,
``"diverged"``, ``"soup"``, ``"done"``) so that the CLI's progress bar, the napari
widget (through a ``thread_worker``) and the tests drive the same code. Closing the
generator between steps (``gen.close()``) saves a checkpoint when a checkpoint
folder is given; ``resume=True`` continues from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .atomic import atomic_path
from .config import TrainConfig
from .metrics import pearson_r, r2_score
from .model import FactorTopy, Selectors
from .splits import Split

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "greedy_soup",
    "predict",
    "regulariser",
    "train",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf before any checkpoint was kept."""


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
    dev = next(model.parameters()).device
    out = np.empty((len(indices), model.n_vertices), np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad(), _autocast(dev, amp):
        sel = model.selectors() if selectors is None else selectors
        for lo in range(0, len(indices), batch_size):
            loc, glo = features.get(indices[lo : lo + batch_size])
            out[lo : lo + len(loc[0])] = model(loc, glo, sel).float().cpu().numpy()
    model.train(was_training)
    return out


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

    Returns
    -------
    state : dict
        The soup's weights.
    members : list of int
        Positions (in best-first order) of the checkpoints in the soup.
    score : float
        Its validation score.
    """
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
    members = [order[0]]
    best_state = candidates[order[0]][1]
    best = candidates[order[0]][0]
    for i in order[1:]:
        trial = _average([candidates[j][1] for j in [*members, i]])
        model.load_state_dict(trial)
        score = score_fn(model)
        if score >= best:
            members.append(i)
            best, best_state = score, trial
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

    Yields
    ------
    dict
        ``kind="step"``: step, epoch, loss, loss_fit, loss_reg, elapsed, eta.
        ``kind="validation"``: step, epoch, val_score, best_score, improved, elapsed,
        eta (and ``selectors`` when ``snapshots``).
        ``kind="diverged"``: step, loss. ``kind="soup"``: members, val_score.
        ``kind="done"``: result (:class:`TrainResult`).

    Returns
    -------
    TrainResult
        Also the generator's return value.
    """
    cfg = config or TrainConfig()
    dev = next(model.parameters()).device
    y_all = np.require(responses, np.float32, ["C", "W"])  # torch needs writable memory
    if y_all.ndim != 2 or y_all.shape[1] != model.n_vertices:
        raise ValueError(f"responses must have shape (N, {model.n_vertices}); found {y_all.shape}")
    if len(split.train) == 0 or len(split.val) == 0:
        raise ValueError("the split needs training and validation images")
    y_dev = torch.as_tensor(y_all, device=dev) if dev.type != "cpu" else torch.from_numpy(y_all)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    rng = np.random.default_rng(cfg.seed)
    state = {
        "step": 0,
        "epoch": 0,
        "best": -math.inf,
        "bad_epochs": 0,
        "kept": [],
        "history": [],
        "elapsed": 0.0,
    }
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as exc:
            raise ValueError(
                f"{ckpt_path}: the checkpoint was written for a model of another shape "
                f"(other layers, widths or vertices) than this run's: {str(exc)[:300]}"
            ) from exc
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state["order"] = state["order"].numpy()
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]

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
                },
                tmp,
            )

    def val_score(m: FactorTopy) -> float:
        pred = predict(m, features, split.val, cfg.eval_batch_size, cfg.amp)
        return float(np.nanmean(r2_score(y_all[split.val], pred)))

    t_start = time.perf_counter() - state["elapsed"]
    max_steps = cfg.max_epochs * cfg.steps_per_epoch
    train_idx = np.asarray(split.train)
    if "order" not in state:
        state["order"], state["pos"] = rng.permutation(train_idx), 0
    diverged = False
    model.train()
    try:
        while state["epoch"] < cfg.max_epochs and state["bad_epochs"] < cfg.patience:
            if state["pos"] + cfg.batch_size > len(state["order"]):
                state["order"], state["pos"] = rng.permutation(train_idx), 0
            batch = state["order"][state["pos"] : state["pos"] + cfg.batch_size]
            state["pos"] += cfg.batch_size
            loc, glo = features.get(batch)
            target = y_dev[torch.as_tensor(batch, device=y_dev.device)].to(dev)
            with _autocast(dev, cfg.amp):
                sel = model.selectors()
                pred = model(loc, glo, sel)
                fit = F.smooth_l1_loss(pred.float(), target, beta=cfg.smooth_l1_beta)
                decay = max(0.0, 1.0 - state["step"] / cfg.reg_decay_steps)
                reg = regulariser(sel)
                loss = fit + cfg.reg_weight * decay * reg
            if not torch.isfinite(loss):
                diverged = True
                yield {"kind": "diverged", "step": state["step"], "loss": float(loss.detach())}
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            state["step"] += 1
            if state["step"] % cfg.log_every == 0:
                elapsed = time.perf_counter() - t_start
                yield {
                    "kind": "step",
                    "step": state["step"],
                    "epoch": state["epoch"],
                    "loss": float(loss.detach()),
                    "loss_fit": float(fit.detach()),
                    "loss_reg": float(reg.detach()),
                    "elapsed": elapsed,
                    "eta": _eta(elapsed, state["step"], max_steps, cfg.max_seconds),
                }
            if state["step"] % cfg.steps_per_epoch:
                continue
            # ---- end of epoch: validate, keep top-k, early stopping
            state["epoch"] += 1
            score = val_score(model)
            improved = score > state["best"]
            if improved:
                state["best"], state["bad_epochs"] = score, 0
            else:
                state["bad_epochs"] += 1
            state["kept"].append((score, _state_copy(model)))
            state["kept"].sort(key=lambda t: -t[0])
            del state["kept"][cfg.top_k :]
            elapsed = time.perf_counter() - t_start
            state["elapsed"] = elapsed
            rec = {
                "kind": "validation",
                "step": state["step"],
                "epoch": state["epoch"],
                "val_score": score,
                "best_score": state["best"],
                "improved": improved,
                "elapsed": elapsed,
                "eta": _eta(elapsed, state["step"], max_steps, cfg.max_seconds),
            }
            state["history"].append(dict(rec))
            save_checkpoint()
            if snapshots:
                with torch.no_grad():
                    rec["selectors"] = model.selectors().numpy()
            yield rec
            if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
                break
    except GeneratorExit:
        state["elapsed"] = time.perf_counter() - t_start
        save_checkpoint()
        raise

    if not state["kept"]:
        raise TrainingDiverged(
            f"training diverged at step {state['step']} (loss is not finite) before the "
            "first validation; lower the learning rate or check the responses"
        )
    if cfg.soup and len(state["kept"]) > 1:
        final, members, score = greedy_soup(model, state["kept"], val_score)
        yield {"kind": "soup", "members": members, "val_score": score}
    else:
        final, score, members = state["kept"][0][1], state["kept"][0][0], [0]
        model.load_state_dict(final)
    test_pred = predict(model, features, split.test, cfg.eval_batch_size, cfg.amp)
    y_test = y_all[split.test]
    result = TrainResult(
        state=final,
        val_score=score,
        test_r2=r2_score(y_test, test_pred),
        test_r=pearson_r(y_test, test_pred),
        history=state["history"],
        steps=state["step"],
        diverged=diverged,
        soup_members=members,
        seconds=time.perf_counter() - t_start,
    )
    yield {"kind": "done", "result": result}
    return result


def _fast_adamw(dev: torch.device) -> dict:
    """The fused AdamW kernel where this torch has it for the device (CPU, CUDA, MPS)."""
    try:
        probe = torch.nn.Parameter(torch.zeros(1, device=dev))
        torch.optim.AdamW([probe], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}


def _eta(elapsed: float, step: int, max_steps: int, max_seconds: float | None) -> float:
    by_steps = elapsed / max(step, 1) * max(max_steps - step, 0)
    if max_seconds is not None:
        return max(0.0, min(by_steps, max_seconds - elapsed))
    return by_steps
