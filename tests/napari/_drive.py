"""Driving the real viewer as a user does: dock from the Plugins menu, open through
the reader, click the canvas through napari's own mouse handling, read its pixels."""

from __future__ import annotations

import numpy as np

PLUGIN = "napari-factortopy"


def open_model(viewer, path):
    """Open a model file through the plugin's reader; returns its layer."""
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    return layer


def dock(viewer, name: str):
    """Dock a widget through the Plugins menu path and reset its choices, as napari does."""
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    widget.reset_choices()
    return widget


def canvas_shot(viewer) -> np.ndarray:
    """The canvas as shown, (H, W, 4) uint8 (one pixel per canvas unit under Xvfb)."""
    return viewer.screenshot(canvas_only=True, flash=False)


def colour_centroid(image: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    """(row, col) of the pixel nearest to the centroid of the pixels of colour ``rgb``."""
    d = np.abs(image[..., :3].astype(int) - np.asarray(rgb, int)).sum(-1)
    rows, cols = np.nonzero(d <= tol)
    assert len(rows), f"no pixel of colour {rgb} on the canvas"
    centre = np.array([rows.mean(), cols.mean()])
    k = np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
    return np.array([rows[k], cols[k]])


def click(viewer, row_col) -> None:
    """A left click at a canvas pixel, through napari's canvas → viewer/layer callbacks."""
    from vispy.app.canvas import MouseEvent

    canvas = viewer.window._qt_viewer.canvas
    pos = np.array([row_col[1], row_col[0]], float)  # vispy: (x, y)
    canvas._on_mouse_press(MouseEvent("mouse_press", pos=pos, button=1, modifiers=()))


def paint_hemispheres(layer, n_lh: int, lh=(1.0, 0.0, 0.0), rh=(0.0, 0.0, 1.0)) -> None:
    """Colour a model layer's left hemisphere ``lh`` and its right one ``rh``."""
    n = len(layer.data[0])
    col = np.ones((n, 4))
    col[:n_lh, :3], col[n_lh:, :3] = lh, rh
    layer.vertex_colors = col


def settle(ms: int = 0) -> None:
    """Let Qt lay out and paint what changed (a docked panel, a longer text)."""
    from qtpy.QtCore import QCoreApplication, QElapsedTimer
    from qtpy.QtWidgets import QApplication

    timer = QElapsedTimer()
    timer.start()
    while True:
        QApplication.processEvents()
        QCoreApplication.sendPostedEvents()
        if timer.elapsed() >= ms:
            break


def press(viewer, key: str) -> None:
    """Run what napari's keymap binds to ``key`` (as a key press does)."""
    from napari.utils.key_bindings import coerce_keybinding

    func = viewer.keymap[coerce_keybinding(key)]
    out = func(viewer)
    if hasattr(out, "__next__"):  # a press/release generator
        next(out, None)


def shown_items(combo) -> list[str]:
    """The entries a drop-down shows when opened (its Qt items, not its choices)."""
    native = combo.native
    return [native.itemText(i) for i in range(native.count())]


def colourful(image: np.ndarray, spread: int = 40) -> int:
    """How many pixels have a colour (not black, white or curvature grey)."""
    rgb = image[..., :3].astype(int)
    return int(((rgb.max(-1) - rgb.min(-1)) > spread).sum())


def shown(widget) -> bool:
    """Whether a magicgui widget is on screen (it and all its parents visible)."""
    return bool(widget.native.isVisible())


class Toasts(list):
    """The notifications napari shows (severity, message), in order."""

    def __init__(self) -> None:
        super().__init__()
        from napari.utils.notifications import notification_manager

        self._manager = notification_manager
        notification_manager.notification_ready.connect(self._add)

    def _add(self, notification) -> None:
        self.append((str(notification.severity), str(notification.message)))

    def close(self) -> None:
        self._manager.notification_ready.disconnect(self._add)

    def messages(self) -> list[str]:
        return [m for _, m in self]
