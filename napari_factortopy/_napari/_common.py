"""Pieces every panel shares: the model drop-down, pushing a scene into its layer (and
its mesh and view into the layers shown with it), framing the brain, showing a small
image, and picking a vertex on whichever surface a click meets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._background import import_in_background, units_in_background
from napari_factortopy._napari._culling import hide_back_faces
from napari_factortopy._napari._layers import META_KEY, scene_for_layer, scene_metadata
from napari_factortopy._napari._mesh_update import recolour, reposition
from napari_factortopy.scene.brain import BrainScene, Pick

__all__ = [
    "ModelChoice",
    "StatusText",
    "apply_scene",
    "factortopy_layers",
    "fit_window",
    "frame_brain",
    "keep_selection",
    "linked_layers",
    "pick_surfaces",
    "place_side_by_side",
    "same_layer",
    "settle_scale_factor",
    "share_geometry",
    "show_image",
    "viewer_camera",
]


def viewer_camera(viewer):
    """The viewer's camera model: ``viewer.scene.camera`` since napari 0.9 (where
    ``viewer.camera`` warns that it is deprecated), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera


def same_layer(a, b) -> bool:
    """Whether two layer references are one layer (napari hands docked widgets proxies)."""
    return a is not None and getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def factortopy_layers(viewer) -> list:
    """The viewer's surface layers that show a FactorTopy model."""
    return [ly for ly in viewer.layers if META_KEY in getattr(ly, "metadata", {})]


class _Framing:
    """Keeps the brain framed when the canvas changes size (a panel docked, the window
    resized, a scaled screenshot): scales the camera zoom by how much the fit of the
    shown brain layers changes, keeping the user's rotation and centre. napari keeps the
    zoom instead, which cuts the brain off on a narrower canvas. One per viewer
    (:func:`keep_framing`); its state is the last canvas size."""

    def __init__(self, viewer) -> None:
        import weakref

        self._viewer = weakref.ref(viewer)
        self.size = tuple(viewer.canvas.size)

    def __call__(self, event=None) -> None:
        viewer = self._viewer()
        if viewer is None:
            return
        try:
            new = tuple(viewer.canvas.size)  # (height, width)
        except AttributeError:  # the viewer is being torn down
            return
        if min(new) <= 0:  # a hidden canvas: keep the last real size
            return
        old, self.size = self.size, new
        if min(old) <= 0 or old == new or viewer.dims.ndisplay != 3:
            return
        layers = [ly for ly in factortopy_layers(viewer) if ly.visible]
        if not layers:
            return
        cam = viewer_camera(viewer)
        up = np.asarray(cam.up_direction, float)
        right = np.cross(np.asarray(cam.view_direction, float), up)
        verts = np.concatenate(
            [
                np.asarray(ly.data[0], float)[:, -3:] * np.asarray(ly.scale)[-3:]
                + np.asarray(ly.translate)[-3:]
                for ly in layers
            ]
        )
        width = float(np.ptp(verts @ right)) or 1.0
        height = float(np.ptp(verts @ up)) or 1.0

        def fit(size):
            return min(size[1] / width, size[0] / height)

        cam.zoom = cam.zoom * fit(new) / fit(old)


def keep_framing(viewer) -> None:
    """Install the viewer's :class:`_Framing` once (any panel may ask)."""
    emitter = viewer.canvas.events.size
    if not any(isinstance(cb, _Framing) for cb in emitter.callbacks):
        emitter.connect(_Framing(viewer))


#: Widest a panel's dock starts, as a share of the window's width.
DOCK_SHARE = 0.28
#: Share of the window's width left to the docks on both sides together (the canvas
#: keeps the rest: more than half).
CANVAS_SHARE = 0.46
#: Narrowest a panel's dock starts (pixels).
MIN_DOCK = 260


def _is_ours(dock) -> bool:
    """Whether a dock widget holds one of this plugin's panels."""
    inner = getattr(dock, "_factortopy_panel", None)
    if inner is None:
        try:
            inner = dock.inner_widget()
        except (AttributeError, RuntimeError):
            return False
    return type(inner).__module__.startswith("napari_factortopy.")


