"""Issue 22, item 2 and defect 8: every panel docked on a 1920×1200 or a 1440×900 screen,
and long status texts in Train and Compare: the window stays inside the screen and the
canvas keeps at least half the window's width."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ._drive import dock, open_model

MANIFEST = yaml.safe_load((Path(__file__).parents[2] / "napari.yaml").read_text())
PANELS = [w["display_name"] for w in MANIFEST["contributions"]["widgets"]]


def settle(ms: int = 50) -> None:
    """Let Qt lay out and paint (deferred dock arrangement included)."""
    from qtpy.QtCore import QElapsedTimer
    from qtpy.QtWidgets import QApplication

    timer = QElapsedTimer()
    timer.start()
    while True:
        QApplication.processEvents()
        if timer.elapsed() >= ms:
            break


def _sizes(viewer) -> tuple[int, int, int]:
    """(window width, window height, canvas width) in pixels."""
    window = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    return window.width(), window.height(), canvas.width()


def _fits(viewer, screen) -> None:
    width, height, canvas = _sizes(viewer)
    assert width <= screen[0] and height <= screen[1], ((width, height), screen)
    assert canvas >= width / 2, (canvas, width)


def dock_everything(viewer) -> dict:
    """Every panel of the manifest, docked from the Plugins menu path, in its order."""
    panels = {}
    for name in PANELS:
        panels[name] = dock(viewer, name)
        settle()
    return panels


@pytest.mark.parametrize("screen", [(1920, 1200), (1440, 900)])
def test_every_panel_docked_fits_the_screen(make_napari_viewer, model_path, screen):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*screen)
    open_model(viewer, model_path)
    dock_everything(viewer)
    settle(100)
    _fits(viewer, screen)


def test_long_status_texts_do_not_widen_the_panels(make_napari_viewer, qtbot, tmp_path):
    """Defect 8: a long one-line status (a failed training, a comparison that cannot
    start) wraps and elides instead of widening its panel and narrowing the canvas."""
    screen = (1920, 1200)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*screen)
    train = dock(viewer, "Train")
    compare = dock(viewer, "Clusters and compare")
    settle(100)
    width0, _, canvas0 = _sizes(viewer)
    deep = tmp_path.joinpath(*(["a_rather_long_folder_name"] * 8))
    train.source.value = "feature cache"
    train.cache.value = str(deep / "features.zarr")
    train.responses.value = str(deep / "responses.npy")
    train.subject.value = str(deep / "subject.npz")
    train.start_button.native.click()
    qtbot.waitUntil(lambda: train.worker is None, timeout=60_000)
    assert train.status.value.startswith("failed")
    compare.file_a.value = str(deep / "a.ftopy")
    compare.file_b.value = str(deep / "b.ftopy")
    compare.compare_button.native.click()
    assert "cannot compare" in compare.status.value
    for panel in (train, compare):
        panel_dock = panel.native.parent()
        while panel_dock is not None and not hasattr(panel_dock, "inner_widget"):
            panel_dock = panel_dock.parent()
        panel_dock.raise_()
        settle(100)
        width, _, canvas = _sizes(viewer)
        assert width == width0 and canvas >= canvas0 - 2, (width0, width, canvas0, canvas)
        shown = panel.status.native.text()  # as shown
        assert "…" in shown and len(shown) < len(panel.status.value), shown
        assert panel.status.native.width() <= panel_dock.width()


def test_brain_maps_needs_no_sideways_scrolling_on_a_1440_screen(
    make_napari_viewer, phantom_model_path
):
    """Every panel docked on 1440×900: the Brain maps panel's content fits its dock's
    width even when the dock is short enough to need a vertical scroll bar (the five
    view buttons in one row did not, nor a 260-px legend once the vertical bar took
    its 20 px: a horizontal scroll bar)."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1440, 900)
    open_model(viewer, phantom_model_path)
    panels = dock_everything(viewer)
    panels["Brain maps"]._on_view("posterior")
    settle(100)
    area = panels["Brain maps"].native
    while area is not None and not isinstance(area, QScrollArea):
        area = area.parentWidget()
    assert area is not None
    bar = area.horizontalScrollBar()
    assert bar.maximum() == 0 or not bar.isVisible(), (bar.maximum(), area.viewport().width())
    # the room left beside a vertical scroll bar, whether or not one shows now
    room = area.width() - 2 * area.frameWidth() - area.verticalScrollBar().sizeHint().width()
    need = area.widget().minimumSizeHint().width()
    assert need <= room, (need, room)
