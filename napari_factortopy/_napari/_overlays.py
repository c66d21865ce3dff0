"""What the Brain maps panel draws on the canvas besides the map: ROI names and the
"unfinished model" and "degenerate selectors" overlay."""

from __future__ import annotations

import textwrap
import weakref

from napari_factortopy._napari._common import keep_selection
from napari_factortopy.scene.brain import BrainScene

__all__ = ["DEGENERATE_OVERLAY", "UNFINISHED_OVERLAY", "show_roi_names", "show_unfinished"]

#: Start of the canvas text overlay of an unfinished model.
UNFINISHED_OVERLAY = "UNFINISHED MODEL"
#: Start of the overlay (or of its second part) of a model with degenerate selectors.
DEGENERATE_OVERLAY = "DEGENERATE SELECTORS"
_OURS = (UNFINISHED_OVERLAY, DEGENERATE_OVERLAY)


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


def show_unfinished(viewer, line: str | None, degenerate: str | None = None) -> None:
    """Show ``line`` (why the model is unfinished) and ``degenerate`` (why its selectors
    chose nothing) as the canvas text overlay, or clear an overlay of ours when both are
    None (another's overlay text is left alone).

    napari draws the overlay on one line and cuts what the canvas cannot hold (a long
    reason lost its start); the text is wrapped at spaces to the canvas width, again
    whenever the canvas changes size (a panel docked).
    """
    overlay = viewer.text_overlay
    parts = [f"{UNFINISHED_OVERLAY}: {line}"] if line else []
    parts += [f"{DEGENERATE_OVERLAY}: {degenerate}"] if degenerate else []
    if parts:
        overlay.text = "; ".join(parts)
        overlay.color, overlay.visible = "orange", True
        overlay.position = "bottom_left"  # lines start at the canvas edge, not end there
        _wrap_to_canvas(viewer)
        emitter = viewer.canvas.events.size
        if not any(getattr(cb, "__name__", "") == _rewrap.__name__ for cb in emitter.callbacks):
            emitter.connect(_rewrap(viewer))
    elif overlay.text.startswith(_OURS):
        overlay.text, overlay.visible = "", False


def _wrap_to_canvas(viewer) -> None:
    """Re-wrap our overlay text to the canvas width (napari's font: up to 1 em a glyph)."""
    overlay = viewer.text_overlay
    if not overlay.text.startswith(_OURS):
        return
    width = float(viewer.canvas.size[1])
    per_line = max(8, int((width - 20) / (1.05 * float(overlay.font_size))))
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
