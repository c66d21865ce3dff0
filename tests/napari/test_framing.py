"""Docking a panel shrinks the canvas: the brain stays framed (issue 9, rough edges)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from ._drive import canvas_shot, dock


def _brain_columns(shot: np.ndarray) -> tuple[int, int, int]:
    """First and last canvas columns with brain pixels, and the canvas width (the
    model's orange warning text, drawn over the canvas, is not brain)."""
    rgb = shot[..., :3].astype(int)
    orange = (rgb[..., 0] > 150) & (rgb[..., 1] > 60) & (rgb[..., 1] < 200) & (rgb[..., 2] < 80)
    filled = ((rgb.sum(-1) > 30) & ~orange).any(0)
    cols = np.flatnonzero(filled)
    assert len(cols), "no brain on the canvas"
    return int(cols[0]), int(cols[-1]), shot.shape[1]


def test_docking_panels_keeps_the_brain_inside_the_canvas(make_napari_viewer, phantom_model_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open(str(phantom_model_path), plugin="napari-factortopy")
    brain = dock(viewer, "Brain maps")
    QApplication.processEvents()
    brain._on_view("posterior")  # the view button: framed for this canvas
    QApplication.processEvents()
    first, last, width = _brain_columns(canvas_shot(viewer))
    assert first > 0 and last < width - 1, (first, last, width)
    share = (last - first) / width
    # another panel docked on the left: the canvas narrows; the brain must shrink with
    # it, not be cut off
    train = dock(viewer, "Train")
    train.native.setMinimumWidth(420)
    left = viewer.window.add_dock_widget(train, name="Train (left)", area="left")
    QApplication.processEvents()
    # panels scroll rather than widen their dock (issue 22): the user drags it wider
    window = viewer.window._qt_window
    window.resizeDocks([left], [560], Qt.Orientation.Horizontal)
    QApplication.processEvents()
    first2, last2, width2 = _brain_columns(canvas_shot(viewer))
    assert width2 < 0.9 * width, (width, width2)  # the docks really took room
    assert first2 > 0 and last2 < width2 - 1, (first2, last2, width2)
    assert abs((last2 - first2) / width2 - share) < 0.1 * share + 0.02, (share, first2, last2)
    # the user's rotation is kept: framing changes the zoom only
    angles = tuple(viewer.camera.angles)
    viewer.window.resize(1100, 800)
    QApplication.processEvents()
    np.testing.assert_allclose(viewer.camera.angles, angles)
    first3, last3, width3 = _brain_columns(canvas_shot(viewer))
    assert first3 > 0 and last3 < width3 - 1, (first3, last3, width3)
