"""Issue 23, item 1 in napari: the ROI table shows the hierarchy slope (paper Table 2)
with its interval under the table, in `factortopy info`'s words; numbers checked
against a plain numpy fit of the model's layer weights on its ROI levels; on a
1440×900 screen the line wraps instead of widening the dock; a model without levels
says why."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from ._drive import dock, open_model, settle
from .conftest import make_model

LEVEL = {"V1": 1, "V2/V3": 2, "OPA": 3, "EBA": 4}
UNFINISHED = "NOT converged: stopped by the time budget with the regulariser at 80 %"


def _plain(model) -> tuple[float, float]:
    """(slope, mode-centred slope) by numpy least squares, levels from the ROI names."""
    names = ["-", *model.roi_names]
    lev = np.array([LEVEL.get(names[k], 0) for k in model.roi])
    used = lev > 0
    n_layers = model.layer.shape[1]
    pos = np.arange(n_layers) / (n_layers - 1)
    w = model.layer[used]
    near = np.abs(np.arange(n_layers)[None, :] - w.argmax(1)[:, None]) <= 1
    mode = (np.where(near, w, 0) @ pos) / np.where(near, w, 0).sum(1)
    x = np.c_[(lev[used] - 1) / 3, np.ones(used.sum())]
    slope = np.linalg.lstsq(x, w @ pos, rcond=None)[0][0]
    slope_mode = np.linalg.lstsq(x, mode, rcond=None)[0][0]
    return float(slope), float(slope_mode)


def test_roi_table_shows_the_hierarchy_slope_as_info_does(make_napari_viewer, tmp_path, capsys):
    model = make_model(seed=5)
    # a layer map that rises with the level (the random one has no hierarchy)
    names = ["-", *model.roi_names]
    centre = np.array([LEVEL.get(names[k], 0) for k in model.roi]) * 1.3
    logits = -((np.arange(model.n_layers)[None, :] - centre[:, None]) ** 2)
    model.layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    model.summary = {
        "recovery": {"hierarchy_slope_truth": 0.7312},
        "convergence": {"state": "not_converged", "line": UNFINISHED},
    }
    path = model.save(tmp_path / "slope.ftopy")

    screen = (1440, 900)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*screen)
    open_model(viewer, path)
    widget = dock(viewer, "ROI table")
    settle(100)
    text = widget.slope.value
    shown = widget.slope.native.text()  # what the panel shows (wrapped, not elided here)
    assert shown == text, (shown, text)
    got = re.match(
        r"hierarchy slope ([-\d.]+); interval \[([-\d.]+), ([-\d.]+)\]; mode-centred ([-\d.]+)",
        shown,
    )
    assert got, shown
    slope, lo, hi, mode = map(float, got.groups())
    want, want_mode = _plain(model)
    assert slope == pytest.approx(want, abs=5e-4) and mode == pytest.approx(want_mode, abs=5e-4)
    assert 0.3 < want and lo <= min(slope, mode) and hi >= max(slope, mode)
    assert f"; truth 0.731; UNFINISHED MODEL: {UNFINISHED}" in shown
    # the same line, word for word, as `factortopy info`
    from napari_factortopy.app.cli import main

    assert main(["info", str(path)]) == 0
    assert f"              {text}\n" in capsys.readouterr().out
    # the long line wraps: the panel and the window keep their width on 1440×900
    panel_dock = widget.native.parent()
    while panel_dock is not None and not hasattr(panel_dock, "inner_widget"):
        panel_dock = panel_dock.parent()
    panel_dock.raise_()
    settle(100)
    window = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    assert window.width() <= screen[0] and canvas.width() >= window.width() / 2
    label = widget.slope.native
    assert label.width() <= panel_dock.width() < window.width() / 2, (
        label.width(),
        panel_dock.width(),
    )
    assert label.height() > 2 * label.fontMetrics().lineSpacing()  # wrapped over lines

    # saved as CSV, every row keeps the warning and the sidecar the slope line
    widget.out.value = str(tmp_path / "rois.csv")
    widget.save_button.native.click()
    with open(tmp_path / "rois.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "warning" and len(rows) == 1 + len(widget.rows)
    assert {r[-1] for r in rows[1:]} == {f"UNFINISHED MODEL: {UNFINISHED}"}
    side = json.loads((tmp_path / "rois.json").read_text())
    assert side["Warnings"] == [f"UNFINISHED MODEL: {UNFINISHED}"]
    assert side["HierarchySlope"] == text

    # a model whose ROIs have no hierarchy level: one short line says why
    other = make_model(seed=6)
    other.roi_names = ["FFA", "PPA", "RSC", "LOC"]
    viewer.layers.clear()
    open_model(viewer, other.save(tmp_path / "no-levels.ftopy"))
    widget.reset_choices()
    settle()
    assert widget.slope.native.text() == (
        "no hierarchy slope: its ROIs span fewer than two hierarchy levels (found none)"
    )
