"""The main panel: which map, which mesh, which view, and what a clicked vertex chose.

A magicgui ``Container`` acting on the FactorTopy surface layer chosen at the top.
Every control calls a private ``_on_<event>`` slot; tests call those directly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._layers import META_KEY, scene_for_layer, scene_metadata
from napari_factortopy.data.stimuli import stimulus_loader
from napari_factortopy.scene import plots as _plots
from napari_factortopy.scene.brain import MAPS, MESH_KINDS, VIEWS, BrainScene, Pick

if TYPE_CHECKING:
    import napari

__all__ = ["BrainWidget", "ModelChoice", "apply_scene", "factortopy_layers"]


def factortopy_layers(viewer) -> list:
    """The viewer's surface layers that show a FactorTopy model."""
    return [ly for ly in viewer.layers if META_KEY in getattr(ly, "metadata", {})]


class ModelChoice(widgets.ComboBox):
    """Drop-down of the viewer's FactorTopy layers; follows layers added and removed.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    label : str
    """

    def __init__(self, viewer, label: str = "model") -> None:
        self._viewer = viewer
        super().__init__(label=label, choices=self._names)
        viewer.layers.events.inserted.connect(lambda e=None: self.reset_choices())
        viewer.layers.events.removed.connect(lambda e=None: self.reset_choices())

    def _names(self, _widget=None) -> list[str]:
        return [ly.name for ly in factortopy_layers(self._viewer)]

    @property
    def layer(self):
        """The chosen layer, or None."""
        name = self.value
        return self._viewer.layers[name] if name in self._viewer.layers else None


def apply_scene(layer, scene: BrainScene, geometry: bool = False) -> None:
    """Push a scene's colours (and with ``geometry`` its vertices) into its layer."""
    if geometry:
        layer.data = scene.layer_data()
    layer.vertex_colors = scene.colors()
    layer.metadata = {
        **layer.metadata,
        META_KEY: {**layer.metadata[META_KEY], **scene_metadata(scene, _path(layer))},
    }


def _path(layer) -> str | None:
    return layer.metadata.get(META_KEY, {}).get("path")


def show_image(widget: widgets.Image, image, width: int | None = None) -> None:
    """Put an (H, W, 3|4) image into a magicgui Image widget at a readable size."""
    h, w = image.shape[:2]
    width = width or w
    height = round(h * width / w)
    widget.set_data(image, width=int(width), height=height)
    widget.min_width, widget.min_height = int(width), height


