"""Model files → napari layers (used by the reader, the widgets and the sample data).

One opaque ``Surface`` layer per model: both hemispheres side by side, the chosen
map baked into ``vertex_colors`` with ``shading="none"``. The layer's metadata
(``metadata["factortopy"]``) carries the model path and the current map's numbers,
so the widgets can find the model again and the writer can save the map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import napari_factortopy  # noqa: F401  (installs the Mesa/triton guard first)
from napari_factortopy._napari._surface import BrainScene, load_meshset

__all__ = [
    "META_KEY",
    "load_scene",
    "model_layers",
    "scene_for_layer",
    "scene_metadata",
    "surface_kwargs",
]

#: Key of the layer metadata entry written here.
META_KEY = "factortopy"

#: Scenes of the layers shown in this process, by ``metadata[META_KEY]["scene_id"]``.
SCENES: dict[int, BrainScene] = {}


def _notify(message: str, level: str = "warning") -> None:
    try:
        from napari.utils.notifications import show_info, show_warning
    except ImportError:  # pragma: no cover - napari is there when this runs in napari
        print(message)
        return
    (show_warning if level == "warning" else show_info)(message)


def load_scene(model, loader=None, notify=_notify) -> BrainScene:
    """A :class:`BrainScene` for ``model`` on its mesh, or on fsaverage5 if it is missing.

    When the model's mesh is not on this machine and every hemisphere's vertex ids fit
    fsaverage5 (ids < 10242 keep their meaning on the coarser mesh), the model is shown
    on fsaverage5, keeping the vertices that exist there, and the user is told so.

    Raises
    ------
    napari_factortopy.data.surfaces.SurfaceError
        When the mesh is missing and no fallback applies (the message says which).
    """
    from napari_factortopy.data.surfaces import MESH_SIZES, SurfaceError

    kwargs = {} if loader is None else {"loader": loader}
    scene = BrainScene(model, **kwargs)
    try:
        scene.meshes()
        return scene
    except SurfaceError as exc:
        small = MESH_SIZES["fsaverage5"]
        if model.mesh == "fsaverage5" or not np.any(np.asarray(model.vertex_ids) < small):
            raise SurfaceError(
                f"this model was fitted on {model.mesh}, which is not on this machine ({exc}); "
                "none of its vertices exists on fsaverage5, so it cannot be shown"
            ) from exc
        scene = BrainScene(model, mesh_name="fsaverage5", **kwargs)
        dropped = scene.restrict_to(small)
        notify(
            f"{model.mesh} meshes are not on this machine; showing the model on fsaverage5 "
            f"({model.n_vertices - dropped} of {model.n_vertices} modelled vertices exist "
            f"there). Point $SUBJECTS_DIR at a FreeSurfer {model.mesh} folder to see all."
        )
        return scene


def scene_metadata(scene: BrainScene, path: str | None = None) -> dict:
    """The layer metadata entry for a scene's current map (see the module notes)."""
    values, names = scene.values()
    SCENES[id(scene)] = scene
    return {
        "scene_id": id(scene),
        "path": path,
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
    """Layer data tuples for one ``.ftopy`` file: the layer map on an inflated mesh.

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
    from napari_factortopy.core.fitted import FittedModel
    from napari_factortopy.data.surfaces import SurfaceError

    path = os.fspath(path)
    model = FittedModel.load(path)
    try:
        scene = load_scene(model, loader=loader or load_meshset)
    except SurfaceError as exc:
        _notify(str(exc))
        return []
    name = Path(path).stem
    verts, faces = scene.layer_data()
    return [((verts, faces), surface_kwargs(scene, name, path), "surface")]


def scene_for_layer(layer) -> BrainScene | None:
    """The :class:`BrainScene` behind a layer made here, or None for other layers.

    Rebuilt from the model path in the metadata when this process has not seen it
    (e.g. a layer restored from a saved session).
    """
    meta = getattr(layer, "metadata", {}).get(META_KEY)
    if not meta:
        return None
    scene = SCENES.get(meta.get("scene_id"))
    if scene is None and meta.get("path") and Path(meta["path"]).is_file():
        from napari_factortopy.core.fitted import FittedModel

        scene = load_scene(FittedModel.load(meta["path"]))
        for key in ("kind", "view", "map", "layer_index"):
            if key in meta:
                setattr(scene, "map_name" if key == "map" else key, meta[key])
        SCENES[id(scene)] = scene
    return scene
