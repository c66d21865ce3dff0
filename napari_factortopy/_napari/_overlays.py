"""What the Brain maps panel draws on the canvas besides the map: ROI names and the
"unfinished model" overlay."""

from __future__ import annotations

import textwrap
import weakref

from napari_factortopy._napari._common import keep_selection
from napari_factortopy.scene.brain import BrainScene

__all__ = ["UNFINISHED_OVERLAY", "show_roi_names", "show_unfinished"]

#: Start of the canvas text overlay of an unfinished model.
UNFINISHED_OVERLAY = "UNFINISHED MODEL"


def show_roi_names(viewer, layer, scene: BrainScene) -> None:
    """ROI names at each ROI's centre (per hemisphere) while outlines are on.

    A Points layer of invisible points carrying the names as text, in the layer's
    current mesh and view layout; removed when the outlines are off. Adding it
    leaves the model layer selected.
    """
    name = f"{layer.name} ROI names"
    if not scene.outlines:
        if name in viewer.layers:
            viewer.layers.remove(name)
        return
    pos, names = scene.roi_labels()
    if name in viewer.layers:
        points = viewer.layers[name]
        points.data = pos
        points.features = {"roi": names}
    else:
        with keep_selection(viewer):
            points = viewer.add_points(
                pos, name=name, features={"roi": names},
                text={"string": "{roi}", "color": "white", "size": 10},
                size=0, opacity=1.0, face_color="transparent", border_width=0,
            )  # fmt: skip
    points.scale, points.translate = layer.scale, layer.translate


def show_unfinished(viewer, line: str | None) -> None:
    """Show ``line`` (why the model is unfinished) as the canvas text overlay, or clear
    an overlay of ours when ``line`` is None (another's overlay text is left alone).

    napari draws the overlay on one line and cuts what the canvas cannot hold (a long
    reason lost its start); the text is wrapped at spaces to the canvas width, again
    whenever the canvas changes size (a panel docked).
    """
    overlay = viewer.text_overlay
    if line:
        overlay.text = f"{UNFINISHED_OVERLAY}: {line}"
        overlay.color, overlay.visible = "orange", True
        overlay.position = "bottom_left"  # lines start at the canvas edge, not end there
        _wrap_to_canvas(viewer)
        emitter = viewer.canvas.events.size
        if not any(getattr(cb, "__name__", "") == _rewrap.__name__ for cb in emitter.callbacks):
            emitter.connect(_rewrap(viewer))
    elif overlay.text.startswith(UNFINISHED_OVERLAY):
        overlay.text, overlay.visible = "", False


def _wrap_to_canvas(viewer) -> None:
    """Re-wrap our overlay text to the canvas width (napari's font: up to 1 em a glyph)."""
    overlay = viewer.text_overlay
    if not overlay.text.startswith(UNFINISHED_OVERLAY):
        return
    width = float(viewer.canvas.size[1])
    per_line = max(20, int((width - 20) / (1.05 * float(overlay.font_size))))
    text = textwrap.fill(" ".join(overlay.text.split()), per_line, break_on_hyphens=False)
    if text != overlay.text:
        overlay.text = text


def _rewrap(viewer):
    """A canvas-size callback that re-wraps the overlay of ``viewer`` (held weakly)."""
    ref = weakref.ref(viewer)

    def _rewrap(_event=None) -> None:
        v = ref()
        if v is not None:
            _wrap_to_canvas(v)

    return _rewrap
