"""What the Brain maps panel offers and draws for a scene, without Qt: the maps and
scores to choose from, what every control shows (:func:`panel_state`), the next or
previous map, a map's first showing (its score, its channel clusters), and the shown
map's legend (cached) with its tooltip.

The panel (:mod:`napari_factortopy._napari._brain_widget`) puts what these return into
its controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import plots as _plots
from .brain import (
    ENSEMBLE_MAPS,
    MAPS,
    BrainScene,
    available_maps,
    convergence_line,
    ensemble_map,
    hemisphere_caption,
    method_name,
)

__all__ = [
    "FLAT_TIP",
    "NO_FLAT_TIP",
    "TIPS",
    "LegendCache",
    "PanelState",
    "cluster_labels",
    "legend_tooltip",
    "map_names",
    "needs_clusters",
    "panel_state",
    "score_keys",
    "show_map",
    "stepped",
]

#: The panel's controls' tooltips, by the panel's attribute name.
TIPS = {
    "method": "the comparison method or FactorTopy ablation behind these maps",
    "map_choice": "what the surface shows",
    "layer_slider": "layer whose weight π is shown",
    "score_choice": "which of the model's per-vertex scores is shown: R² and r (raw), and "
    "with a noise ceiling nc_test (noise-normalised score %) and noise_ceiling (%)",
    "legend": "legend of the shown map",
    "mesh_choice": "surface the map is drawn on (flat: the flat patch)",
    "hemispheres": "which hemisphere the canvas shows on its left and on its right in "
    "this view (from below or from the front the left hemisphere is on the right)",
    "outlines": "ROI borders in black, with ROI names",
    "session_file": "a session file: models, map, mesh, view, camera (JSON)",
    "save_session_button": "write the models, map, mesh, view and camera",
    "restore_session_button": "reopen a saved session's models and picture",
}
#: The flat view button's tooltip when the mesh has a flat patch on this machine.
FLAT_TIP = "the flat patch of both hemispheres (FreeSurfer ?h.*.patch.flat)"
#: Its tooltip (and the warning of the flat view) when it has none.
NO_FLAT_TIP = "no flat patch of this mesh on this machine: the flat view is off"


def map_names(scene: BrainScene | None) -> list[str]:
    """The maps the scene's model offers, then its custom maps (every map without one)."""
    if scene is None:
        return list(MAPS)
    maps = available_maps(scene.model)
    return maps + [k for k in scene.custom if k not in maps]


def score_keys(scene: BrainScene | None) -> list[str]:
    """The model's per-vertex scores (none without a scene)."""
    return [] if scene is None else list(scene.model.scores)


@dataclass(frozen=True)
class PanelState:
    """What each control of the Brain maps panel shows for one scene.

    Attributes
    ----------
    maps, scores : tuple of str
        The map and score drop-downs' choices, in order (:func:`map_names`,
        :func:`score_keys`).
    map_name, kind : str
        The chosen map and mesh kind.
    layer : int
        The layer slider's value, 1-based (the scene's ``layer_index + 1``), at most
        ``n_layers``.
    score_key : str or None
        The score drop-down's value; None when the scene's score is not among the
        model's scores (the drop-down keeps its value).
    outlines : bool
    hemispheres : str
        "L | R" or "R | L": the hemispheres on the screen's left and right.
    flat : bool
        Whether the flat view can be shown (the mesh's flat patch is on this machine).
    unfinished : str or None
        Why the model is unfinished (its convergence line), None when it is not.
    degenerate : str or None
        Why its selectors are degenerate (:meth:`BrainScene.degenerate`), None when
        they chose something.
    method : str or None
        The comparison method or ablation behind the maps, None for FactorTopy.
    """

    maps: tuple[str, ...]
    scores: tuple[str, ...]
    n_layers: int
    map_name: str
    kind: str
    layer: int
    score_key: str | None
    outlines: bool
    hemispheres: str
    flat: bool
    unfinished: str | None
    method: str | None
    degenerate: str | None = None

    @property
    def layer_visible(self) -> bool:
        """The layer slider shows with the layer-weights map only."""
        return self.map_name == "layer weights"

    @property
    def score_visible(self) -> bool:
        """The score drop-down shows with the score map only."""
        return self.map_name == "score"

    @property
    def flat_tooltip(self) -> str:
        return FLAT_TIP if self.flat else NO_FLAT_TIP

    @property
    def banner(self) -> str:
        """The panel's warning lines ("" for a finished model with working selectors)."""
        lines = [f"⚠ unfinished model: {self.unfinished}"] if self.unfinished else []
        if self.degenerate:
            lines.append(f"⚠ degenerate selectors: {self.degenerate}")
        return "\n".join(lines)


