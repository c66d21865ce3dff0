"""app/stimulus_prediction's layout and text helpers: where the Stimuli panel's images
go beside the brain, top-channel pixels, the data folder's status line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.app.stimulus_prediction import (
    data_folder_line,
    image_row,
    top_channel_pixels,
)


def test_image_row_against_the_hand_computed_layout():
    # world extent (min, max) of a 3-D brain: y from -40 to 60, x from -20 to 80
    extent = np.array([[-5.0, -40.0, -20.0], [5.0, 60.0, 80.0]])
    row = image_row(extent, [(100, 100), (50, 200), (10, 10)])
    # each image 50 high (half the brain's 100), left edges from x = 80 + 10, 5 apart
    assert row == [(0.5, (-40.0, 90.0)), (1.0, (-40.0, 145.0)), (5.0, (-40.0, 350.0))]
    for (scale, _), (h, _) in zip(row, [(100, 100), (50, 200), (10, 10)], strict=True):
        assert scale * h == pytest.approx(50.0)


def test_image_row_of_a_flat_brain_and_of_nothing():
    flat = np.array([[0.0, 3.0, 0.0], [0.0, 3.0, 10.0]])  # no height: 50 units tall
    assert image_row(flat, [(25, 25)]) == [(2.0, (3.0, 20.0))]
    assert image_row(flat, []) == []


def test_top_channel_pixels_clip_and_scale():
    rgb = np.array([[[-0.5, 0.0, 0.5], [1.0, 2.0, 0.2]]])
    px = top_channel_pixels(rgb)
    assert px.dtype == np.uint8 and px.shape == (1, 2, 3)
    assert px.tolist() == [[[0, 0, 127], [255, 255, 51]]]


def test_data_folder_line():
    assert data_folder_line("/data/nsd", []) == "data folder /data/nsd"
    assert data_folder_line("/x", ["features", "images"]) == "still not found: features, images"
