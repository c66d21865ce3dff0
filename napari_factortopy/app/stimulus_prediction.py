"""The Stimuli panel's prediction without Qt: for the shown stimulus (an opened image
file or an image of the model's dataset) the model's predicted response and the per-ROI
top-channel images (:mod:`.predict`), each model's backbone loaded once; the response
put on the scene as its "prediction" map and taken off again; and the ROIs a model's
vertices carry.

The panel (:mod:`napari_factortopy._napari._stimulus_widget`) keeps the backbones'
cache and shows what these return.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..scene.brain import CustomMap
from .predict import model_backbone, predict_array, predict_image

__all__ = [
    "PREDICTION",
    "cached_backbone",
    "drop_prediction_map",
    "predict_stimulus",
    "present_rois",
    "show_prediction_map",
]

#: The scene's custom map that holds the predicted response.
PREDICTION = "prediction"


def present_rois(model: Any) -> list[str]:
    """The ROI names of the model that label at least one of its vertices, in order."""
    return [n for k, n in enumerate(model.roi_names, 1) if np.any(model.roi == k)]


def cached_backbone(cache: dict[str, Any], model: Any) -> Any:
    """The model's backbone (:func:`~.predict.model_backbone`), loaded once per
    ``cache`` (keyed by the model's backbone record and widths)."""
    key = json.dumps([model.backbone, model.config.get("widths")], sort_keys=True, default=str)
    if key not in cache:
        cache[key] = model_backbone(model)
    return cache[key]


def predict_stimulus(
    scene: Any,
    rois: Sequence[str],
    file_image: np.ndarray | None,
    file_name: str,
    index: int,
    backbone: Callable[[Any], Any],
) -> tuple[tuple[np.ndarray, dict[str, np.ndarray]], str]:
    """The scene's model's prediction for the shown stimulus.

    Parameters
    ----------
    scene : BrainScene
    rois : sequence of str
        ROIs whose top-channel images are made.
    file_image : array (H, W, 3), optional
        An opened image file's pixels, run through ``backbone(model)``; None: the
        dataset image ``index`` (its features from the model's feature cache).
    file_name : str
    index : int
    backbone : callable
        Model → its backbone (:func:`cached_backbone`).

    Returns
    -------
    ((response (V,), {roi: RGB image}), what)
        ``what`` names the stimulus: the file's name or ``"image <index>"``.
    """
    model = scene.model
    if file_image is not None:
        bb = backbone(model)
        return predict_array(model, file_image, bb, rois), file_name
    where = {"model_path": scene.model_path, "data_root": scene.data_root}
    return predict_image(model, index, rois, **where), f"image {index}"


def show_prediction_map(scene: Any, response: np.ndarray) -> tuple[str | None, float]:
    """Show the predicted ``response`` (V,) as the scene's :data:`PREDICTION` map
    (coolwarm, symmetric); returns the map shown before (None when it was the
    prediction already) and the colour scale's limit."""
    custom = CustomMap.from_values(response, "coolwarm", label="predicted response")
    lim = float(custom.hi)
    scene.custom[PREDICTION] = custom
    before = scene.map_name if scene.map_name != PREDICTION else None
    scene.map_name = PREDICTION
    return before, lim


def drop_prediction_map(scene: Any, map_before: str) -> bool:
    """Take the :data:`PREDICTION` map off the scene (showing ``map_before`` if it was
    shown); returns whether there was one."""
    if PREDICTION not in scene.custom:
        return False
    del scene.custom[PREDICTION]
    if scene.map_name == PREDICTION:
        scene.map_name = map_before
    return True
