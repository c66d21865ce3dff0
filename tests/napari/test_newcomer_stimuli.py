"""Issue #22, the Stimuli panel as a first-time user meets it: images framed on the
canvas, each stimulus at its own size, a prediction that never outlives its stimulus."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ._drive import canvas_shot, dock, open_model, settle, shown_items

GREEN = (0, 255, 0)


@pytest.fixture
def wide_green(tmp_path):
    """A 100 × 200 (rows × columns) pure green PNG: twice as wide as tall."""
    path = tmp_path / "wide-green.png"
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[..., 1] = 255
    Image.fromarray(pixels).save(path)
    return path


def _mask(shot, rgb, tol=30):
    return np.abs(shot[..., :3].astype(int) - np.asarray(rgb)).sum(-1) <= tol


def _box(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def _predict(widget, qtbot):
    """Press Predict and wait for the worker's result to be shown."""
    last = getattr(widget, "last", None)
    widget.predict_button.native.click()
    qtbot.waitUntil(lambda: getattr(widget, "last", None) is not last, timeout=60_000)
    settle()


def test_a_wide_file_after_a_dataset_image(
    make_napari_viewer, phantom_model_path, wide_green, qtbot
):
    """#22.3 and "off-canvas": predict a dataset image, then open a wide PNG and predict
    it: the PNG is drawn whole on the canvas, twice as wide as tall, as tall as each
    top-channel image and overlapped by none."""
    viewer = make_napari_viewer(show=True)
    open_model(viewer, phantom_model_path)
    stimuli = dock(viewer, "Stimuli and predictions")
    stimuli.rois.value = ["V1", "EBA"]
    _predict(stimuli, qtbot)
    stimuli.file.value = wide_green
    _predict(stimuli, qtbot)
    shot = canvas_shot(viewer)
    green = _mask(shot, GREEN)
    assert green.sum() > 500, "the opened PNG is not on the canvas"
    r0, r1, c0, c1 = _box(green)
    h, w = shot.shape[:2]
    assert r0 > 0 and c0 > 0 and r1 < h and c1 < w, "the stimulus runs off the canvas"
    assert green[r0:r1, c0:c1].mean() > 0.97, "something is drawn over the stimulus"
    assert abs((c1 - c0) / (r1 - r0) - 2) < 0.15, "the PNG is not drawn at its own aspect"
    tops = np.nonzero((shot[:, c1 + 2 :, :3].max(-1) > 20).any(1))[0]  # right of it
    assert len(tops), "no top-channel images beside the stimulus"
    assert abs(tops.min() - r0) <= 2 and abs(tops.max() + 1 - r1) <= 2, "not as tall"


def test_a_new_stimulus_takes_the_last_prediction_away(
    make_napari_viewer, phantom_model_path, wide_green, qtbot
):
    """#22.4: predict an opened PNG, then move the image slider: the brain no longer shows
    the PNG's predicted response, its top-channel images and status line are gone; a
    prediction still running when the slider moves is not shown either."""
    viewer = make_napari_viewer(show=True)
    open_model(viewer, phantom_model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("posterior")  # the phantom's vertices face the camera
    stimuli = dock(viewer, "Stimuli and predictions")
    stimuli.file.value = wide_green
    _predict(stimuli, qtbot)
    predicted = canvas_shot(viewer)
    assert shown_items(brain.map_choice)[brain.map_choice.native.currentIndex()] == "prediction"
    assert any(ly.name.startswith("top channels") for ly in viewer.layers)
    left = _box(_mask(predicted, GREEN))[2]  # the brain is left of the stimulus

    stimuli.index.value = 3
    settle()
    after = canvas_shot(viewer)
    shown_map = brain.map_choice.native.currentText()
    assert shown_map != "prediction", "the Brain maps panel still names the prediction"
    changed = np.abs(after[:, :left, :3].astype(int) - predicted[:, :left, :3]).max(-1) > 30
    assert changed.sum() > 100, "the brain still shows the PNG's predicted response"
    assert not [ly.name for ly in viewer.layers if ly.name.startswith("top channels")]
    assert "wide-green" not in stimuli.status.value, stimuli.status.value
    # the map shown is the one the brain showed before the prediction, as Brain maps draws it
    brain.map_choice.value = shown_map
    settle()
    np.testing.assert_array_equal(canvas_shot(viewer), after)

    # a prediction still running when the stimulus changes is dropped
    stimuli.file.value = wide_green
    stimuli.predict_button.native.click()
    worker = stimuli.worker
    stimuli.index.value = 4
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    settle()
    assert brain.map_choice.native.currentText() != "prediction"
    assert not [ly.name for ly in viewer.layers if ly.name.startswith("top channels")]
