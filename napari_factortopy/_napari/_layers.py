"""Model files → napari layers (used by the reader, the widgets and the sample data).

One opaque ``Surface`` layer per model: both hemispheres side by side, the chosen
map baked into ``vertex_colors`` with ``shading="none"``. The layer's metadata
(``metadata["factortopy"]``) carries the :class:`BrainScene` itself (``"scene"``),
the model path and the current map's numbers, so the widgets find the scene on the
layer (no registry: the scene lives and dies with its layer) and the writer can
save the map.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_factortopy.scene.brain import (
    BrainScene,
    convergence_line,
    load_meshset,
    method_name,
)
from napari_factortopy.scene.brain import load_scene as _load_scene

__all__ = [
    "GAP",
    "META_KEY",
    "first_map",
    "keep_models_apart",
    "load_scene",
    "model_layers",
    "scene_for_layer",
    "scene_metadata",
    "surface_kwargs",
    "unfinished",
    "x_span",
]

#: Key of the layer metadata entry written here.
META_KEY = "factortopy"

#: Marked on the name of a layer whose model did not converge.
UNFINISHED = " [unfinished]"
#: What a model layer's name ends with when its selectors are degenerate.
DEGENERATE = " [degenerate]"

#: Gap between models shown side by side (world units: mm of the mesh).
GAP = 20.0


def x_span(layer) -> tuple[float, float]:
    """A surface layer's extent along the world's last axis (screen-right in napari's
    default 3D view), its ``scale`` and ``translate`` applied."""
    import numpy as np

    x = np.asarray(layer.data[0])[:, -1] * float(layer.scale[-1]) + float(layer.translate[-1])
    return float(x.min()), float(x.max())


class _KeepApart:
    """Moves a model layer added to a viewer that already shows models to their right,
    :data:`GAP` apart, and frames all of them (keeping the camera's angles): a second
    model, a training result or a comparison never lies over the first. Layers of a
    group (a comparison) are placed by their panel. One per viewer
    (:func:`keep_models_apart`)."""

    def __init__(self, viewer) -> None:
        import weakref

        self._viewer = weakref.ref(viewer)

    def __call__(self, event) -> None:
        viewer, layer = self._viewer(), event.value
        meta = getattr(layer, "metadata", {}).get(META_KEY)
        if viewer is None or not meta or meta.get("group") is not None:
            return
        others = [
            ly
            for ly in viewer.layers
            if ly is not layer and ly.visible and META_KEY in getattr(ly, "metadata", {})
        ]
        if not others:
            return
        right = max(x_span(ly)[1] for ly in others)
        lo = x_span(layer)[0] - float(layer.translate[-1])
        translate = list(layer.translate)
        translate[-1] = right + GAP - lo
        layer.translate = translate
        viewer.reset_view(reset_camera_angle=False)


def keep_models_apart(viewer=None) -> None:
    """Install :class:`_KeepApart` on ``viewer`` (default: napari's current viewer) once."""
    if viewer is None:
        try:
            from napari import current_viewer

            viewer = current_viewer()
        except ImportError:  # pragma: no cover - napari is there when this runs in napari
            return
        if viewer is None:
            return
    emitter = viewer.layers.events.inserted
    if not any(isinstance(cb, _KeepApart) for cb in emitter.callbacks):
        emitter.connect(_KeepApart(viewer))


def _notify(message: str, level: str = "warning") -> None:
    try:
        from napari.utils.notifications import show_info, show_warning
    except ImportError:  # pragma: no cover - napari is there when this runs in napari
        print(message)
        return
    (show_warning if level == "warning" else show_info)(message)


def load_scene(model, loader=None, notify=_notify) -> BrainScene:
    """:func:`napari_factortopy.scene.brain.load_scene`, telling the user in napari."""
    return _load_scene(model, loader=loader, notify=notify)


def scene_metadata(scene: BrainScene, path: str | None = None) -> dict:
    """The layer metadata entry for a scene's current map (see the module notes)."""
    values, names = scene.values()
    if path is not None and scene.model_path is None:
        scene.model_path = str(path)
    return {
        "scene": scene,
        "path": path if path is not None else scene.model_path,
        "map": scene.map_name,
        "layer_index": scene.layer_index,
        "kind": scene.kind,
        "view": scene.view,
        "mesh": scene.mesh_name,
        "n_lh_mesh": scene.meshes().n("lh"),
        "values": values,
        "label_names": names,
    }


def surface_kwargs(scene: BrainScene, name: str, path: str | None = None) -> dict:
    """Keyword arguments of the napari Surface layer showing ``scene``."""
    return {
        "name": name,
        "vertex_colors": scene.colors(),
        "shading": "none",
        "blending": "opaque",
        "metadata": {META_KEY: scene_metadata(scene, path)},
    }


def model_layers(path: str | os.PathLike, loader=None) -> list[tuple]:
    """Layer data tuples for one ``.ftopy`` file: its first map on an inflated mesh.

    The layer is named after the file, with the method in brackets for a baseline or
    an ablation (``"ridge.ftopy"`` → ``"ridge [ridge]"``); a baseline without a real
    layer map opens on its first real map.

    Parameters
    ----------
    path : path
    loader : callable (name, kind) -> MeshSet, optional
        Mesh source (default: this machine's fsaverage meshes, with the fsaverage5
        fallback of :func:`load_scene`).

    Returns
    -------
    list of (data, kwargs, "surface")
        ``data = (vertices (n, 3), faces (m, 3))`` with ``vertex_colors (n, 4)``.
        Empty when the model cannot be shown (the user is told why).
    """
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.data.surfaces import SurfaceError

    path = os.fspath(path)
    model = FittedModel.load(path)
    keep_models_apart()  # the viewer it opens in: beside the models shown there
    try:
        scene = load_scene(model, loader=loader or load_meshset)
    except SurfaceError as exc:
        _notify(str(exc))
        return []
    scene.model_path = path
    first_map(scene)
    method = method_name(model)
    name = Path(path).stem + (f" [{method}]" if method else "")
    name += UNFINISHED if unfinished(model) else ""
    name += DEGENERATE if scene.degenerate() else ""
    verts, faces = scene.layer_data()
    return [((verts, faces), surface_kwargs(scene, name, path), "surface")]


def first_map(scene: BrainScene) -> None:
    """Show the layer map, or a baseline's first real map when it has no layer map."""
    from napari_factortopy.scene.brain import available_maps

    maps = available_maps(scene.model)
    if scene.map_name not in maps and maps:
        scene.map_name = maps[0]


def unfinished(model) -> str | None:
    """:func:`~napari_factortopy.scene.brain.convergence_line`: why a model is unfinished."""
    return convergence_line(model)


def scene_for_layer(layer) -> BrainScene | None:
    """The :class:`BrainScene` behind a layer made here, or None for other layers.

    Rebuilt from the model path in the metadata when this process has not seen it
    (e.g. a layer restored from a saved session).
    """
    meta = getattr(layer, "metadata", {}).get(META_KEY)
    if not meta:
        return None
    scene = meta.get("scene")
    if isinstance(scene, BrainScene):
        return scene
    if meta.get("path") and Path(meta["path"]).is_file():
        from napari_factortopy.core.fitted_model import FittedModel

        scene = load_scene(FittedModel.load(meta["path"]))
        scene.model_path = meta["path"]
        for key in ("kind", "view", "map", "layer_index"):
            if key in meta:
                setattr(scene, "map_name" if key == "map" else key, meta[key])
        layer.metadata = {**layer.metadata, META_KEY: {**meta, "scene": scene}}
        return scene
    return None