class _DockLayout:
    """Keeps the plugin's panels inside the window (issue 22, item 2).

    Every panel docked (through the Plugins menu or ``add_dock_widget``) is put in a
    scroll area, so a tall panel scrolls instead of making the window taller than the
    screen, and starts at most :data:`DOCK_SHARE` of the window wide. Panels docked on
    the same side are tabbed: Brain maps alone on top, the others tabbed together below
    it (the newest in front). One per window (:func:`fit_window`); it looks at the
    docks when one is added.
    """

    def __init__(self, viewer) -> None:
        import weakref

        from qtpy.QtCore import QObject

        self._viewer = weakref.ref(viewer)
        layout = self

        class Filter(QObject):
            def eventFilter(self, obj, event):  # Qt's name
                from qtpy.QtCore import QEvent, QTimer
                from qtpy.QtWidgets import QDockWidget

                if event.type() == QEvent.Type.ChildAdded and isinstance(
                    event.child(), QDockWidget
                ):
                    QTimer.singleShot(0, layout.arrange)
                return False

        self.filter = Filter()

    def arrange(self) -> None:
        """Wrap new panels in scroll areas and tab them (see the class notes)."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget

        viewer = self._viewer()
        window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        if window is None:
            return
        try:
            docks = [d for d in window.findChildren(QDockWidget) if _is_ours(d)]
        except RuntimeError:  # the window is being torn down
            return
        for dock in docks:
            if not getattr(dock, "_factortopy_scrolls", False) and dock.widget() is not None:
                _scroll_dock(dock, window)
        by_area: dict = {}
        for dock in docks:
            if not dock.isFloating() and dock.widget() is not None:
                by_area.setdefault(window.dockWidgetArea(dock), []).append(dock)
        for area, group in by_area.items():
            if area not in (
                Qt.DockWidgetArea.RightDockWidgetArea,
                Qt.DockWidgetArea.LeftDockWidgetArea,
            ):
                continue
            main = [d for d in group if type(d._factortopy_panel).__name__ == "BrainWidget"]
            rest = [d for d in group if d not in main]
            new = [d for d in rest if not getattr(d, "_factortopy_tabbed", False)]
            stack: list = []
            for dock in rest:  # each new one onto the tabs of those before it
                if dock in new and stack:
                    window.tabifyDockWidget(stack[-1], dock)
                dock._factortopy_tabbed = True
                stack.append(dock)
            if new:
                new[-1].show()
                new[-1].raise_()
            if main and rest:
                height = max(window.height(), 2)
                window.resizeDocks(
                    [main[0], rest[-1]], [height // 2, height // 2], Qt.Orientation.Vertical
                )
            # the canvas keeps more than half the window: the docks on the other side
            # (napari's layer list) count
            other = [
                d.width()
                for d in window.findChildren(QDockWidget)
                if d.isVisible()
                and not d.isFloating()
                and window.dockWidgetArea(d) not in (area, Qt.DockWidgetArea.NoDockWidgetArea)
            ]
            room = CANVAS_SHARE * window.width() - max(other, default=0)
            width = max(MIN_DOCK, min(round(DOCK_SHARE * window.width()), round(room)))
            widest = max(d._factortopy_panel_width for d in group)
            window.resizeDocks(group, [min(widest, width)] * len(group), Qt.Orientation.Horizontal)


def _scroll_dock(dock, window) -> None:
    """Put a dock's panel into a scroll area (napari's ``inner_widget()`` still gives
    the panel)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea

    panel = dock.inner_widget()
    content = dock.widget()
    width = content.sizeHint().width()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    scroll.setWidget(content)
    dock.setWidget(scroll)
    dock.inner_widget = lambda: panel  # napari asks the dock for its panel
    dock._factortopy_panel = panel
    dock._factortopy_panel_width = width + scroll.verticalScrollBar().sizeHint().width()
    dock._factortopy_scrolls = True


def fit_window(viewer) -> None:
    """Install the window's :class:`_DockLayout` once (every panel asks) and arrange the
    panels docked so far. Nothing happens without a Qt window (headless viewers)."""
    from qtpy.QtCore import QTimer

    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands panels a proxy
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is None:
        return
    layout = getattr(window, "_factortopy_docks", None)
    if layout is None:
        layout = _DockLayout(viewer)
        window._factortopy_docks = layout
        window.installEventFilter(layout.filter)
    QTimer.singleShot(0, layout.arrange)


