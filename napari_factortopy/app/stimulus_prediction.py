"""The Stimuli panel's prediction without Qt: for the shown stimulus (an opened image
file or an image of the model's dataset) the model's predicted response and the per-ROI
top-channel images (:mod:`.predict`), each model's backbone loaded once; the response
put on the scene as its "prediction" map and taken off again; the ROIs a model's
vertices carry; and where the stimulus and top-channel images go beside the brain.

The panel (:mod:`napari_factortopy._napari._stimulus_widget`) keeps the backbones'
cache and shows what these return.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..scene.brain import CustomMap
from .predict import model_backbone, predict_array, predict_image

__all__ = [
    "PREDICTION",
    "cached_backbone",
    "data_folder_line",
    "drop_prediction_map",
    "image_row",
    "predict_stimulus",
    "present_rois",
    "show_prediction_map",
    "top_channel_pixels",
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


def data_folder_line(folder: Any, missing: Sequence[str]) -> str:
    """The status after a data folder was chosen: the folder, or what is still missing."""
    return f"data folder {folder}" if not missing else f"still not found: {', '.join(missing)}"


def top_channel_pixels(rgb: np.ndarray) -> np.ndarray:
    """A top-channel image (H, W, 3) of floats in [0, 1] (clipped) → uint8 pixels."""
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def image_row(
    extent: np.ndarray, shapes: Iterable[tuple[int, int]]
) -> list[tuple[float, tuple[float, float]]]:
    """Where images go beside the brain: in a row right of it, in the screen plane, each
    as tall as half the brain and as wide as its own aspect ratio makes it (a photograph
    after a square dataset image does not overlap the next image), 5 units apart.

    Parameters
    ----------
    extent : array (2, D)
        The brain layer's world extent (min row, max row); its last two axes (y, z) are
        the screen plane.
    shapes : iterable of (h, w)
        The images' heights and widths in pixels, left to right.

    Returns
    -------
    list of (scale, (y, x))
        Each image's scale (world units per pixel, both axes) and translate.
    """
    lo, hi = np.asarray(extent, float)[:, -2:]  # (y, z) in world
    height = 0.5 * float(hi[0] - lo[0]) or 50.0
    left = float(hi[1]) + 10.0
    placed = []
    for h, w in shapes:
        scale = height / h
        placed.append((scale, (float(lo[0]), left)))
        left += w * scale + 5.0
    return placed
