"""The Brain maps panel's clicks: a click ray → the vertex it meets → the inspector.

A viewer-level mouse callback answers a click on whichever FactorTopy surface is under
the cursor, whatever layer is selected (the panel then follows that layer); each
answer's time is written into the panel's ``timings["click"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from napari_factortopy._napari._common import pick_surfaces
from napari_factortopy._napari._inspector import Inspector
from napari_factortopy.scene.brain import BrainScene, Pick

__all__ = ["Clicks"]


class Clicks:
    """Clicks on the canvas, answered by the vertex inspector.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    model_choice : ModelChoice
        The panel's model drop-down: set to the layer a world-coordinate click meets.
    scene : callable
        Returns the scene of the layer the drop-down names (None without one).
    inspector : Inspector
        Shows the clicked vertex.
    timings : dict
        The panel's timings; ``"click"`` is the last click's, in seconds.
    """

    def __init__(
        self,
        viewer,
        model_choice,
        scene: Callable[[], BrainScene | None],
        inspector: Inspector,
        timings: dict[str, float],
    ) -> None:
        self.viewer = viewer
        self.model_choice = model_choice
        self._scene = scene
        self.inspector = inspector
        self.timings = timings

    def on_mouse(self, viewer, event) -> None:
        """Viewer-level click: inspect the surface under the cursor (any layer selected)."""
        if event.type != "mouse_press" or event.position is None:
            return
        direction = getattr(event, "view_direction", None)
        if direction is None or viewer.dims.ndisplay != 3:
            return
        self.on_click_world(np.asarray(event.position), np.asarray(direction))

    def on_click_world(self, position, direction) -> Pick | None:
        """Inspect the vertex a world-coordinate ray meets first, on any model layer."""
        t0 = time.perf_counter()
        layer, pick = pick_surfaces(self.viewer, position, direction)
        if layer is not None and layer.name != self.model_choice.value:
            self.model_choice.value = layer.name
        self.timings["click"] = time.perf_counter() - t0
        self.inspector.show(self._scene() if layer is not None else None, pick)
        return pick

    def on_click(self, position, direction) -> Pick | None:
        """Inspect the vertex under a click ray (data coordinates of the chosen layer)."""
        scene = self._scene()
        if scene is None:
            return None
        t0 = time.perf_counter()
        pick = scene.pick(position, direction)
        self.timings["click"] = time.perf_counter() - t0
        self.inspector.show(scene, pick)
        return pick
