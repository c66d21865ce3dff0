"""Training checkpoints: what a run trains on (its identity), writing the checkpoint,
and resuming from it only with the data and recipe it was made for."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adamw import AdamW
from .atomic import atomic_path
from .config import TrainConfig
from .model import FactorTopy
from .splits import Split

__all__ = [
    "ResumeMismatch",
    "check_identity",
    "check_resume",
    "parameter_names",
    "resume_checkpoint",
    "run_identity",
    "save_checkpoint",
    "state_copy",
]


class ResumeMismatch(ValueError):
    """``resume=True`` with checkpoints made for other data (dataset, cache, responses or
    split): the message names the folder, what they were made for and what was given."""


def parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of ``model``'s parameters (its state's other entries are fixed buffers)."""
    return {name for name, _ in model.named_parameters()}


def state_copy(model: FactorTopy) -> dict[str, torch.Tensor]:
    """The model's state on the CPU: its parameters copied, its buffers shared.

    The buffers (the vertex positions and their encoding, fixed when the model is made
    and never written) are half of a paper-scale state (29 of 58 MiB at 39,548
    vertices); the run keeps ``top_k`` states, so sharing them saves 0.3 GiB of memory
    there, and as much in ``checkpoint.pt`` (``torch.save`` stores a shared tensor once).
    """
    params = parameter_names(model)
    return {k: v.detach().to("cpu", copy=k in params) for k, v in model.state_dict().items()}


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


def check_identity(path: Path, saved: Mapping, run_id: Mapping, split: Split) -> None:
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


def check_resume(path: Path, saved: dict | None, cfg: TrainConfig) -> None:
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


def save_checkpoint(
    path: Path,
    model: FactorTopy,
    opt: AdamW,
    state: dict,
    rng: np.random.Generator,
    run_id: Mapping,
) -> None:
    """Write ``checkpoint.pt`` atomically: model, optimiser, the loop's ``state`` (kept
    checkpoints, history, step, batch order), the generator's state and the identity."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": state_copy(model),
                "optimizer": opt.state_dict(),
                "state": {**state, "order": torch.as_tensor(state["order"])},
                "rng": rng.bit_generator.state,
                "identity": run_id,
            },
            tmp,
        )


def resume_checkpoint(
    path: Path | None,
    model: FactorTopy,
    opt: AdamW,
    cfg: TrainConfig,
    run_id: Mapping,
    split: Split,
) -> tuple[dict, np.random.Generator, TrainConfig]:
    """Load ``path`` into ``model`` and ``opt`` after checking it was made for this run.

    Returns
    -------
    state : dict
        The loop's state when the checkpoint was written.
    rng : numpy Generator
        The batch order's generator, where it stood.
    config : TrainConfig
        The recipe in force when the run stopped, with ``cfg``'s stopping rules
        (budget, epochs, patience, logging, evaluation batch).

    Raises
    ------
    FileNotFoundError
        No checkpoint at ``path``.
    ResumeMismatch
        Checkpoints made for other data (nothing is loaded).
    ValueError
        A checkpoint of a model of another shape, or made with another recipe, or one
        whose kept states' files (:mod:`.kept`) are missing.
    """
    ckpt_path = path
    if ckpt_path is None or not ckpt_path.exists():
        raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    check_identity(ckpt_path, saved, run_id, split)
    missing = [e for _, e in saved["state"].get("kept", []) if isinstance(e, str)]
    if missing := [e for e in missing if not Path(e).is_file()]:
        raise ValueError(
            f"{ckpt_path}: cannot resume: the checkpoint's kept states (the best "
            f"validations, for the soup) were written to files under the run's memory "
            f"limit, and {len(missing)} of them are missing: {', '.join(missing[:3])}"
            + (" …" if len(missing) > 3 else "")
        )
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise ValueError(
            f"{ckpt_path}: the checkpoint was written for a model of another shape "
            f"(other layers, widths or vertices) than this run's: {str(exc)[:300]}"
        ) from exc
    check_resume(ckpt_path, saved["state"].get("config"), cfg)
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
    return state, rng, cfg
