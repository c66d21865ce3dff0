"""From features and responses to a :class:`~.fitted.FittedModel`, in one generator.

:func:`fit` is the call the CLI (``factortopy train``/``demo``) and the napari train
widget share: it builds the model on the device, runs :func:`.training.train` and
bundles the result with the subject, backbone, split and scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fitted import FittedModel
from .metrics import roi_table
from .training import Split, TrainConfig, train

__all__ = ["Subject", "check_responses", "fit"]


@dataclass
class Subject:
    """The modelled vertices of a subject.

    Attributes
    ----------
    vertex_ids : array of shape (V,)
        Per-hemisphere mesh indices, left hemisphere first.
    n_lh : int
    sphere : array of shape (V, 3)
        Registered-sphere coordinates of the vertices (per hemisphere, unshifted).
    mesh : str
    roi : array of shape (V,), optional
    roi_names : list of str
    """

    vertex_ids: np.ndarray
    n_lh: int
    sphere: np.ndarray
    mesh: str = "fsaverage5"
    roi: np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        v = len(self.vertex_ids)
        if np.shape(self.sphere) != (v, 3):
            raise ValueError(
                f"sphere coordinates must have shape ({v}, 3) for {v} vertex ids; "
                f"found {np.shape(self.sphere)}"
            )
        if self.roi is not None and len(self.roi) != v:
            raise ValueError(f"roi has {len(self.roi)} labels for {v} vertices")

    @property
    def n_vertices(self) -> int:
        return len(self.vertex_ids)

    def joint_coords(self) -> np.ndarray:
        """(V, 3) coordinates with the right sphere shifted (METHOD.md §1)."""
        from .encoding import joint_sphere_coordinates

        return joint_sphere_coordinates(self.sphere[: self.n_lh], self.sphere[self.n_lh :])


def check_responses(responses: np.ndarray, n_images: int, n_vertices: int, source: str) -> None:
    """Stop on responses that cannot be trained on, naming ``source``.

    Checks the shape (n_images, n_vertices), NaN/inf values and constant vertices.
    """
    y = np.asarray(responses)
    if y.ndim != 2:
        raise ValueError(
            f"{source}: responses must be a 2-D (images, vertices) array; found shape {y.shape}"
        )
    if y.shape[0] != n_images:
        raise ValueError(
            f"{source}: expected responses for {n_images} images (the feature "
            f"cache's count); found {y.shape[0]}"
        )
    if y.shape[1] != n_vertices:
        raise ValueError(
            f"{source}: expected {n_vertices} vertices (the subject's vertex "
            f"ids); found {y.shape[1]}"
        )
    bad = ~np.isfinite(y)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"{source}: {int(bad.sum())} NaN/inf responses (first at image "
            f"{rows[0]}, vertex {cols[0]}); expected finite values"
        )
    const = np.flatnonzero(np.ptp(y, axis=0) == 0)
    if len(const):
        raise ValueError(
            f"{source}: {len(const)} vertices have constant responses (first: "
            f"vertex {const[0]}); expected varying responses — drop them"
        )


def fit(
    features: Any,
    responses: np.ndarray,
    subject: Subject,
    split: Split,
    *,
    widths: tuple[int, ...],
    grid: tuple[int, int],
    backbone: dict | None = None,
    model_options: dict | None = None,
    train_config: TrainConfig | None = None,
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
    widths, grid
        Layer widths and token grid of the features.
    backbone : dict
        ``name``, ``layer_names``, ``widths``, ``preprocessing`` (recorded).
    model_options : dict
        Extra :class:`~.model.FactorTopyConfig` fields (``bottleneck``, ``hidden``, …).
    train_config : TrainConfig
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

    from .model import FactorTopy, FactorTopyConfig
    from .runtime import resolve_device

    dev = resolve_device(device)
    check_responses(responses, len(responses), subject.n_vertices, "responses")
    cfg = FactorTopyConfig(widths=tuple(widths), grid=tuple(grid), **(model_options or {}))
    torch.manual_seed(seed)
    module = FactorTopy(subject.joint_coords(), cfg).to(dev)
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
    assert result is not None
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
