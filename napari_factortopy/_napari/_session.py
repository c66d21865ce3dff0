"""Save and restore the workbench's picture (:class:`~napari_factortopy.scene.session.Session`).

:func:`from_viewer` reads the models shown, their maps, mesh, view, layer slider and
the camera off a viewer; :func:`apply` opens the same model files through the reader
and sets everything back, so the canvas shows the same picture. :func:`save_session`
and :func:`restore_session` are the Brain maps panel's two buttons (a file in, a file
out, a warning when a file cannot be read); :class:`SessionControls` are those buttons
with their file field.
"""

from __future__ import annotations

from napari_factortopy._napari._common import apply_scene, factortopy_layers, viewer_camera
from napari_factortopy._napari._layers import META_KEY, scene_for_layer
from napari_factortopy._napari._overlays import show_roi_names
from napari_factortopy.scene.session import Camera, LayerState, Session

__all__ = ["SessionControls", "apply", "from_viewer", "restore_session", "save_session"]

PLUGIN = "napari-factortopy"


def from_viewer(viewer, active: str | None = None) -> Session:
    """The session of a viewer's FactorTopy layers (those read from a model file)."""
    states = []
    for layer in factortopy_layers(viewer):
        scene = scene_for_layer(layer)
        path = layer.metadata[META_KEY].get("path") or (scene and scene.model_path)
        if scene is None or not path or scene.map_name in scene.custom:
            continue  # a map computed in the session (a prediction) is not in any file
        states.append(
            LayerState(
                path=str(path),
                name=layer.name,
                map=scene.map_name,
                layer_index=scene.layer_index,
                score_key=scene.score_key,
                kind=scene.kind,
                view=scene.view,
                outlines=scene.outlines,
                visible=bool(layer.visible),
                translate=tuple(float(t) for t in layer.translate[-3:]),
            )
        )
    cam = viewer_camera(viewer)
    camera = Camera(
        center=tuple(cam.center),
        zoom=cam.zoom,
        angles=tuple(cam.angles),
        perspective=cam.perspective,
    )
    return Session(tuple(states), active, camera, int(viewer.dims.ndisplay))


def apply(session: Session, viewer) -> list:
    """Show ``session`` in ``viewer``: the FactorTopy layers there are replaced.

    Returns the new layers, in the session's order.
    """
    for layer in list(factortopy_layers(viewer)):
        viewer.layers.remove(layer)
    layers = []
    for state in session.layers:
        (layer,) = viewer.open(state.path, plugin=PLUGIN)
        scene = scene_for_layer(layer)
        scene.kind, scene.view = state.kind, state.view
        scene.map_name, scene.layer_index = state.map, state.layer_index
        scene.score_key, scene.outlines = state.score_key, state.outlines
        if state.map == "clusters" and scene.clusters is None:  # as Brain maps computes it
            from napari_factortopy.scene.map_panel import cluster_labels

            scene.clusters = cluster_labels(scene.model)
        layer.name = state.name
        layer.translate = state.translate
        layer.visible = state.visible
        apply_scene(layer, scene, geometry=True)
        show_roi_names(viewer, layer, scene)
        layers.append(layer)
    viewer.dims.ndisplay = session.ndisplay
    cam = session.camera
    camera = viewer_camera(viewer)
    camera.angles = cam.angles
    camera.center = cam.center
    camera.zoom = cam.zoom
    camera.perspective = cam.perspective
    return layers


def save_session(viewer, path: str, active: str | None = None) -> Session:
    """Write the viewer's picture (:func:`from_viewer`) to ``path``; returns the Session."""
    session = from_viewer(viewer, active=active)
    session.save(path)
    return session


def restore_session(viewer, path: str) -> tuple[Session, list] | None:
    """Show the session saved at ``path`` in ``viewer`` (:func:`apply`); returns it with
    the new layers, or None (after a warning) when the file cannot be read."""
    from napari.utils.notifications import show_warning

    try:
        session = Session.load(path)
    except (OSError, ValueError, TypeError) as exc:
        show_warning(f"cannot restore the session: {exc}")
        return None
    return session, apply(session, viewer)


class SessionControls:
    """The session file field and its Save / Restore buttons (the Brain maps panel's).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    active : callable
        Returns the name of the model the panel shows (saved as the active one).
    restored : callable
        Called with the restored Session after a restore (the panel re-syncs).
    """

    def __init__(self, viewer, active, restored) -> None:
        from magicgui import widgets

        self.viewer, self._active, self._restored = viewer, active, restored
        self.file = widgets.FileEdit(label="session", mode="w", filter="*.json")
        self.save_button = widgets.PushButton(text="Save session")
        self.restore_button = widgets.PushButton(text="Restore session")
        self.buttons = widgets.Container(
            layout="horizontal", labels=False, label="",
            widgets=[self.save_button, self.restore_button],
        )  # fmt: skip
        self.save_button.changed.connect(lambda _=None: self.save())
        self.restore_button.changed.connect(lambda _=None: self.restore())

    def save(self, path=None) -> Session:
        """Write the current picture to the session file; returns the Session."""
        return save_session(self.viewer, path or str(self.file.value), active=self._active())

    def restore(self, path=None) -> list | None:
        """Reopen the session file's models and picture; returns the new layers."""
        restored = restore_session(self.viewer, path or str(self.file.value))
        if restored is None:  # unreadable: a warning said why
            return None
        session, layers = restored
        self._restored(session)
        return layers
