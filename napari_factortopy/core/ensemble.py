"""Seed ensembles: several initialisations of one mapping, and where they agree.

The paper checks that its maps do not depend on the initialisation by training several
seeds. :func:`consistency_maps` turns K seeds' selectors into per-vertex maps of
agreement; :func:`combine_seeds` stores K fitted models as one, whose selectors are the
seeds' mean (so the layer map's confidence drops where the seeds disagree), with every
seed's selectors and the consistency maps kept beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

__all__ = ["CONSISTENCY_MAPS", "combine_seeds", "consistency_maps", "roi_consistency"]

#: Per-vertex maps of :func:`consistency_maps`.
CONSISTENCY_MAPS = ("layer_agreement", "space_spread", "scale_sd")


def consistency_maps(
    layers: np.ndarray, spaces: np.ndarray, scales: np.ndarray
) -> dict[str, np.ndarray]:
    """How much K seeds agree at each vertex.

    Parameters
    ----------
    layers : array of shape (K, V, L)
        Each seed's layer selector (rows sum to 1).
    spaces : array of shape (K, V, 2)
        Each seed's space point in [-1, 1] grid coordinates.
    scales : array of shape (K, V)
        Each seed's scale selector.

    Returns
    -------
    dict of arrays of shape (V,)
        ``layer_agreement``: share of seeds whose argmax layer is the most common one
        (1 = all agree, 1/K = all differ; ties go to the lower layer);
        ``modal_layer``: that most common argmax (int);
        ``space_spread``: root-mean-square distance of the seeds' space points from
        their mean (grid units of [-1, 1]);
        ``scale_sd``: standard deviation of the seeds' scale (ddof 0).
    """
    layers = np.asarray(layers, np.float64)
    spaces = np.asarray(spaces, np.float64)
    scales = np.asarray(scales, np.float64)
    if layers.ndim != 3:
        raise ValueError(f"layers must have shape (K, V, L); found {layers.shape}")
    k, v, n_layers = layers.shape
    if spaces.shape != (k, v, 2) or scales.shape != (k, v):
        raise ValueError(
            f"expected spaces ({k}, {v}, 2) and scales ({k}, {v}) for layers {layers.shape}; "
            f"found {spaces.shape} and {scales.shape}"
        )
    argmax = layers.argmax(2)  # (K, V)
    counts = np.zeros((v, n_layers), np.int64)
    np.add.at(counts, (np.tile(np.arange(v), k), argmax.reshape(-1)), 1)
    modal = counts.argmax(1)
    agreement = counts[np.arange(v), modal] / k
    centre = spaces.mean(0)
    spread = np.sqrt(((spaces - centre) ** 2).sum(2).mean(0))
    return {
        "layer_agreement": agreement.astype(np.float32),
        "modal_layer": modal.astype(np.int64),
        "space_spread": spread.astype(np.float32),
        "scale_sd": scales.std(0).astype(np.float32),
    }


def roi_consistency(maps: dict[str, np.ndarray], roi: np.ndarray, roi_names: Sequence[str]):
    """Mean of each consistency map per ROI.

    Returns
    -------
    list of dict
        One row per ROI with vertices: ``roi``, ``n`` and the mean of each of
        :data:`CONSISTENCY_MAPS`.
    """
    roi = np.asarray(roi)
    rows = []
    for k, name in enumerate(roi_names, start=1):
        msk = roi == k
        if not msk.any():
            continue
        row = {"roi": str(name), "n": int(msk.sum())}
        for key in CONSISTENCY_MAPS:
            row[key] = float(np.mean(maps[key][msk]))
        rows.append(row)
    return rows


def combine_seeds(models: Sequence[Any], seeds: Sequence[int]) -> Any:
    """One :class:`~napari_factortopy.core.fitted_model.FittedModel` for K seeds.

    The result's selectors are the seeds' means (the layer rows still sum to 1); its
    weights, scores and history are the seed with the best validation score (it is what
    predictions use); ``ensemble`` holds every seed's selectors (``layer`` (K, V, L),
    ``space`` (K, V, 2), ``scale`` (K, V)) and the maps of :func:`consistency_maps`;
    ``summary["ensemble"]`` lists the seeds, their validation and test scores and which
    one the weights come from.

    Parameters
    ----------
    models : sequence of FittedModel, length K >= 2
        Trained on the same vertices, features and split.
    seeds : sequence of int, length K
    """
    if len(models) < 2 or len(models) != len(seeds):
        raise ValueError(f"need >= 2 models with one seed each; found {len(models)}/{len(seeds)}")
    first = models[0]
    for m, s in zip(models[1:], seeds[1:], strict=True):
        if not np.array_equal(m.vertex_ids, first.vertex_ids) or m.n_lh != first.n_lh:
            raise ValueError(f"seed {s}: fitted on other vertices than seed {seeds[0]}")
        if m.layer.shape != first.layer.shape:
            raise ValueError(
                f"seed {s}: {m.layer.shape[1]} layers, seed {seeds[0]} has {first.layer.shape[1]}"
            )
        for part in ("train", "val", "test"):
            if not np.array_equal(m.split.get(part, []), first.split.get(part, [])):
                raise ValueError(f"seed {s}: another {part} split than seed {seeds[0]}")
    layers = np.stack([m.layer for m in models])
    spaces = np.stack([m.space for m in models])
    scales = np.stack([m.scale for m in models])
    maps = consistency_maps(layers, spaces, scales)
    vals = [float(m.summary.get("val_score", float("nan"))) for m in models]
    best = int(np.nanargmax(vals)) if np.isfinite(vals).any() else 0
    chosen = models[best]
    summary = dict(chosen.summary)
    summary["ensemble"] = {
        "seeds": [int(s) for s in seeds],
        "weights_from_seed": int(seeds[best]),
        "val_scores": vals,
        "r2_test_means": [m.summary.get("r2_test_mean") for m in models],
        "convergence": [m.summary.get("convergence", {}).get("state") for m in models],
        "layer_agreement_mean": float(maps["layer_agreement"].mean()),
    }
    if first.roi is not None and first.roi_names:
        summary["ensemble"]["roi"] = roi_consistency(maps, first.roi, first.roi_names)
    mean_layer = layers.mean(0)
    return replace(
        chosen,
        space=spaces.mean(0),
        layer=mean_layer / mean_layer.sum(1, keepdims=True),
        scale=scales.mean(0),
        summary=summary,
        ensemble={
            "layer": layers.astype(np.float32),
            "space": spaces.astype(np.float32),
            "scale": scales.astype(np.float32),
            **{k: maps[k] for k in CONSISTENCY_MAPS},
        },
    )
