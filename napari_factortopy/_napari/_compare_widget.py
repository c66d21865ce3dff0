"""Clusters and compare: recompute channel clusters; two models side by side.

- **Clusters**: :func:`~napari_factortopy.core.analyses.channel_clusters` with a chosen
  count, shown as the ``clusters`` map of the selected model (the Brain maps panel
  follows).
- **Compare**: two model files' layer maps side by side under one camera, and a third
  surface with every difference the two can give
  (:func:`~napari_factortopy.core.compare.model_differences`: layer position, layer
  selector distance, scale, space distance, and the score difference when both have
  scores), one map each, chosen under "difference" (or in Brain maps › map). A baseline
  (kind ``"baseline"``) takes part with its real maps only (differences of its filler
  selectors are left out, named in the status), the layer names say the method
  (a ridge best-layer map against FactorTopy's layer map), and a scatter of the two
  models' per-vertex scores on their shared vertices is drawn in the panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._background import busy_label, run_in_background
from napari_factortopy._napari._common import (
    ModelChoice,
    StatusText,
    apply_scene,
    factortopy_layers,
    place_side_by_side,
    show_image,
)
from napari_factortopy._napari._layers import (
    GAP,
    META_KEY,
    keep_models_apart,
    load_scene,
    scene_for_layer,
    surface_kwargs,
    x_span,
)
from napari_factortopy._napari._names import label_models
from napari_factortopy.core.compare import model_differences
from napari_factortopy.scene.brain import CustomMap, method_name, real_maps, score_label
from napari_factortopy.scene.map_panel import cluster_labels

if TYPE_CHECKING:
    import napari

__all__ = ["CompareWidget", "score_scatter", "shared_scores"]

#: Selector maps each difference is computed from (left out when one is a filler).
_NEEDS = {
    "layer position A − B": "layer",
    "layer selector distance": "layer",
    "scale A − B": "scale",
    "space distance": "space",
}


def shared_scores(a, b, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Both models' ``scores[key]`` on the vertices they share (A's order)."""

    def keys(m):
        hemi = np.arange(m.n_vertices) >= m.n_lh
        return np.asarray(m.vertex_ids, np.int64) * 2 + hemi

    ka, kb = keys(a), keys(b)
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    order = np.argsort(ia)
    ia, ib = ia[order], ib[order]
    return (np.asarray(a.scores[key], np.float64)[ia], np.asarray(b.scores[key], np.float64)[ib])


