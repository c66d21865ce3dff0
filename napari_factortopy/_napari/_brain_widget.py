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

from magicgui import widgets

from napari_factortopy._napari._background import DeferredWarmUp
from napari_factortopy._napari._clicks import Clicks
from napari_factortopy._napari._common import (
    ModelChoice,
    StatusText,
    apply_scene,
    factortopy_layers,
    frame_brain,
    keep_framing,
    same_layer,
    share_geometry,
)
from napari_factortopy._napari._culling import hide_back_faces
from napari_factortopy._napari._inspector import Inspector
from napari_factortopy._napari._keys import KEYS, bind_keys, unbind_keys
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._map_controls import MapControls
from napari_factortopy._napari._overlays import show_roi_names, show_unfinished
from napari_factortopy._napari._session import SessionControls
from napari_factortopy._napari._view_buttons import ViewButtons
from napari_factortopy.scene.brain import MESH_KINDS, BrainScene, Pick, hemisphere_caption
from napari_factortopy.scene.map_panel import (
    NO_FLAT_TIP,
    TIPS,
    PanelState,
    needs_clusters,
    panel_state,
    show_map,
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
        self.timings: dict[str, float] = {}  # "click", and each repaint's event
        self.model_choice = ModelChoice(viewer)
        # the warnings wrap (and elide past 8 lines) instead of widening the dock
        self.banner = StatusText(max_lines=8, label="", value="", visible=False)
        self.method = widgets.Label(label="method", value="", visible=False)
        self.maps = MapControls(lambda: self.scene)  # map, busy line, layer, score, legend
        for name in MapControls.NAMES:  # the panel's attributes, as TIPS and the tests name them
            setattr(self, name, getattr(self.maps, name))
        self.mesh_choice = widgets.ComboBox(
            label="mesh", choices=list(MESH_KINDS), value="inflated"
        )
        self.views = ViewButtons(self._on_view)  # two rows: one is too wide for 1440 px
        self.view_buttons, self.view_rows = self.views.buttons, self.views.rows
        self.hemispheres = widgets.Label(label="on screen", value="")
        self.outlines = widgets.CheckBox(text="ROI outlines", value=False)
        self.inspector = Inspector()
        self.clicks = Clicks(
            viewer, self.model_choice, lambda: self.scene, self.inspector, self.timings
        )
        self._on_click_world, self._on_click = self.clicks.on_click_world, self.clicks.on_click
        self.sessions = SessionControls(viewer, lambda: self.model_choice.value, self._restored)
        self.session_file = self.sessions.file
        self.save_session_button = self.sessions.save_button
        self.restore_session_button = self.sessions.restore_button
        for name, tip in TIPS.items():
            getattr(self, name).tooltip = tip
        self.extend(
            [self.model_choice, self.banner, self.method, *self.maps.widgets, self.mesh_choice,
             self.view_rows, self.hemispheres, self.outlines, *self.inspector.widgets,
             self.session_file, self.sessions.buttons]
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
        self._warm = DeferredWarmUp(self.native)  # the pick structure, after the frame
        self.key_actions = bind_keys(viewer, self.maps.step, self._on_view)  # see KEYS
        self._on_layers_changed()

    def _on_mouse(self, viewer, event) -> None:
        """Viewer-level click: the inspector answers (:meth:`Clicks.on_mouse`)."""
        self.clicks.on_mouse(viewer, event)

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

    @property
    def worker(self):
        """The background computation running (the channel clusters), if any."""
        return self.maps.worker

    def _refresh(self, geometry: bool = False, event: str = "map") -> None:
        layer, scene = self.layer, self.scene
        if layer is None or scene is None:
            return
        t0 = time.perf_counter()
        apply_scene(layer, scene, geometry, self.viewer)  # its metadata event re-syncs this panel
        if geometry or event == "outlines":
            self._show_roi_names(layer, scene)
        if geometry:  # layers shown together (a comparison) take the same mesh and view
            share_geometry(self.viewer, layer, scene)
        self.timings[event] = time.perf_counter() - t0

    def _show_roi_names(self, layer, scene: BrainScene) -> None:
        show_roi_names(self.viewer, layer, scene)

    def _sync(self) -> None:
        """Set every control from the current layer's scene (without side effects):
        what each shows is :func:`~napari_factortopy.scene.map_panel.panel_state`."""
        scene = self.scene
        if scene is None:
            self._show_banner(None)
            return
        state = panel_state(scene)
        self.maps.fill(state, scene)
        self.hemispheres.value = state.hemispheres
        self.views.set_flat(state.flat, state.flat_tooltip)
        for widget, value in ((self.mesh_choice, state.kind), (self.outlines, state.outlines)):
            with widget.changed.blocked():
                widget.value = value
        self._show_banner(state)
        self.method.value, self.method.visible = state.method or "", bool(state.method)

    def _show_banner(self, state: PanelState | None) -> None:
        """The unfinished or degenerate model's warning: in the panel and over the canvas."""
        self.banner.value = "" if state is None else state.banner
        self.banner.visible = bool(self.banner.value)
        why = (None, None) if state is None else (state.unfinished, state.degenerate)
        show_unfinished(self.viewer, *why)

    # -------------------------------------------------------------------- slots
    def _on_layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "removed":
            # a model layer went: its ROI-names layer goes with it
            orphan = f"{event.value.name} ROI names"
            if orphan in self.viewer.layers:
                self.viewer.layers.remove(orphan)
        self.model_choice.reset_choices()
        if (event is None or getattr(event, "type", "") == "inserted") and self.scene is not None:
            # a fast first click, and the mesh's orientation (the canvas culls on it),
            # also for a model opened before the panel was docked
            self._warm.request(self.scene.warm_picking)
        for layer in factortopy_layers(self.viewer):
            if id(layer) not in self._hooked:
                layer.events.metadata.connect(self._on_layer_metadata)
                self._hooked.add(id(layer))
            hide_back_faces(layer, self.viewer)  # camera turns are drawn culled too
        self._sync()

    def _on_layer_metadata(self, event=None) -> None:
        if event is None or same_layer(getattr(event, "source", None), self.layer):
            self._sync()

    def _on_model(self, value=None) -> None:
        if self.scene is not None:  # another model: its pick structure and orientation
            self._warm.request(self.scene.warm_picking)
        self._sync()

    def _on_map(self, name: str | None = None) -> None:
        scene = self.scene
        if scene is None:
            return
        name = name or self.map_choice.value
        if needs_clusters(scene, name):  # seconds at 40,000 vertices: off the UI thread
            self.maps.compute_clusters(scene, self._clusters_ready)
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
            self._warm.request(scene.warm_picking)
        frame_brain(self.viewer)

    def _on_outlines(self, value: bool | None = None) -> None:
        if self.scene is not None:
            self.scene.outlines = bool(self.outlines.value if value is None else value)
            self._refresh(event="outlines")
