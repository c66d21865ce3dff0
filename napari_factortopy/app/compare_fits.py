"""The methods :func:`~.compare_methods.compare_methods` compares, each fitted on one
run's inputs into a :class:`~napari_factortopy.core.fitted_model.FittedModel`:
FactorTopy and its ablations through :func:`napari_factortopy.core.estimator.fit`, the
torch baselines through :func:`napari_factortopy.core.training.train` (a display-only
file of kind ``"baseline"``), the per-layer ridge with himalaya.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.ablations import ablation_config

__all__ = ["finite_mean", "fit_factortopy", "fit_ridge", "train_baseline"]


def finite_mean(x: np.ndarray) -> float:
    """Mean of the finite entries of ``x`` (NaN when there are none)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def fit_factortopy(name, inputs, opts, tcfg, dev, started) -> tuple[Any, Any]:
    """FactorTopy or the ablation ``name`` through ``fit``: yields its records, returns
    ``(FittedModel, module)``."""
    from ..core.estimator import fit

    config = ablation_config(
        inputs.model_config(bottleneck=opts.bottleneck, hidden=opts.hidden), name
    )
    fitted = None
    for rec in fit(
        inputs.features,
        inputs.responses,
        inputs.subject,
        inputs.split,
        config=config,
        train_config=tcfg,
        backbone=inputs.backbone,
        device=dev,
        seed=opts.seed,
        started_at=started,
        extra={"dataset": inputs.dataset, "comparison": {"method": name}},
    ):
        if rec["kind"] == "fitted":
            fitted = rec["model"]
        else:
            yield rec
    return fitted, fitted.to_module(dev)


def train_baseline(name, inputs, opts, tcfg, dev, started):
    """The torch baseline ``name`` through ``train``: yields its records, returns
    ``(FittedModel of kind "baseline", module)``."""
    import torch

    from ..core.baselines import make_baseline
    from ..core.fitted_model import KIND_BASELINE, FittedModel
    from ..core.training import train

    subj = inputs.subject
    config = inputs.model_config(bottleneck=opts.bottleneck, hidden=opts.hidden)
    torch.manual_seed(opts.seed)
    module = make_baseline(name, subj.joint_coords(), config).to(dev)
    result = None
    for rec in train(
        module, inputs.features, inputs.responses, inputs.split, tcfg, started_at=started
    ):
        if rec["kind"] == "done":
            result = rec["result"]
        yield rec
    maps = module.maps()
    fitted = FittedModel(
        config=config.to_dict(),
        state={
            "coords": module.coords.cpu().numpy(),
            "beta": module.beta.detach().float().cpu().numpy(),
            "bias": module.bias.detach().float().cpu().numpy(),
        },
        **maps,
        **_subject_fields(inputs),
        history=result.history,
        scores={
            "r2_test": result.test_r2.astype(np.float32),
            "r_test": result.test_r.astype(np.float32),
        },
        summary={
            "r2_test_mean": finite_mean(result.test_r2),
            "r_test_mean": finite_mean(result.test_r),
            "val_score": float(result.val_score),
            "steps": int(result.steps),
            "epochs": int(result.epochs),
            "train_seconds": float(result.seconds),
            "stop_reason": result.stop_reason,
            "device": str(dev),
        },
        kind=KIND_BASELINE,
        extra={
            "baseline": {"method": name, "maps": list(module.shown_maps)},
            "dataset": inputs.dataset,
            "train_config": (result.config or tcfg).to_dict(),
        },
    )
    return fitted, module


def _subject_fields(inputs) -> dict:
    subj, split = inputs.subject, inputs.split
    roi = subj.roi if subj.roi is not None else np.zeros(subj.n_vertices, np.int64)
    return {
        "vertex_ids": subj.vertex_ids,
        "n_lh": subj.n_lh,
        "mesh": subj.mesh,
        "roi": roi,
        "roi_names": list(subj.roi_names),
        "backbone": dict(inputs.backbone),
        "split": {
            "seed": split.seed,
            "fractions": list(split.fractions),
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
    }


def _folds(inputs, n_folds: int = 5):
    """Ridge's cross-validation folds over the training rows, repeats of an image kept
    in one fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(inputs.image_index)[inputs.split.train]
    n = min(n_folds, len(np.unique(groups)))
    return list(GroupKFold(n_splits=n).split(np.zeros(len(groups)), groups=groups))


def fit_ridge(inputs, opts) -> tuple[Any, Any]:
    """The per-layer ridge: returns ``(FittedModel of kind "baseline", its RidgeLayers)``."""
    from ..core.baselines import ridge_features, ridge_per_layer
    from ..core.fitted_model import KIND_BASELINE, FittedModel

    split, y = inputs.split, inputs.responses
    xs = [ridge_features(inputs.features, idx, opts.ridge_pool) for idx in
          (split.train, split.val, split.test)]  # fmt: skip
    res = ridge_per_layer(
        xs[0], y[split.train], xs[1], y[split.val], xs[2], y[split.test],
        alphas=opts.ridge_alphas, cv=_folds(inputs), n_components=opts.ridge_components,
        backend=opts.ridge_backend, blas_threads=opts.ridge_blas_threads,
    )  # fmt: skip
    n_v = len(res.best_layer)
    # layer map: each vertex's positive validation R² over layers, normalised (argmax =
    # best layer, confidence = how peaked); one-hot where no layer has R² > 0
    prof = np.clip(np.nan_to_num(res.val_r2.T, nan=0.0), 0, None)
    tot = prof.sum(1, keepdims=True)
    layer = np.where(tot > 0, prof / np.where(tot > 0, tot, 1), res.layer_profile())
    config = inputs.model_config(bottleneck=1, hidden=1)
    fitted = FittedModel(
        config=config.to_dict(),
        state={
            "coords": inputs.subject.joint_coords().astype(np.float32),
            "beta": np.zeros((n_v, 1), np.float32),
        },
        space=np.zeros((n_v, 2), np.float32),
        layer=layer.astype(np.float32),
        scale=np.zeros(n_v, np.float32),
        **_subject_fields(inputs),
        scores={
            "r2_test": res.test_r2.astype(np.float32),
            "r_test": res.test_r.astype(np.float32),
            "best_layer": res.best_layer.astype(np.float32),
            "alpha": res.alphas[res.best_layer, np.arange(n_v)].astype(np.float32),
        },
        summary={"r2_test_mean": finite_mean(res.test_r2), "r_test_mean": finite_mean(res.test_r)},
        kind=KIND_BASELINE,
        extra={
            "baseline": {
                "method": "ridge",
                "maps": ["layer"],
                "features": f"global token + local tokens average-pooled to "
                f"{opts.ridge_pool[0]}x{opts.ridge_pool[1]}, standardised, PCA to <= "
                f"{opts.ridge_components} (train)",
                "n_features": res.n_features,
                "alphas": list(opts.ridge_alphas),
                "best_layer_on": "validation R²",
            },
            "dataset": inputs.dataset,
        },
    )
    return fitted, res
