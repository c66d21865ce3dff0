"""Figure export: maps × views as a publication PNG, or a plain canvas screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._common import ModelChoice, keep_framing, viewer_camera
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.scene.brain import MAPS, VIEWS, available_maps

if TYPE_CHECKING:
    import napari

__all__ = ["ExportWidget"]


class ExportWidget(widgets.Container):
    """Choose maps, views and width; write the figure (same as ``factortopy figure``).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.model_choice = ModelChoice(viewer)
        self.maps = widgets.Select(
            label="maps", choices=self._map_names, value=[],
            tooltip="one figure row per map (ctrl-click for several)",
        )  # fmt: skip
        self.maps.value = [m for m in ("layer", "score") if m in self.maps.choices]
        self.views = widgets.Select(
            label="views", choices=list(VIEWS), value=["lateral", "ventral"],
            tooltip="one figure column per camera preset (ctrl-click for several)",
        )  # fmt: skip
        self.width_px = widgets.SpinBox(
            label="width (px)", value=3000, min=500, max=20000,
            tooltip="width of the figure or screenshot in pixels (≥ 3000 for print)",
        )  # fmt: skip
        self.lighting = widgets.ComboBox(
            label="lighting", choices=["flat", "shaded"], value="flat",
            tooltip="flat: the map's exact colours (quantitative maps); shaded: a headlight "
            "shows the folding",
        )  # fmt: skip
        self.out = widgets.FileEdit(
            label="save as",
            mode="w",
            filter="*.png",
            value=str(Path.home() / "factortopy" / "figure.png"),
            tooltip="PNG to write (the screenshot gets '-canvas' added to its name)",
        )
        self.figure_button = widgets.PushButton(
            text="Export figure",
            tooltip="maps × views with legends, drawn off-screen (pyvista), both hemispheres",
        )
        self.shot_button = widgets.PushButton(
            text="Screenshot canvas", tooltip="the canvas as shown, at the chosen width"
        )
        self.status = widgets.Label(label="status", value="")
        self.extend(
            [
                self.model_choice,
                self.maps,
                self.views,
                self.width_px,
                self.lighting,
                self.out,
                self.figure_button,
                self.shot_button,
                self.status,
            ]
        )
        self.model_choice.changed.connect(lambda _=None: self.maps.reset_choices())
        self.figure_button.changed.connect(self._on_export)
        self.shot_button.changed.connect(self._on_screenshot)

    def _map_names(self, _widget=None) -> list[str]:
        """The built-in maps and those of the chosen model's scene (a prediction …)."""
        layer = self.model_choice.layer if hasattr(self, "model_choice") else None
        scene = None if layer is None else scene_for_layer(layer)
        if scene is None:
            return list(MAPS)
        maps = available_maps(scene.model)  # only maps the model has numbers for
        return maps + [k for k in scene.custom if k not in maps]

    def _on_export(self, _=None) -> np.ndarray | None:
        """Write the figure PNG; returns the image (H, W, 4)."""
        from napari_factortopy.scene.figure import figure_image

        layer = self.model_choice.layer
        if layer is None:
            self.status.value = "no model shown"
            return None
        maps, views = list(self.maps.value), list(self.views.value)
        if not maps or not views:
            self.status.value = "choose at least one map and one view (ctrl-click for several)"
            return None
        self.status.value = "exporting…"
        try:
            image = figure_image(
                scene_for_layer(layer),
                maps,
                views,
                int(self.width_px.value),
                str(self.out.value),
                lighting=str(self.lighting.value),
            )
        except OSError as exc:  # a folder that cannot be written …
            from napari.utils.notifications import show_warning

            self.status.value = f"cannot write {self.out.value}: {exc}"
            show_warning(self.status.value)
            return None
        self.status.value = f"wrote {self.out.value} ({image.shape[1]}×{image.shape[0]})"
        return image

    def _on_screenshot(self, _=None) -> np.ndarray:
        """Save the canvas as it is shown, scaled to the chosen width.

        napari enlarges the canvas for a bigger screenshot but keeps the camera's zoom
        (screen pixels per world unit), so the brain would stay as small as on screen
        in a mostly black picture; the viewer's framing keeper
        (:func:`~napari_factortopy._napari._common.keep_framing`) scales the zoom with
        the canvas for the shot, and napari puts it back, so the picture is framed as
        on screen.
        """
        from napari_factortopy.scene.figure import save_png

        keep_framing(self.viewer)
        probe = self.viewer.screenshot(canvas_only=True, flash=False)
        scale = int(self.width_px.value) / max(probe.shape[1], 1)
        camera = viewer_camera(self.viewer)
        zoom = camera.zoom
        try:
            image = self.viewer.screenshot(canvas_only=True, scale=scale, flash=False)
        finally:
            camera.zoom = zoom
        path = Path(str(self.out.value))
        out = path.with_name(path.stem + "-canvas.png")
        save_png(image, out)
        self.status.value = f"wrote {out} ({image.shape[1]}×{image.shape[0]})"
        return image
