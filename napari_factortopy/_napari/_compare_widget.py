"""Clusters and compare: recompute channel clusters; two models side by side.

- **Clusters**: :func:`~napari_factortopy.core.analyses.channel_clusters` with a chosen
  count, shown as the ``clusters`` map of the selected model (the Brain maps panel
  follows).
- **Compare**: two model files' layer maps side by side under one camera, and a third
  surface with every difference the two can give
  (:func:`~napari_factortopy.core.compare.model_differences`: layer position, layer
  selector distance, scale, space distance, and the score difference when both have
  scores), one map each, chosen under "difference" (or in Brain maps › map).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._common import ModelChoice, apply_scene, place_side_by_side
from napari_factortopy._napari._layers import (
    META_KEY,
    load_scene,
    scene_for_layer,
    surface_kwargs,
)
from napari_factortopy.core.compare import model_differences
from napari_factortopy.scene.brain import CustomMap, score_label

if TYPE_CHECKING:
    import napari

__all__ = ["CompareWidget"]

DIFF_LAYER = "A − B differences"


class CompareWidget(widgets.Container):
    """Cluster count + recompute; model A / model B + compare.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.diff_scene = None
        self.model_choice = ModelChoice(viewer)
        self.n_clusters = widgets.SpinBox(
            label="clusters", value=20, min=1, max=200, tooltip="number of channel clusters"
        )
        self.n_kmeans = widgets.SpinBox(
            label="k-means centroids", value=1000, min=1, max=100000,
            tooltip="k-means centroids before the hierarchical merge (at most one per vertex)",
        )  # fmt: skip
        self.cluster_button = widgets.PushButton(
            text="Recompute clusters",
            tooltip="cluster the readout channels; show the clusters map",
        )
        self.file_a = widgets.FileEdit(label="model A", filter="*.ftopy", tooltip="a .ftopy file")
        self.file_b = widgets.FileEdit(
            label="model B", filter="*.ftopy", tooltip="a .ftopy file (e.g. a phantom's truth)"
        )
        self.score_key = widgets.ComboBox(
            label="score", choices=["r2_test", "r_test"],
            tooltip="score of the score difference (left out when a model has none)",
        )  # fmt: skip
        self.compare_button = widgets.PushButton(
            text="Compare", tooltip="both maps side by side and every difference A − B"
        )
        self.difference = widgets.ComboBox(
            label="difference", choices=self._differences,
            tooltip="which difference the third surface shows",
        )  # fmt: skip
        self.status = widgets.Label(label="status", value="")
        self.extend(
            [self.model_choice, self.n_clusters, self.n_kmeans, self.cluster_button,
             self.file_a, self.file_b, self.score_key, self.compare_button, self.difference,
             self.status]
        )  # fmt: skip
        self.cluster_button.changed.connect(self._on_clusters)
        self.compare_button.changed.connect(self._on_compare)
        self.difference.changed.connect(self._on_difference)

    def _differences(self, _widget=None) -> list[str]:
        return [] if self.diff_scene is None else list(self.diff_scene.custom)

    def _on_clusters(self, _=None) -> np.ndarray | None:
        from napari_factortopy.core.analyses import channel_clusters

        layer = self.model_choice.layer
        if layer is None:
            return None
        scene = scene_for_layer(layer)
        beta = scene.model.beta
        labels = channel_clusters(
            beta, int(self.n_clusters.value), n_kmeans=min(int(self.n_kmeans.value), len(beta))
        ).labels
        scene.clusters = labels
        scene.map_name = "clusters"
        apply_scene(layer, scene)
        self.status.value = f"{int(labels.max()) + 1} clusters over {len(labels)} vertices"
        return labels

    def _on_difference(self, name: str | None = None) -> None:
        name = name or self.difference.value
        scene = self.diff_scene
        if scene is None or name not in scene.custom or DIFF_LAYER not in self.viewer.layers:
            return
        scene.map_name = name
        apply_scene(self.viewer.layers[DIFF_LAYER], scene)

    def _on_compare(self, _=None) -> list | None:
        from napari.utils.notifications import show_warning

        from napari_factortopy.core.fitted_model import FittedModel
        from napari_factortopy.core.modelfile import ModelFileError
        from napari_factortopy.data.surfaces import SurfaceError

        paths = [Path(str(self.file_a.value)), Path(str(self.file_b.value))]
        try:
            models = [FittedModel.load(p) for p in paths]
            scenes = [load_scene(m) for m in models]
            diff_scene = load_scene(models[0])
        except (ModelFileError, SurfaceError, KeyError, OSError) as exc:
            show_warning(f"cannot compare: {exc}")
            self.status.value = f"cannot compare: {exc}"
            return None
        diffs, left_out = model_differences(*models, score_key=self.score_key.value)
        for name, (values, signed) in diffs.items():
            cmap = "RdBu_r" if signed else "viridis"
            label = name.replace(self.score_key.value, score_label(self.score_key.value))
            diff_scene.custom[name] = CustomMap.from_values(values, cmap, signed, label)
        diff_scene.map_name = next(iter(diffs))
        for name in ("A: ", "B: ", DIFF_LAYER):  # a second comparison replaces the first
            for ly in [ly for ly in self.viewer.layers if ly.name.startswith(name)]:
                self.viewer.layers.remove(ly)
        self.diff_scene = diff_scene
        layers, offset = [], 0.0
        names = [f"A: {paths[0].stem}", f"B: {paths[1].stem}", DIFF_LAYER]
        for scene, name, path in zip(
            [*scenes, diff_scene], names, [*paths, paths[0]], strict=True
        ):
            verts, faces = scene.layer_data()
            kwargs = surface_kwargs(scene, name, str(path))
            kwargs["metadata"][META_KEY]["group"] = "compare"  # views switch together
            layers.append(
                self.viewer.add_surface((verts, faces), translate=(0, 0, offset), **kwargs)
            )
            offset += float(np.ptp(verts[:, 2])) + 20.0
        place_side_by_side(layers)
        self.difference.reset_choices()
        with self.difference.changed.blocked():
            self.difference.value = diff_scene.map_name
        self.viewer.dims.ndisplay = 3
        self.viewer.reset_view()
        shared = int(np.isfinite(next(iter(diffs.values()))[0]).sum())
        text = f"{len(diffs)} differences over {shared} shared vertices"
        if left_out:
            text += "; left out: " + "; ".join(f"{k} ({why})" for k, why in left_out.items())
        self.status.value = text
        self.left_out = left_out
        return layers
