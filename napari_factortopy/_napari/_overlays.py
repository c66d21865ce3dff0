"""What the Brain maps panel draws on the canvas besides the map: ROI names and the
"unfinished model" overlay."""

from __future__ import annotations

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
    an overlay of ours when ``line`` is None (another's overlay text is left alone)."""
    overlay = viewer.text_overlay
    if line:
        overlay.text = f"{UNFINISHED_OVERLAY}: {line}"
        overlay.color, overlay.visible = "orange", True
    elif overlay.text.startswith(UNFINISHED_OVERLAY):
        overlay.text, overlay.visible = "", False