class StatusText(widgets.Label):
    """A status line that never widens its panel.

    It wraps at spaces; a word still wider than the panel (a long path) is elided in
    its middle and a text longer than ``max_lines`` lines at its end, redone whenever
    the panel is resized. ``value`` and the tooltip keep the whole text.

    Parameters
    ----------
    max_lines : int
        Most lines shown.
    **kwargs
        Those of :class:`magicgui.widgets.Label` (``label``, ``value``, ``tooltip`` …).
    """

    def __init__(self, max_lines: int = 4, **kwargs) -> None:
        from qtpy.QtWidgets import QSizePolicy

        self._full = ""
        self._tip = kwargs.get("tooltip") or ""
        self.max_lines = max_lines
        super().__init__(**kwargs)
        q = self.native
        q.setWordWrap(True)
        # the text never asks for width: the panel gives what it has
        q.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        q.setMinimumWidth(0)
        self._refit = _on_resize(self._render)
        q.installEventFilter(self._refit)
        self._render()

    def get_value(self) -> str:
        return self._full

    def set_value(self, value) -> None:
        self._full = "" if value is None else str(value)
        if hasattr(self, "_refit"):
            self._render()

    @property
    def shown_text(self) -> str:
        """The text as shown (elided where it does not fit)."""
        return self.native.text()

    def _render(self) -> None:
        from qtpy.QtCore import QRect, Qt

        q = self.native
        fm = q.fontMetrics()
        width = q.contentsRect().width()
        if width < 40:  # not laid out yet: a panel's usual width
            width = 300
        words = [
            fm.elidedText(w, Qt.TextElideMode.ElideMiddle, width)
            if fm.horizontalAdvance(w) > width
            else w
            for w in self._full.split(" ")
        ]
        text = " ".join(words)

        def lines(t: str) -> int:
            box = fm.boundingRect(QRect(0, 0, width, 10**6), Qt.TextFlag.TextWordWrap, t)
            return round(box.height() / max(fm.lineSpacing(), 1))

        if lines(text) > self.max_lines:
            lo, hi = 0, len(text)  # the longest start that fits, with "…"
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if lines(text[:mid] + "…") <= self.max_lines else (lo, mid - 1)
            text = text[:lo].rstrip() + "…"
        q.setText(text)
        tip = self._full if text != self._full else ""
        q.setToolTip("\n".join(t for t in (tip, self._tip) if t))

    @property
    def tooltip(self) -> str | None:
        return self._tip

    @tooltip.setter
    def tooltip(self, value: str | None) -> None:
        self._tip = value or ""
        if hasattr(self, "_refit"):
            self._render()
        if (row := self._labeled_widget()) is not None:
            row._label_widget.tooltip = value


def _on_resize(callback):
    """An event filter that calls ``callback()`` when its widget's width changes."""
    from qtpy.QtCore import QEvent, QObject

    class OnResize(QObject):
        width = -1

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Resize and obj.width() != self.width:
                self.width = obj.width()
                callback()
            return False

    return OnResize()


class ModelChoice(widgets.ComboBox):
    """Drop-down of the viewer's FactorTopy layers; follows layers added and removed.

    Its choices come from a callable, so napari's ``reset_choices()`` (called on every
    docked widget whenever a layer is added or removed) refreshes instead of emptying it.
    Every panel with one keeps the window's docks tidy (:func:`fit_window`) and has the
    modules a model's open needs imported, and pint's unit registry built, ahead and off
    the UI thread (:func:`~napari_factortopy._napari._background.import_in_background`,
    :func:`~napari_factortopy._napari._background.units_in_background`).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    label : str
    """

    def __init__(self, viewer, label: str = "model", **kwargs) -> None:
        self._viewer = viewer
        kwargs.setdefault("tooltip", "the FactorTopy model (surface layer) this panel acts on")
        super().__init__(label=label, choices=self._names, **kwargs)
        viewer.layers.events.inserted.connect(lambda e=None: self.reset_choices())
        viewer.layers.events.removed.connect(lambda e=None: self.reset_choices())
        fit_window(viewer)
        import_in_background()
        units_in_background(viewer)

    def _names(self, _widget=None) -> list[str]:
        return [ly.name for ly in factortopy_layers(self._viewer)]

    @property
    def layer(self):
        """The chosen layer, or None."""
        name = self.value
        return self._viewer.layers[name] if name in self._viewer.layers else None


@contextmanager
def keep_selection(viewer) -> Iterator[None]:
    """Layers added inside the block (ROI names, stimulus images) leave the selection as it was."""
    selection = viewer.layers.selection
    before, active = set(selection), selection.active
    try:
        yield
    finally:
        if before:
            selection.clear()
            selection.update(before)
            selection.active = active if active in before else next(iter(before))


def apply_scene(layer, scene: BrainScene, geometry: bool = False, viewer=None) -> None:
    """Push a scene's colours (and with ``geometry`` its vertices) into its layer.

    With the ``viewer`` that draws the layer, only what changed is sent to the canvas:
    the colours, and the vertices when they moved over the same faces
    (:mod:`~napari_factortopy._napari._mesh_update`), and the canvas skips the faces a
    closed brain turns away (:mod:`~napari_factortopy._napari._culling`).
    The metadata is written last: its ``metadata`` event tells the panels that follow
    the layer (Brain maps) that the map changed, so they never disagree with it.
    """
    if geometry:
        reposition(layer, scene.layer_data(), viewer)
    recolour(layer, scene.colors(), viewer)
    if viewer is not None:
        hide_back_faces(layer, viewer)
    path = layer.metadata.get(META_KEY, {}).get("path")
    layer.metadata = {
        **layer.metadata,
        META_KEY: {**layer.metadata[META_KEY], **scene_metadata(scene, path)},
    }


