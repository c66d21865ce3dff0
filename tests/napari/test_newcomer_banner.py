"""Issue #22.11: the "UNFINISHED MODEL" line on the canvas is shown whole, from its
first word, on the canvas a docked Brain maps panel leaves."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import numpy as np

from ._drive import canvas_shot, dock, open_model, settle
from .conftest import make_model

LINE = (
    "not converged: stopped by the time budget (60 s) after 1,234 of 89,000 steps; "
    "validation R² still rising (+0.004 over the last 5 epochs)"
)


def _orange(shot: np.ndarray) -> np.ndarray:
    rgb = shot[..., :3].astype(int)
    return (rgb[..., 0] > 150) & (rgb[..., 1] > 60) & (rgb[..., 1] < 200) & (rgb[..., 2] < 80)


def test_unfinished_line_is_whole_on_the_canvas(make_napari_viewer, tmp_path):
    conv = {"state": "not_converged", "reason": "budget", "line": LINE}
    model = replace(make_model(seed=3), summary={"convergence": conv})
    path = model.save(tmp_path / "unfinished.ftopy")
    viewer = make_napari_viewer(show=True)
    open_model(viewer, path)
    dock(viewer, "Brain maps")
    settle()
    shot = canvas_shot(viewer)
    text = _orange(shot)
    rows, cols = np.nonzero(text)
    assert len(rows) > 50, "no orange overlay text on the canvas"
    h, w = text.shape
    assert cols.min() > 2 and cols.max() < w - 3, "the overlay runs off the canvas"
    assert rows.min() > 2 and rows.max() < h - 3, "the overlay runs off the canvas"
    # all of it is drawn: as much orange ink as the whole line drawn in short pieces
    whole = f"UNFINISHED MODEL: {LINE}"
    ruler = 0
    for piece in textwrap.wrap(whole, 40):
        viewer.text_overlay.text = piece
        settle()
        ruler += int(_orange(canvas_shot(viewer)).sum())
    assert abs(int(text.sum()) - ruler) < 0.1 * ruler, (int(text.sum()), ruler)