def panel_state(scene: BrainScene) -> PanelState:
    """What the panel's controls show for ``scene`` (asks once whether a flat patch is
    on this machine: :meth:`BrainScene.has_mesh`)."""
    m = scene.model
    return PanelState(
        maps=tuple(map_names(scene)),
        scores=tuple(score_keys(scene)),
        n_layers=int(m.n_layers),
        map_name=scene.map_name,
        kind=scene.kind,
        layer=scene.layer_index + 1,
        score_key=scene.score_key if scene.score_key in m.scores else None,
        outlines=bool(scene.outlines),
        hemispheres=hemisphere_caption(scene.view, scene.kind),
        flat=scene.has_mesh("flat"),
        unfinished=convergence_line(m),
        method=method_name(m),
        degenerate=scene.degenerate(),
    )


def stepped(choices: Sequence[str], current: str | None, step: int) -> str:
    """The choice ``step`` places after ``current`` (``-1``: before), cyclically; from
    the first one when ``current`` is not among them."""
    choices = list(choices)
    i = choices.index(current) if current in choices else 0
    return choices[(i + step) % len(choices)]


def needs_clusters(scene: BrainScene, name: str) -> bool:
    """Whether showing map ``name`` first needs the channel clusters computed (seconds
    at 40,000 vertices: the panel computes them off the UI thread)."""
    return name == "clusters" and scene.clusters is None


def cluster_labels(model, n_clusters: int = 20, n_kmeans: int = 1000) -> np.ndarray:
    """The channel clusters of a model's readout, int array of shape (V,), 0-based
    (:func:`~napari_factortopy.core.analyses.channel_clusters`, at most ``n_kmeans``
    k-means centroids)."""
    from napari_factortopy.core.analyses import channel_clusters

    beta = model.beta
    return channel_clusters(beta, n_clusters, n_kmeans=min(n_kmeans, len(beta))).labels


def show_map(scene: BrainScene, name: str, score_key: str | None) -> None:
    """Set the scene to show map ``name``: the score map takes ``score_key`` (else the
    model's first score) when it has none yet; the cluster map clusters the readout's
    channels (20 clusters) the first time, here, unless they were computed before
    (:func:`needs_clusters`, :func:`cluster_labels`)."""
    scene.map_name = name
    if name == "score" and scene.score_key is None and scene.model.scores:
        scene.score_key = score_key or next(iter(scene.model.scores))
    if needs_clusters(scene, name):
        scene.clusters = cluster_labels(scene.model)


class LegendCache:
    """Legend images of scenes' maps, each drawn once (matplotlib takes ~50 ms per
    image); a custom map's is drawn every time (its values may have changed)."""

    def __init__(self) -> None:
        self._images: dict[tuple, np.ndarray] = {}

    def image(self, scene: BrainScene) -> np.ndarray:
        """The legend of the scene's current map, uint8 (height, width, 4)."""
        n_clusters = None if scene.clusters is None else int(scene.clusters.max())
        key = (id(scene), scene.map_name, scene.layer_index, scene.score_key, n_clusters)
        if scene.map_name in scene.custom or key not in self._images:
            if scene.map_name in ENSEMBLE_MAPS and scene.map_name not in scene.custom:
                from types import SimpleNamespace

                # a colour bar with the map's range and units (plots' custom-map legend)
                shim = SimpleNamespace(
                    map_name=scene.map_name,
                    model=scene.model,
                    custom={scene.map_name: ensemble_map(scene.model, scene.map_name)},
                )
                self._images[key] = _plots.legend_image(shim)
            else:
                self._images[key] = _plots.legend_image(scene)
        return self._images[key]


def legend_tooltip(scene: BrainScene) -> str:
    """The legend's tooltip: a seed ensemble's layer map says what its brightness is."""
    ensemble = bool(getattr(scene.model, "ensemble", None))
    return (
        "legend of the shown map; a seed ensemble's brightness is confidence × agreement"
        if ensemble and scene.map_name == "layer"
        else "legend of the shown map"
    )
