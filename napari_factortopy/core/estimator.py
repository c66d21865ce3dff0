"""From features and responses to a :class:`~.fitted.FittedModel`, in one generator.

:func:`fit` is the call the CLI (``factortopy train``/``demo``) and the napari train
widget share: it builds the model on the device, runs :func:`.training.train` and
bundles the result with the subject, backbone, split and scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import FactorTopyConfig, TrainConfig
from .fitted_model import FittedModel
from .metrics import roi_table
from .splits import Split
from .subject import Subject, check_responses
from .training import train

__all__ = ["fit"]


def fit(
    features: Any,
    responses: np.ndarray,
    subject: Subject,
    split: Split,
    *,
    config: FactorTopyConfig,
    train_config: TrainConfig | None = None,
    backbone: dict | None = None,
    device: Any = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    snapshots: bool = False,
    seed: int = 0,
    extra: dict | None = None,
) -> Iterator[dict]:
    """Train a FactorTopy mapping and bundle it.

    Parameters
    ----------
    features : FeatureSource
        Tokens of all images of ``split`` on ``device``.
    responses : array of shape (N, V)
    subject : Subject
    split : Split
    config : FactorTopyConfig
        The architecture; its ``widths`` and ``grid`` must be those of ``features``.
    train_config : TrainConfig
        The optimisation recipe (default: the paper's, METHOD.md §3).
    backbone : dict
        ``name``, ``layer_names``, ``widths``, ``preprocessing`` (recorded).
    device : str
    checkpoint_dir, resume, snapshots
        Passed to :func:`.training.train`.
    seed : int
        Seeds the model's initialisation.
    extra : dict
        Recorded in the model file.

    Yields
    ------
    dict
        The training records, then ``{"kind": "fitted", "model": FittedModel}``.
    """
    import torch

    from .model import FactorTopy
    from .runtime import resolve_device

    dev = resolve_device(device)
    check_responses(responses, len(responses), subject.n_vertices, "responses")
    if not isinstance(config, FactorTopyConfig):
        raise TypeError(f"config must be a FactorTopyConfig; found {type(config).__name__}")
    torch.manual_seed(seed)
    module = FactorTopy(subject.joint_coords(), config).to(dev)
    tcfg = train_config or TrainConfig()
    result = None
    for rec in train(
        module,
        features,
        responses,
        split,
        tcfg,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        snapshots=snapshots,
    ):
        if rec["kind"] == "done":
            result = rec["result"]
        yield rec
    if result is None:  # train() always ends with "done"; a generator closed early does not
        return
    roi = subject.roi if subject.roi is not None else np.zeros(subject.n_vertices, np.int64)
    summary = {
        "r2_test_mean": float(np.nanmean(result.test_r2)),
        "r_test_mean": float(np.nanmean(result.test_r)),
        "val_score": float(result.val_score),
        "steps": int(result.steps),
        "train_seconds": float(result.seconds),
        "diverged": bool(result.diverged),
        "soup_members": list(result.soup_members),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "device": str(dev),
    }
    if subject.roi_names:
        summary["roi_r2_test"] = roi_table(result.test_r2, roi, subject.roi_names)
    fitted = FittedModel.from_module(
        module,
        vertex_ids=subject.vertex_ids,
        n_lh=subject.n_lh,
        mesh=subject.mesh,
        roi=roi,
        roi_names=list(subject.roi_names),
        backbone=dict(backbone or {}),
        split={
            "seed": split.seed,
            "fractions": list(split.fractions),
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
        history=result.history,
        scores={
            "r2_test": result.test_r2.astype(np.float32),
            "r_test": result.test_r.astype(np.float32),
        },
        summary=summary,
        extra={"train_config": tcfg.to_dict(), **(extra or {})},
    )
    yield {"kind": "fitted", "model": fitted}
