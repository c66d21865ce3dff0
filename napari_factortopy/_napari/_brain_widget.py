"""The main panel: which map, which mesh, which view, and what a clicked vertex chose.

A magicgui ``Container`` acting on the FactorTopy surface layer chosen at the top.
Every control calls a private ``_on_<event>`` slot; tests call those directly.

The panel follows its layer: whoever repaints it (the clusters button, a prediction)
goes through :func:`apply_scene`, whose metadata event makes the panel re-read the
scene (:meth:`BrainWidget._sync`), so panel and surface never disagree. Every
drop-down takes its choices from a callable, so napari's ``reset_choices()`` refreshes
them instead of emptying them. Clicks are answered on whichever FactorTopy surface is
under the cursor, whatever layer is selected (a viewer-level mouse callback).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._background import (
    busy_label,
    clusters_in_background,
    warm_in_background,
)
from napari_factortopy._napari._common import (
    ModelChoice,
    apply_scene,
    factortopy_layers,
    frame_brain,
    keep_framing,
    pick_surfaces,
    same_layer,
    share_geometry,
    show_image,
)
from napari_factortopy._napari._inspector import Inspector
from napari_factortopy._napari._keys import KEYS, bind_keys, unbind_keys
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._overlays import show_roi_names, show_unfinished
from napari_factortopy._napari._session import SessionControls
from napari_factortopy._napari._view_buttons import ViewButtons
from napari_factortopy.scene.brain import MESH_KINDS, BrainScene, Pick, hemisphere_caption
from napari_factortopy.scene.map_panel import (
    NO_FLAT_TIP,
    TIPS,
    LegendCache,
    PanelState,
    legend_tooltip,
    map_names,
    needs_clusters,
    panel_state,
    score_keys,
    show_map,
    stepped,
)

if TYPE_CHECKING:
    import napari

__all__ = ["KEYS", "BrainWidget", "ModelChoice", "apply_scene", "factortopy_layers"]


class BrainWidget(widgets.Container):
    """Map, mesh and view switches, ROI outlines and the vertex inspector.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.timings: dict[str, float] = {}
        self.model_choice = ModelChoice(viewer)
        self.banner = widgets.Label(label="", value="", visible=False)
        # a long convergence line wraps instead of widening the dock (and the canvas)
        self.banner.native.setWordWrap(True)
        self.method = widgets.Label(label="method", value="", visible=False)
        self.map_choice = widgets.ComboBox(label="map", choices=self._map_names)
        self.busy = busy_label()  # "computing the channel clusters…"
        self.worker = None  # the background computation running, if any
        self.layer_slider = widgets.Slider(label="layer", min=1, max=1, value=1, visible=False)
        self.score_choice = widgets.ComboBox(
            label="score", choices=self._score_keys, visible=False
        )
        self.legend = widgets.Image(label="legend")
        self.mesh_choice = widgets.ComboBox(
            label="mesh", choices=list(MESH_KINDS), value="inflated"
        )
        self.views = ViewButtons(self._on_view)  # two rows: one is too wide for 1440 px
        self.view_buttons, self.view_rows = self.views.buttons, self.views.rows
        self.hemispheres = widgets.Label(label="on screen", value="")
        self.outlines = widgets.CheckBox(text="ROI outlines", value=False)
        self.inspector = Inspector()
        self.sessions = SessionControls(viewer, lambda: self.model_choice.value, self._restored)
        self.session_file = self.sessions.file
        self.save_session_button = self.sessions.save_button
        self.restore_session_button = self.sessions.restore_button
        for name, tip in TIPS.items():
            getattr(self, name).tooltip = tip
        self.extend(
            [self.model_choice, self.banner, self.method, self.map_choice, self.busy,
             self.layer_slider, self.score_choice, self.legend, self.mesh_choice, self.view_rows,
             self.hemispheres, self.outlines, *self.inspector.widgets, self.session_file,
             self.sessions.buttons]
        )  # fmt: skip
        self.model_choice.changed.connect(self._on_model)
        self.map_choice.changed.connect(self._on_map)
        self.layer_slider.changed.connect(self._on_layer_index)
        self.score_choice.changed.connect(self._on_score_key)
        self.mesh_choice.changed.connect(self._on_mesh)
        self.outlines.changed.connect(self._on_outlines)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.mouse_drag_callbacks.append(self._on_mouse)
        keep_framing(viewer)  # a docked panel must not cut the brain off
        self.native.destroyed.connect(lambda *_: self._unhook(viewer))
        self._hooked: set[int] = set()
        self._legends = LegendCache()
        self.key_actions = bind_keys(viewer, self._step_map, self._on_view)  # see KEYS
        self._on_layers_changed()

    def _step_map(self, step: int) -> str | None:
        """Show the next (``+1``) or previous (``-1``) map of the drop-down, cyclically."""
        choices = list(self.map_choice.choices)
        if self.scene is None or not choices:
            return None
        self.map_choice.value = stepped(choices, self.map_choice.value, step)
        return self.map_choice.value

    def _on_save_session(self, path=None):
        """Write the current picture to the session file; returns the Session."""
        return self.sessions.save(path)

    def _on_restore_session(self, path=None):
        """Reopen the session file's models and picture; returns the new layers."""
        return self.sessions.restore(path)

    def _restored(self, session) -> None:
        if session.active in self.viewer.layers:
            self.model_choice.value = session.active
        self._sync()

    def _unhook(self, viewer) -> None:
        """The panel is gone: its viewer-level click callback goes too.

        Called from Qt's ``destroyed`` signal, also at interpreter exit when the viewer
        model may already be torn down: an exception escaping a Qt slot aborts the
        process, so a viewer that is already gone is left alone.
        """
        try:
            if self._on_mouse in viewer.mouse_drag_callbacks:
                viewer.mouse_drag_callbacks.remove(self._on_mouse)
        except (AttributeError, RuntimeError):  # the viewer went first
            return
        unbind_keys(viewer)

    # ------------------------------------------------------------------ helpers
    @property
    def layer(self):
        return self.model_choice.layer

    @property
    def scene(self) -> BrainScene | None:
        return None if self.layer is None else scene_for_layer(self.layer)

    @property
    def last_pick(self) -> Pick | None:
        return self.inspector.last_pick

    @property
    def info(self) -> widgets.Label:
        """The clicked vertex's description (the inspector's text)."""
        return self.inspector.info

    def _map_names(self, _widget=None) -> list[str]:
        return map_names(self.scene)

    def _score_keys(self, _widget=None) -> list[str]:
        return score_keys(self.scene)

    def _refresh(self, geometry: bool = False, event: str = "map") -> None:
        layer, scene = self.layer, self.scene
        if layer is None or scene is None:
            return
        t0 = time.perf_counter()
        apply_scene(layer, scene, geometry)  # its metadata event re-syncs this panel
        if geometry or event == "outlines":
            self._show_roi_names(layer, scene)
        if geometry:  # layers shown together (a comparison) take the same mesh and view
            share_geometry(self.viewer, layer, scene)
        self.timings[event] = time.perf_counter() - t0

    def _show_roi_names(self, layer, scene: BrainScene) -> None:
        show_roi_names(self.viewer, layer, scene)

    def _show_legend(self, scene: BrainScene) -> None:
        """Legend of the scene's map (cached: matplotlib takes ~50 ms per image)."""
        show_image(self.legend, self._legends.image(scene))
        self.legend.tooltip = legend_tooltip(scene)

    def _sync(self) -> None:
        """Set every control from the current layer's scene (without side effects):
        what each shows is :func:`~napari_factortopy.scene.map_panel.panel_state`."""
        scene = self.scene
        if scene is None:
            self._show_banner(None)
            return
        state = panel_state(scene)
        self.layer_slider.max = state.n_layers
        for choice, names in ((self.map_choice, state.maps), (self.score_choice, state.scores)):
            with choice.changed.blocked():  # a vanished entry must not repaint the new model
                if tuple(choice.choices) != names:
                    choice.native.clear()  # magicgui keeps old entries' order: refill in order
                choice.reset_choices()
        self.hemispheres.value = state.hemispheres
        self.views.set_flat(state.flat, state.flat_tooltip)
        values = [(self.map_choice, state.map_name), (self.mesh_choice, state.kind),
                  (self.outlines, state.outlines), (self.layer_slider, state.layer)]  # fmt: skip
        if state.score_key is not None:
            values.append((self.score_choice, state.score_key))
        for widget, value in values:
            with widget.changed.blocked():
                widget.value = value
        self.layer_slider.visible = state.layer_visible
        self.score_choice.visible = state.score_visible
        self._show_banner(state)
        self.method.value, self.method.visible = state.method or "", bool(state.method)
        self._show_legend(scene)

    def _show_banner(self, state: PanelState | None) -> None:
        """The unfinished model's warning: in the panel and over the canvas."""
        self.banner.value = "" if state is None else state.banner
        self.banner.visible = bool(self.banner.value)
        show_unfinished(self.viewer, None if state is None else state.unfinished)

    # -------------------------------------------------------------------- slots
    def _on_layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "removed":
            # a model layer went: its ROI-names layer goes with it
            orphan = f"{event.value.name} ROI names"
            if orphan in self.viewer.layers:
                self.viewer.layers.remove(orphan)
        self.model_choice.reset_choices()
        if getattr(event, "type", "") == "inserted" and self.scene is not None:
            warm_in_background(self.scene.warm_picking)  # a fast first click
        for layer in factortopy_layers(self.viewer):
            if id(layer) not in self._hooked:
                layer.events.metadata.connect(self._on_layer_metadata)
                self._hooked.add(id(layer))
        self._sync()

    def _on_layer_metadata(self, event=None) -> None:
        if event is None or same_layer(getattr(event, "source", None), self.layer):
            self._sync()

    def _on_model(self, value=None) -> None:
        self._sync()

    def _on_map(self, name: str | None = None) -> None:
        scene = self.scene
        if scene is None:
            return
        name = name or self.map_choice.value
        if needs_clusters(scene, name):  # seconds at 40,000 vertices: off the UI thread
            if self.worker is None:
                self.worker = clusters_in_background(
                    scene, self.busy, self._clusters_ready, lambda: setattr(self, "worker", None)
                )
            return
        show_map(scene, name, self.score_choice.value)
        self._refresh(event="map")

    def _clusters_ready(self, scene: BrainScene, labels) -> None:
        """The clusters came back: show them if the user still asks for that map."""
        if scene.clusters is None:
            scene.clusters = labels
        if self.scene is scene and self.map_choice.value == "clusters":
            self._on_map("clusters")

    def _on_layer_index(self, value: int | None = None) -> None:
        if self.scene is None:
            return
        self.scene.layer_index = int(value if value is not None else self.layer_slider.value) - 1
        if self.scene.map_name == "layer weights":
            self._refresh(event="map")

    def _on_score_key(self, value: str | None = None) -> None:
        if self.scene is not None and (value or self.score_choice.value):
            self.scene.score_key = value or self.score_choice.value
            self._refresh(event="map")

    def _on_mesh(self, kind: str | None = None) -> None:
        scene = self.scene
        if scene is None:
            return
        from napari.utils.notifications import show_warning

        from napari_factortopy.data.surfaces import SurfaceError

        previous = (scene.kind, scene.view)
        scene.set_kind(kind or self.mesh_choice.value)
        try:
            self._refresh(geometry=True, event="mesh")
        except (SurfaceError, OSError, ValueError) as exc:
            scene.kind, scene.view = previous
            show_warning(f"cannot show the {kind or self.mesh_choice.value} mesh: {exc}")
            self._sync()
            return
        self._reset_camera()

    def _on_view(self, view: str) -> None:
        scene = self.scene
        if scene is None:
            return
        if view == "flat" and not scene.has_mesh("flat"):
            from napari.utils.notifications import show_warning

            show_warning(NO_FLAT_TIP)
            return
        scene.set_view(view)
        self._refresh(geometry=True, event="view")
        self.hemispheres.value = hemisphere_caption(scene.view, scene.kind)
        self._reset_camera()

    def _reset_camera(self) -> None:
        scene = self.scene
        if scene is not None:  # the first click after a view/mesh change is answered fast
            warm_in_background(scene.warm_picking)
        frame_brain(self.viewer)

    def _on_outlines(self, value: bool | None = None) -> None:
        if self.scene is not None:
            self.scene.outlines = bool(self.outlines.value if value is None else value)
            self._refresh(event="outlines")

    def _on_mouse(self, viewer, event) -> None:
        """Viewer-level click: inspect the surface under the cursor (any layer selected)."""
        if event.type != "mouse_press" or event.position is None:
            return
        direction = getattr(event, "view_direction", None)
        if direction is None or viewer.dims.ndisplay != 3:
            return
        self._on_click_world(np.asarray(event.position), np.asarray(direction))

    def _on_click_world(self, position, direction) -> Pick | None:
        """Inspect the vertex a world-coordinate ray meets first, on any model layer."""
        t0 = time.perf_counter()
        layer, pick = pick_surfaces(self.viewer, position, direction)
        if layer is not None and layer.name != self.model_choice.value:
            self.model_choice.value = layer.name
        self.timings["click"] = time.perf_counter() - t0
        self.inspector.show(self.scene if layer is not None else None, pick)
        return pick

    def _on_click(self, position, direction) -> Pick | None:
        """Inspect the vertex under a click ray (data coordinates of the chosen layer)."""
        scene = self.scene
        if scene is None:
            return None
        t0 = time.perf_counter()
        pick = scene.pick(position, direction)
        self.timings["click"] = time.perf_counter() - t0
        self.inspector.show(scene, pick)
        return pick
