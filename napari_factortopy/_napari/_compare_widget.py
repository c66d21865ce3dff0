"""Clusters and compare: recompute channel clusters; two models side by side.

- **Clusters**: :func:`~napari_factortopy.core.analyses.channel_clusters` with a chosen
  count, shown as the ``clusters`` map of the selected model.
- **Compare**: two model files' layer maps side by side under one camera, and a third
  surface with their score difference (A − B) on the vertices both modelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._brain_widget import ModelChoice, apply_scene
from napari_factortopy._napari._layers import load_scene, scene_for_layer, surface_kwargs
from napari_factortopy.core.compare import score_difference

if TYPE_CHECKING:
    import napari

__all__ = ["CompareWidget"]


class CompareWidget(widgets.Container):
    """Cluster count + recompute; model A / model B + compare.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.model_choice = ModelChoice(viewer)
        self.n_clusters = widgets.SpinBox(label="clusters", value=20, min=1, max=200)
        self.n_kmeans = widgets.SpinBox(label="k-means centroids", value=1000, min=1, max=100000)
        self.cluster_button = widgets.PushButton(text="Recompute clusters")
        self.file_a = widgets.FileEdit(label="model A", filter="*.ftopy")
        self.file_b = widgets.FileEdit(label="model B", filter="*.ftopy")
        self.score_key = widgets.ComboBox(label="score", choices=["r2_test", "r_test"])
        self.compare_button = widgets.PushButton(text="Compare")
        self.status = widgets.Label(label="status", value="")
        self.extend(
            [
                self.model_choice,
                self.n_clusters,
                self.n_kmeans,
                self.cluster_button,
                self.file_a,
                self.file_b,
                self.score_key,
                self.compare_button,
                self.status,
            ]
        )
        self.cluster_button.changed.connect(self._on_clusters)
        self.compare_button.changed.connect(self._on_compare)

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

    def _on_compare(self, _=None) -> list | None:
        from napari.utils.notifications import show_warning

        from napari_factortopy.core import colours
        from napari_factortopy.core.fitted_model import FittedModel
        from napari_factortopy.core.modelfile import ModelFileError
        from napari_factortopy.data.surfaces import SurfaceError

        paths = [Path(str(self.file_a.value)), Path(str(self.file_b.value))]
        try:
            models = [FittedModel.load(p) for p in paths]
            scenes = [load_scene(m) for m in models]
            diff, _ = score_difference(*models, key=self.score_key.value)
        except (ModelFileError, SurfaceError, KeyError, OSError) as exc:
            show_warning(f"cannot compare: {exc}")
            self.status.value = f"cannot compare: {exc}"
            return None
        lim = float(np.nanmax(np.abs(diff))) if np.any(np.isfinite(diff)) else 1.0
        diff_scene = load_scene(models[0])
        diff_scene.custom["score difference"] = (
            colours.weight_rgba(diff, -(lim or 1), lim or 1, cmap="RdBu_r"),
            diff,
        )
        diff_scene.map_name = "score difference"
        layers, offset = [], 0.0
        names = [f"A: {paths[0].stem}", f"B: {paths[1].stem}", "score difference A − B"]
        for scene, name, path in zip(
            [*scenes, diff_scene], names, [*paths, paths[0]], strict=True
        ):
            verts, faces = scene.layer_data()
            width = float(np.ptp(verts[:, 2]))
            kwargs = surface_kwargs(scene, name, str(path))
            layers.append(
                self.viewer.add_surface((verts, faces), translate=(0, 0, offset), **kwargs)
            )
            offset += width + 20.0
        self.viewer.dims.ndisplay = 3
        self.viewer.reset_view()
        self.status.value = (
            f"mean {self.score_key.value} difference "
            f"{np.nanmean(diff):+.4f} over {int(np.isfinite(diff).sum())} "
            "shared vertices"
        )
        return layers