def share_geometry(viewer, layer, scene: BrainScene) -> None:
    """The layers shown together with ``layer`` (:func:`linked_layers`, a comparison)
    take its scene's mesh and view, and are placed side by side again."""
    linked = linked_layers(viewer, layer)
    for other in linked:
        other_scene = scene_for_layer(other)
        if same_layer(other, layer) or other_scene is None:
            continue
        other_scene.kind, other_scene.view = scene.kind, scene.view
        apply_scene(other, other_scene, geometry=True, viewer=viewer)
    if len(linked) > 1:
        place_side_by_side(linked)


def frame_brain(viewer) -> None:
    """3D, the camera on a view preset's axes (the preset turned the brain), the whole
    scene framed with a margin."""
    viewer.dims.ndisplay = 3
    cam = viewer_camera(viewer)
    cam.set_view_direction((-1.0, 0.0, 0.0), up_direction=(0.0, -1.0, 0.0))
    viewer.reset_view()
    cam.zoom *= 0.9  # a margin around the brain
    settle_scale_factor(viewer)


def settle_scale_factor(viewer) -> None:
    """Give every layer the canvas scale of the camera's new zoom now.

    napari sets each layer's ``scale_factor`` (1 / zoom) while it draws a frame; a
    Points layer that sees it change (the ROI names) then asks for another frame. After a
    view or mesh switch that second frame cost a whole redraw of the mesh (≈ 100 ms on
    a software renderer at fsaverage7). Set before the frame, the draw finds nothing
    changed and the switch is drawn once.
    """
    scale = 1 / viewer_camera(viewer).zoom
    for layer in viewer.layers:
        layer.scale_factor = scale


def show_image(widget: widgets.Image, image, width: int | None = None) -> None:
    """Put an (H, W, 3|4) image into a magicgui Image widget at a readable size."""
    h, w = image.shape[:2]
    width = width or w
    height = round(h * width / w)
    widget.set_data(image, width=int(width), height=height)
    widget.min_width, widget.min_height = int(width), height


def pick_surfaces(viewer, position, direction) -> tuple[object, Pick] | tuple[None, None]:
    """The FactorTopy layer and vertex a click ray meets first, whatever layer is selected.

    Every visible FactorTopy layer is asked, in its own data coordinates (its
    ``translate``, ``scale`` … undone with ``layer.world_to_data``), and the hit
    nearest to the camera (in world units along the ray) wins.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    position : array of shape (3,) or (ndim,)
        A point on the ray in world coordinates (napari's ``event.position``).
    direction : array of shape (3,) or (ndim,)
        The viewing direction in world coordinates (``event.view_direction``).

    Returns
    -------
    (layer, Pick) or (None, None)
    """
    p = np.asarray(position, np.float64)
    d = np.asarray(direction, np.float64)
    if d.shape != p.shape or not np.all(np.isfinite(d)) or not np.linalg.norm(d):
        return None, None
    d = d / np.linalg.norm(d)
    best = (np.inf, None, None)
    for layer in factortopy_layers(viewer):
        scene = scene_for_layer(layer)
        if not layer.visible or scene is None:
            continue
        a = np.asarray(layer.world_to_data(p), np.float64)[-3:]
        b = np.asarray(layer.world_to_data(p + d), np.float64)[-3:]
        hit = scene.hit(a, b - a)
        if hit is None:
            continue
        vertex = np.asarray(layer.data[0][hit[1]], np.float64)
        world = np.asarray(layer.data_to_world(vertex), np.float64)[-3:]
        depth = float(np.dot(world - p[-3:], d[-3:]))
        if depth < best[0]:
            best = (depth, layer, scene.describe(hit[1]))
    return (best[1], best[2]) if best[1] is not None else (None, None)


def linked_layers(viewer, layer) -> list:
    """The layers shown together with ``layer`` (a comparison), left to right.

    Layers made together carry the same ``metadata[META_KEY]["group"]``; a layer
    without a group is alone.
    """
    group = layer.metadata.get(META_KEY, {}).get("group")
    if group is None:
        return [layer]
    same = [ly for ly in factortopy_layers(viewer) if ly.metadata[META_KEY].get("group") == group]
    return sorted(same, key=lambda ly: float(np.asarray(ly.translate)[-1]))


def place_side_by_side(layers, gap: float = 20.0, start: float | None = None) -> None:
    """Translate layers along screen-right so they sit left to right with ``gap`` between.

    The first one's left edge goes to ``start`` (default: where it is now), so placing
    a group again (another view or mesh) keeps it where it was.
    """
    from napari_factortopy._napari._layers import x_span

    if not layers:
        return
    offset = x_span(layers[0])[0] if start is None else float(start)
    for ly in layers:
        verts = np.asarray(ly.data[0])
        lo, hi = float(verts[:, -1].min()), float(verts[:, -1].max())
        translate = list(ly.translate)
        translate[-1] = offset - lo
        ly.translate = translate
        offset += hi - lo + gap
