"""The Brain maps panel's map rows: which map, the busy line, the layer slider, the score
drop-down and the legend, set from a :class:`~napari_factortopy.scene.map_panel.PanelState`.

What each row shows is decided in :mod:`napari_factortopy.scene.map_panel`; this module
holds the widgets, fills them without emitting their ``changed`` signals, and runs the
channel clusters' background computation (one at a time).
"""

from __future__ import annotations

from collections.abc import Callable

from magicgui import widgets

from napari_factortopy._napari._background import busy_label, clusters_in_background
from napari_factortopy._napari._common import show_image
from napari_factortopy.scene.brain import BrainScene
from napari_factortopy.scene.map_panel import (
    LegendCache,
    PanelState,
    legend_tooltip,
    map_names,
    score_keys,
    stepped,
)

__all__ = ["MapControls"]


class MapControls:
    """The map drop-down, busy line, layer slider, score drop-down and legend.

    Parameters
    ----------
    scene : callable
        Returns the scene the panel acts on (None without a model); the drop-downs take
        their choices from it, so napari's ``reset_choices()`` refreshes them.
    """

    #: The attributes holding one row each, top to bottom (the panel keeps these names).
    NAMES = ("map_choice", "busy", "layer_slider", "score_choice", "legend")

    def __init__(self, scene: Callable[[], BrainScene | None]) -> None:
        self._scene = scene
        self.map_choice = widgets.ComboBox(label="map", choices=self._map_names)
        self.busy = busy_label()  # "computing the channel clusters…"
        self.worker = None  # the background computation running, if any
        self.layer_slider = widgets.Slider(label="layer", min=1, max=1, value=1, visible=False)
        self.score_choice = widgets.ComboBox(
            label="score", choices=self._score_keys, visible=False
        )
        self.legend = widgets.Image(label="legend")
        self.widgets = [getattr(self, name) for name in self.NAMES]
        self._legends = LegendCache()

    def _map_names(self, _widget=None) -> list[str]:
        return map_names(self._scene())

    def _score_keys(self, _widget=None) -> list[str]:
        return score_keys(self._scene())

    def fill(self, state: PanelState, scene: BrainScene) -> None:
        """Set every row from ``state`` (``scene``'s), without side effects: no
        ``changed`` signal is emitted."""
        self.layer_slider.max = state.n_layers
        for choice, names in ((self.map_choice, state.maps), (self.score_choice, state.scores)):
            with choice.changed.blocked():  # a vanished entry must not repaint the new model
                if tuple(choice.choices) != names:
                    choice.native.clear()  # magicgui keeps old entries' order: refill in order
                choice.reset_choices()
        values = [(self.map_choice, state.map_name), (self.layer_slider, state.layer)]
        if state.score_key is not None:
            values.append((self.score_choice, state.score_key))
        for widget, value in values:
            with widget.changed.blocked():
                widget.value = value
        self.layer_slider.visible = state.layer_visible
        self.score_choice.visible = state.score_visible
        self.show_legend(scene)

    def show_legend(self, scene: BrainScene) -> None:
        """Legend of the scene's map (cached: matplotlib takes ~50 ms per image)."""
        show_image(self.legend, self._legends.image(scene))
        self.legend.tooltip = legend_tooltip(scene)

    def step(self, step: int) -> str | None:
        """Show the next (``+1``) or previous (``-1``) map of the drop-down, cyclically;
        returns the map shown (None without a scene or maps)."""
        choices = list(self.map_choice.choices)
        if self._scene() is None or not choices:
            return None
        self.map_choice.value = stepped(choices, self.map_choice.value, step)
        return self.map_choice.value

    def compute_clusters(self, scene: BrainScene, ready) -> None:
        """Compute ``scene``'s channel clusters off the UI thread (seconds at 40,000
        vertices), unless a computation is already running; ``ready(scene, labels)``."""
        if self.worker is None:
            self.worker = clusters_in_background(
                scene, self.busy, ready, lambda: setattr(self, "worker", None)
            )