def score_scatter(x, y, xlabel: str, ylabel: str, size=(240, 240)) -> np.ndarray:
    """A small scatter of per-vertex scores (B against A) with the identity line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0.2, 0.18, 0.75, 0.75])
    ok = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=3, alpha=0.5, linewidths=0)
    if ok.any():
        lo = float(min(x[ok].min(), y[ok].min()))
        hi = float(max(x[ok].max(), y[ok].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.6)
    ax.set_xlabel(xlabel, fontsize=6)
    ax.set_ylabel(ylabel, fontsize=6)
    ax.tick_params(labelsize=5)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


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
        self.status = StatusText(label="status", value="")
        self.busy = busy_label()  # "clustering the channels …"
        self.worker = None  # the clustering running, if any
        self.scatter = widgets.Image(
            label="scores", visible=False, tooltip="per-vertex scores: B against A"
        )
        self.scatter_image = None
        self.scores = None
        self.extend(
            [self.model_choice, self.n_clusters, self.n_kmeans, self.cluster_button,
             self.busy, self.file_a, self.file_b, self.score_key, self.compare_button,
             self.difference, self.status, self.scatter]
        )  # fmt: skip
        keep_models_apart(viewer)
        label_models(viewer)  # a comparison's brains carry their names
        self.cluster_button.changed.connect(self._on_clusters)
        self.compare_button.changed.connect(self._on_compare)
        self.difference.changed.connect(self._on_difference)

    def _differences(self, _widget=None) -> list[str]:
        return [] if self.diff_scene is None else list(self.diff_scene.custom)

    def _on_clusters(self, _=None):
        """Recompute the chosen model's channel clusters on a worker thread (seconds at
        40,000 vertices) and show them as its ``clusters`` map; returns the worker."""
        layer = self.model_choice.layer
        if layer is None or self.worker is not None:
            return None
        scene = scene_for_layer(layer)
        k, k_means = int(self.n_clusters.value), int(self.n_kmeans.value)
        self.status.value = ""
        self.worker = run_in_background(
            lambda m=scene.model: cluster_labels(m, k, k_means),
            lambda labels: self._clusters_ready(layer, scene, labels),
            self.busy,
            f"clustering the channels of {scene.model.n_vertices:,} vertices into {k}",
            finished=lambda: setattr(self, "worker", None),
        )
        return self.worker

    def _clusters_ready(self, layer, scene, labels: np.ndarray) -> None:
        scene.clusters = labels
        scene.map_name = "clusters"
        apply_scene(layer, scene, viewer=self.viewer)
        self.status.value = f"{int(labels.max()) + 1} clusters over {len(labels)} vertices"

    def _on_difference(self, name: str | None = None) -> None:
        name = name or self.difference.value
        scene = self.diff_scene
        if scene is None or name not in scene.custom or DIFF_LAYER not in self.viewer.layers:
            return
        scene.map_name = name
        apply_scene(self.viewer.layers[DIFF_LAYER], scene, viewer=self.viewer)

    def _on_compare(self, _=None) -> list | None:
        from napari.utils.notifications import show_warning

        from napari_factortopy.core.fitted_model import FittedModel
        from napari_factortopy.core.modelfile import ModelFileError
        from napari_factortopy.data.surfaces import SurfaceError

        paths = [Path(str(self.file_a.value)), Path(str(self.file_b.value))]
        missing = _unchosen(paths)
        if missing:
            show_warning(f"cannot compare: {missing}")
            self.status.value = f"cannot compare: {missing}"
            return None
        try:
            models = [FittedModel.load(p) for p in paths]
            scenes = [load_scene(m) for m in models]
            diff_scene = load_scene(models[0])
        except (ModelFileError, SurfaceError, KeyError, OSError) as exc:
            show_warning(f"cannot compare: {exc}")
            self.status.value = f"cannot compare: {exc}"
            return None
        diffs, left_out = model_differences(*models, score_key=self.score_key.value)
        for name, need in _NEEDS.items():  # a baseline's filler selectors say nothing
            fillers = [
                "AB"[i] for i, m in enumerate(models)
                if real_maps(m) is not None and need not in real_maps(m)
            ]  # fmt: skip
            if name in diffs and fillers:
                del diffs[name]
                left_out[name] = f"{' and '.join(fillers)} has no {need} map"
        if not diffs:
            self.status.value = "nothing to compare: " + "; ".join(left_out.values())
            return None
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
        from napari_factortopy._napari._layers import first_map

        # right of the models already shown, never over them
        shown = [ly for ly in factortopy_layers(self.viewer) if ly.visible]
        start = max((x_span(ly)[1] for ly in shown), default=-GAP) + GAP

        for scene in scenes:
            first_map(scene)
        tags = [f" [{method_name(m)}]" if method_name(m) else "" for m in models]
        names = [f"A: {paths[0].stem}{tags[0]}", f"B: {paths[1].stem}{tags[1]}", DIFF_LAYER]
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
        place_side_by_side(layers, GAP, start=start)
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
        self._show_scatter(models, [f"{p.stem}{t}" for p, t in zip(paths, tags, strict=True)])
        return layers

    def _show_scatter(self, models, names) -> None:
        key = self.score_key.value
        if not all(key in m.scores for m in models):
            self.scatter.visible, self.scores, self.scatter_image = False, None, None
            return
        a, b = shared_scores(*models, key)
        label = score_label(key)
        self.scores = (a, b)
        self.scatter_image = score_scatter(
            a, b, f"A {names[0]}: {label}", f"B {names[1]}: {label}"
        )
        show_image(self.scatter, self.scatter_image)
        self.scatter.visible = True


def _unchosen(paths: list[Path]) -> str:
    """What is wrong with model fields left blank or pointing at a folder ("" if none)."""
    problems = []
    for which, path in zip("AB", paths, strict=True):
        if str(path) in ("", "."):
            problems.append(f"choose model {which} (a .ftopy file)")
        elif path.is_dir():
            problems.append(f"model {which} is a folder ({path}); choose a .ftopy file")
    return "; ".join(problems)
