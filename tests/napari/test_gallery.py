"""Sweep gallery: the headless grid (factortopy sweep gallery) and the dock widget,
driven in the real viewer: dock from the Plugins menu, draw, sort, click a brain."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_factortopy.app import sweep as sw
from tests.napari._drive import canvas_shot, click, dock
from tests.napari.conftest import make_model


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory) -> Path:
    """A sweep folder as the collection step leaves it: 4 models and results.csv."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "models").mkdir()
    rows = []
    for i, (bb, seed) in enumerate([("netA", 0), ("netA", 1), ("netB", 0), ("netB", 1)]):
        m = make_model(n_vertices=160, n_layers=4 + i, seed=i)
        m.summary["r2_test_mean"] = [0.10, 0.40, 0.25, 0.05][i]
        key = f"subj__{bb}__r__s{seed}"
        path = m.save(root / "models" / f"{key}.ftopy")
        meta = {"key": key, "dataset": "subj", "backbone": bb, "recipe": "r", "seed": seed}
        rows.append(sw.index_row(path, meta, {"seconds": 1.0, "peak_rss_mb": 99.0}, root))
    sw.write_index(rows, root / sw.INDEX_NAME)
    return root


def test_gallery_command_draws_one_brain_per_model(sweep_folder, tmp_path):
    from napari_factortopy.app.cli import main

    out = tmp_path / "g.png"
    args = ["sweep", "gallery", str(sweep_folder), "--map", "layer", "--view", "ventral"]
    assert main([*args, "--out", str(out), "--size", "120", "--sort", "r2_test_mean"]) == 0
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.shape[0] > 240 and img.shape[1] > 240  # 2 × 2 cells of 120 px
    image, cells, rows = sw.gallery(sweep_folder, size_px=120, sort_by="r2_test_mean")
    assert np.array_equal(image, img)
    assert [r["r2_test_mean"] for r in rows] == [0.05, 0.10, 0.25, 0.40]
    for cell in cells:  # each cell holds a painted brain, not just white
        tile = image[cell.row0 : cell.row0 + 120, cell.col0 : cell.col1, :3].astype(int)
        assert (np.abs(tile - 255).sum(-1) > 30).mean() > 0.05


def test_gallery_widget_sorts_and_opens_the_clicked_model(make_napari_viewer, sweep_folder, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = dock(viewer, "Sweep gallery")
    widget.folder.value = str(sweep_folder)
    assert "r2_test_mean" in widget.sort_by.choices and "hierarchy_slope" in widget.sort_by.choices
    widget.sort_by.value = "r2_test_mean"
    widget.descending.value = True
    widget.size.value = 160
    widget.view.value = "posterior"  # the test models' vertices are occipital
    widget.show_button.clicked.emit()  # the button, as a user presses it: a worker draws
    qtbot.waitUntil(lambda: "sweep gallery" in viewer.layers, timeout=60_000)
    assert widget.status.value.startswith("4 models, map layer, view posterior, sorted by")
    layer = viewer.layers["sweep gallery"]
    assert layer.rgb and layer.data.shape[0] > 320
    keys = [r["key"] for r in widget.rows]
    assert keys == ["subj__netA__r__s1", "subj__netB__r__s0", "subj__netA__r__s0",
                    "subj__netB__r__s1"]  # fmt: skip
    shot = canvas_shot(viewer)
    assert (np.abs(shot[..., :3].astype(int) - shot[0, 0, :3]).sum(-1) > 30).mean() > 0.05
    rgb = shot[..., :3].astype(int)
    painted = (rgb.max(-1) - rgb.min(-1)) > 60  # coloured map, not curvature grey or text
    assert painted.sum() > 200
    if os.environ.get("FACTORTOPY_SCREENSHOTS"):
        from PIL import Image

        Image.fromarray(shot).save(Path(os.environ["FACTORTOPY_SCREENSHOTS"]) / "gallery.png")

    # click the centre of the second cell on the canvas
    cell = widget.cells[1]
    world = np.array([(cell.row0 + cell.row1) / 2, (cell.col0 + cell.col1) / 2])
    cam = viewer.camera
    centre = np.asarray(cam.center)[-2:]
    canvas = viewer.window._qt_viewer.canvas
    h, w = canvas.size
    row_col = (world - centre) * cam.zoom + np.array([h, w]) / 2
    click(viewer, row_col)
    assert widget.models.value == keys[1]
    assert any(lay.name.startswith("subj__netB__r__s0") for lay in viewer.layers)
    assert not layer.visible
    # drawing again (another map) reuses the layer and shows it again
    widget.map_name.value = "scale"
    image = widget.show_gallery(sync=True)
    assert viewer.layers["sweep gallery"] is layer and layer.visible
    assert np.array_equal(layer.data, image)
