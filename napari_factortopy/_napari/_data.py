"""A shown model's data (stimuli, feature cache), found beside a moved model file.

The model file records its data folders as absolute paths. :func:`stimuli_for`
finds them (:func:`~napari_factortopy.data.stimuli.dataset_info`: as recorded, beside
the model file, or in a folder the user chose with "locate data folder…") and says
once per model, naming the path, when they are not found.
"""

from __future__ import annotations

from napari_factortopy.data.stimuli import dataset_info, stimulus_loader

__all__ = ["missing_data", "stimuli_for"]


def missing_data(scene, notify: bool = True) -> list[str]:
    """The recorded data paths of a scene's model that are not found (told once).

    Parameters
    ----------
    scene : BrainScene
        ``scene.model_path`` and ``scene.data_root`` help the search.
    notify : bool
        Show a napari warning the first time a path is missed for this scene.
    """
    info = dataset_info(scene.model, scene.model_path, scene.data_root)
    missing = list(info.get("missing", []))
    new = [p for p in missing if p not in scene.told]
    if notify and new:
        from napari.utils.notifications import show_warning

        show_warning(
            f"data of {scene.model_path or 'this model'} not found: {', '.join(new)} "
            "(nor beside the model file). Use 'locate data folder…' in the Stimuli panel."
        )
        scene.told.update(new)
    return missing


def stimuli_for(scene, notify: bool = True):
    """:func:`~napari_factortopy.data.stimuli.stimulus_loader` for a shown model.

    Returns ``(load, n_images)`` or None; tells the user once when the data is missing.
    """
    missing_data(scene, notify)
    return stimulus_loader(scene.model, scene.model_path, scene.data_root)
