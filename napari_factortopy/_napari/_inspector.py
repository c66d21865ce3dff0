"""The vertex inspector of the Brain maps panel: what a clicked vertex chose."""

from __future__ import annotations

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._common import show_image
from napari_factortopy._napari._data import stimuli_for
from napari_factortopy.scene import plots as _plots
from napari_factortopy.scene.brain import Pick, score_label

__all__ = ["Inspector", "seed_layers", "seed_line"]


def seed_layers(model, row: int) -> list[tuple[int, str]] | None:
    """Each seed's argmax layer at a model row of a seed ensemble: ``(seed, layer name)``;
    None for a model without seeds."""
    stack = (getattr(model, "ensemble", None) or {}).get("layer")
    if stack is None:
        return None
    names = list(model.backbone.get("layer_names") or [])
    if len(names) != model.n_layers:
        names = [f"layer {i + 1}" for i in range(model.n_layers)]
    seeds = (model.summary.get("ensemble") or {}).get("seeds") or list(range(len(stack)))
    best = np.asarray(stack)[:, row].argmax(1)
    return [(int(s), names[int(b)]) for s, b in zip(seeds, best, strict=False)]


def seed_line(model, row: int) -> str:
    """The inspector's line on an ensemble's seeds at a row ("" without seeds)."""
    per_seed = seed_layers(model, row)
    if per_seed is None:
        return ""
    agree = float(model.ensemble["layer_agreement"][row])
    votes = ", ".join(f"{s}: {name}" for s, name in per_seed)
    return f"\nseeds' layers: {votes} (agreement {agree:.0%})"


class Inspector:
    """Text, layer-weight bars and the stimulus location of the last clicked vertex."""

    def __init__(self) -> None:
        self.last_pick: Pick | None = None
        self.info = widgets.Label(label="vertex", value="click the brain to inspect a vertex")
        self.info.native.setWordWrap(True)  # a long score line must not widen the dock
        self.info.tooltip = (
            "hemisphere, vertex, ROI, scores, scale and space of the clicked vertex"
        )
        self.bars = widgets.Image(label="weights", tooltip="layer weights π of the vertex")
        self.where = widgets.Image(
            label="looks at", tooltip="where in the image the vertex looks (space selector)"
        )
        self.widgets = [self.info, self.bars, self.where]
        self._clear()

    def _clear(self) -> None:
        """Hide the bars and picture (nothing or an unmodelled vertex was clicked)."""
        self.bars.visible = self.where.visible = False

    def show(self, scene, pick: Pick | None) -> None:
        """Describe ``pick`` (a vertex of ``scene``), or say that nothing was hit."""
        self.last_pick = pick
        if scene is None or pick is None:
            self.info.value = "no vertex there"
            self._clear()
            return
        m = scene.model
        text = f"{pick.hemi} vertex {pick.hemi_vertex}"
        if pick.row is None:
            self.info.value = text + " (not modelled)"
            self._clear()
            return
        r = pick.row
        roi = int(m.roi[r])
        roi_name = m.roi_names[roi - 1] if 0 < roi <= len(m.roi_names) else "no ROI"
        scores = ", ".join(f"{score_label(k)} {float(v[r]):.3f}" for k, v in m.scores.items())
        x, y = m.space[r]
        self.info.value = (
            f"{text} · {roi_name}\nscore: {scores or 'none'}\n"
            f"scale α {float(m.scale[r]):.2f} · space ({x:+.2f}, {y:+.2f})"
        ) + seed_line(m, r)
        show_image(self.bars, _plots.bar_image(m.layer[r], m.backbone.get("layer_names")))
        self.bars.visible = True
        image = scene.stimulus
        if image is None:
            source = stimuli_for(scene)
            if source is not None:
                image = scene.stimulus = source[0](np.array([0]))[0]
        if image is not None and np.all(np.isfinite(m.space[r])):
            show_image(self.where, _plots.mark_location(image, m.space[r]), width=240)
        self.where.visible = image is not None and bool(np.all(np.isfinite(m.space[r])))