class BrainWidget(widgets.Container):
    """Map, mesh and view switches, ROI outlines and the vertex inspector.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.last_pick: Pick | None = None
        self.timings: dict[str, float] = {}
        self.model_choice = ModelChoice(viewer)
        self.map_choice = widgets.ComboBox(label="map", choices=list(MAPS), value="layer")
        self.layer_slider = widgets.Slider(label="layer", min=1, max=1, value=1, visible=False)
        self.score_choice = widgets.ComboBox(label="score", choices=[], visible=False)
        self.legend = widgets.Image(label="legend")
        self.mesh_choice = widgets.ComboBox(
            label="mesh", choices=list(MESH_KINDS), value="inflated"
        )
        self.view_buttons = widgets.Container(layout="horizontal", labels=False, label="view")
        for view in VIEWS:
            button = widgets.PushButton(text=view)
            button.changed.connect(lambda _=None, v=view: self._on_view(v))
            self.view_buttons.append(button)
        self.outlines = widgets.CheckBox(text="ROI outlines", value=False)
        self.info = widgets.Label(label="vertex", value="click the brain to inspect a vertex")
        self.bars = widgets.Image(label="weights")
        self.where = widgets.Image(label="looks at")
        self.extend(
            [
                self.model_choice,
                self.map_choice,
                self.layer_slider,
                self.score_choice,
                self.legend,
                self.mesh_choice,
                self.view_buttons,
                self.outlines,
                self.info,
                self.bars,
                self.where,
            ]
        )
        self.model_choice.changed.connect(self._on_model)
        self.map_choice.changed.connect(self._on_map)
        self.layer_slider.changed.connect(self._on_layer_index)
        self.score_choice.changed.connect(self._on_score_key)
        self.mesh_choice.changed.connect(self._on_mesh)
        self.outlines.changed.connect(self._on_outlines)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        self._hooked: set[int] = set()
        self._legends: dict[tuple, object] = {}
        self._on_layers_changed()

    # ------------------------------------------------------------------ helpers
    @property
    def layer(self):
        return self.model_choice.layer

    @property
    def scene(self) -> BrainScene | None:
        return None if self.layer is None else scene_for_layer(self.layer)

    def _refresh(self, geometry: bool = False, event: str = "map") -> None:
        layer, scene = self.layer, self.scene
        if layer is None or scene is None:
            return
        t0 = time.perf_counter()
        apply_scene(layer, scene, geometry)
        if geometry or event == "outlines":
            self._show_roi_names(layer, scene)
        self.timings[event] = time.perf_counter() - t0
        self._show_legend(scene)

    def _show_roi_names(self, layer, scene: BrainScene) -> None:
        """ROI names at each ROI's centre (per hemisphere) while outlines are on.

        A Points layer of invisible points carrying the names as text, in the layer's
        current mesh and view layout; removed when the outlines are off.
        """
        name = f"{layer.name} ROI names"
        if not scene.outlines:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        pos, names = scene.roi_labels()
        if name in self.viewer.layers:
            points = self.viewer.layers[name]
            points.data = pos
            points.features = {"roi": names}
        else:
            points = self.viewer.add_points(
                pos,
                name=name,
                features={"roi": names},
                text={"string": "{roi}", "color": "white", "size": 10},
                size=0,
                opacity=1.0,
                face_color="transparent",
                border_width=0,
            )
        points.scale, points.translate = layer.scale, layer.translate

    def _show_legend(self, scene: BrainScene) -> None:
        """Legend of the scene's map (cached: matplotlib takes ~50 ms per image)."""
        key = (
            id(scene),
            scene.map_name,
            scene.layer_index,
            scene.score_key,
            None if scene.clusters is None else int(scene.clusters.max()),
        )
        if scene.map_name in scene.custom or key not in self._legends:
            self._legends[key] = _plots.legend_image(scene)
        show_image(self.legend, self._legends[key])

    # -------------------------------------------------------------------- slots
    def _on_layers_changed(self, event=None) -> None:
        if event is not None and getattr(event, "type", "") == "removed":
            # a model layer went: its ROI-names layer goes with it
            orphan = f"{event.value.name} ROI names"
            if orphan in self.viewer.layers:
                self.viewer.layers.remove(orphan)
        self.model_choice.reset_choices()
        for layer in factortopy_layers(self.viewer):
            if id(layer) not in self._hooked:
                layer.mouse_drag_callbacks.append(self._on_mouse)
                self._hooked.add(id(layer))
        if self.model_choice.value is not None:
            self._on_model()

    def _on_model(self, value=None) -> None:
        scene = self.scene
        if scene is None:
            return
        m = scene.model
        self.layer_slider.max = m.n_layers
        self.score_choice.choices = list(m.scores)
        if scene.score_key in m.scores:
            self.score_choice.value = scene.score_key
        for widget, value in (
            (self.map_choice, scene.map_name),
            (self.mesh_choice, scene.kind),
            (self.outlines, scene.outlines),
        ):
            with widget.changed.blocked():
                widget.value = value
        self._show_legend(scene)

    def _on_map(self, name: str | None = None) -> None:
        scene = self.scene
        if scene is None:
            return
        name = name or self.map_choice.value
        scene.map_name = name
        self.layer_slider.visible = name == "layer weights"
        self.score_choice.visible = name == "score"
        if name == "clusters" and scene.clusters is None:
            from napari_factortopy.core.analyses import channel_clusters

            beta = scene.model.beta
            scene.clusters = channel_clusters(beta, 20, n_kmeans=min(1000, len(beta))).labels
        self._refresh(event="map")

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

        previous = scene.kind
        scene.kind = kind or self.mesh_choice.value
        try:
            self._refresh(geometry=True, event="mesh")
        except (SurfaceError, OSError, ValueError) as exc:
            scene.kind = previous
            show_warning(f"cannot show the {scene.kind} mesh: {exc}")
            return
        self._reset_camera()

    def _on_view(self, view: str) -> None:
        scene = self.scene
        if scene is None:
            return
        scene.view = view
        self._refresh(geometry=True, event="view")
        self._reset_camera()

    def _reset_camera(self) -> None:
        self.viewer.dims.ndisplay = 3
        cam = self.viewer.camera
        cam.set_view_direction((-1.0, 0.0, 0.0), up_direction=(0.0, -1.0, 0.0))
        self.viewer.reset_view()
        cam.zoom *= 0.9  # a margin around the brain

    def _on_outlines(self, value: bool | None = None) -> None:
        if self.scene is not None:
            self.scene.outlines = bool(self.outlines.value if value is None else value)
            self._refresh(event="outlines")

    def _on_mouse(self, layer, event) -> None:
        if event.type != "mouse_press" or event.position is None:
            return
        direction = getattr(event, "view_direction", None)
        if direction is None:
            return
        if layer.name != self.model_choice.value:
            self.model_choice.value = layer.name
        self._on_click(np.asarray(event.position)[-3:], np.asarray(direction)[-3:])

    def _on_click(self, position, direction) -> Pick | None:
        """Inspect the vertex under a click ray (data coordinates of the layer)."""
        scene = self.scene
        if scene is None:
            return None
        t0 = time.perf_counter()
        pick = scene.pick(position, direction)
        self.timings["click"] = time.perf_counter() - t0
        self.last_pick = pick
        self._show_pick(pick)
        return pick

    def _show_pick(self, pick: Pick | None) -> None:
        scene = self.scene
        if pick is None:
            self.info.value = "no vertex there"
            return
        m = scene.model
        text = f"{pick.hemi} vertex {pick.hemi_vertex}"
        if pick.row is None:
            self.info.value = text + " (not modelled)"
            return
        r = pick.row
        roi = int(m.roi[r])
        roi_name = m.roi_names[roi - 1] if 0 < roi <= len(m.roi_names) else "no ROI"
        scores = ", ".join(f"{k} {float(v[r]):.3f}" for k, v in m.scores.items())
        x, y = m.space[r]
        self.info.value = (
            f"{text} · {roi_name}\nscore: {scores or 'none'}\n"
            f"scale α {float(m.scale[r]):.2f} · space ({x:+.2f}, {y:+.2f})"
        )
        show_image(self.bars, _plots.bar_image(m.layer[r], m.backbone.get("layer_names")))
        image = scene.stimulus
        if image is None:
            source = stimulus_loader(m)
            if source is not None:
                image = scene.stimulus = source[0](np.array([0]))[0]
        if image is not None:
            show_image(self.where, _plots.mark_location(image, m.space[r]), width=240)
