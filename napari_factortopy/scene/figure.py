"""Publication figures: maps × views, both hemispheres, a legend per map (no display).

Surfaces are drawn off-screen by pyvista/VTK and composed with matplotlib legends
(:func:`napari_factortopy.scene.render.surface_figure`), so the export button and
``factortopy figure`` give the same picture and neither needs a display (EGL, or Xvfb).
One row per map, one column per view; each cell shows both hemispheres as the viewer
lays them out (:func:`~napari_factortopy.scene.brain.layout`); one off-screen plotter
draws every panel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_factortopy.core.atomic import atomic_path
from napari_factortopy.scene.brain import (
    BAR_MAPS,
    BrainScene,
    _default_score_key,
    extra_map,
    hemisphere_caption,
    score_label,
)
from napari_factortopy.scene.maps import warning_parts

__all__ = ["MAP_TITLES", "figure_image", "legend_for", "save_png"]

MAP_TITLES = {
    "layer": "layer selector",
    "layer weights": "layer weight",
    "space": "space",
    "scale": "scale",
    "score": "brain score",
    "clusters": "channel clusters",
    "roi": "ROIs",
    "agreement": "layer agreement",
    "n": "models per vertex",
    "R² layer": "R² layer",
    "RF uncertainty": "RF uncertainty",
}


def legend_for(scene: BrainScene) -> dict:
    """Legend image and labels of a scene's map, as ``surface_figure`` keyword arguments.

    Colour bars are 1-D (no y axis); label maps (ROIs, clusters) name their rows and
    have no x axis; the score bar names its score (R², r).
    """
    from napari_factortopy.core import colours

    name, m = scene.map_name, scene.model
    ramp = np.tile(np.linspace(0, 1, 256), (16, 1))
    bar = {"legend_ylabel": "", "legend_yticklabels": ()}
    if name in scene.custom or name in BAR_MAPS:
        c = scene.custom[name] if name in scene.custom else extra_map(m, name)
        lo, hi = _custom_range(c)
        rgba = colours.weight_rgba(lo + ramp.ravel() * (hi - lo), lo, hi, cmap=c.cmap)
        return {
            "legend": rgba.reshape(16, 256, 4),
            "legend_extent": (lo, hi, 0, 1),
            "legend_xlabel": c.label or name,
            **bar,
        }
    if name in ("layer", "R² layer"):
        n = m.n_layers
        return {
            "legend": colours.layer_legend(n),
            "legend_extent": (0.5, n + 0.5, 0, 1),
            "legend_xlabel": "layer",
            "legend_ylabel": "confidence" if name == "layer" else "share of R²",
        }
    if name == "space":
        return {
            "legend": colours.space_legend(256),
            "legend_extent": (-1, 1, 1, -1),
            "legend_xlabel": "image x" + ("\n(darker: RF less certain)" if _has_se(m) else ""),
            "legend_ylabel": "image y",
        }
    if name == "scale":
        rgba = colours.scale_rgba(ramp.ravel()).reshape(16, 256, 4)
        return {
            "legend": rgba,
            "legend_extent": (0, 1, 0, 1),
            "legend_xlabel": "scale α (global share)",
            **bar,
        }
    if name == "layer weights":
        rgba = colours.weight_rgba(ramp.ravel()).reshape(16, 256, 4)
        return {
            "legend": rgba,
            "legend_extent": (0, 1, 0, 1),
            "legend_xlabel": f"π (layer {scene.layer_index + 1})",
            **bar,
        }
    if name == "score":
        vals, _ = scene.values()
        vmax = float(np.nanmax(vals)) if np.any(np.isfinite(vals)) else 1.0
        vmax = vmax if vmax > 0 else 1.0
        rgba = colours.score_rgba(ramp.ravel() * vmax, vmax=vmax).reshape(16, 256, 4)
        return {
            "legend": rgba,
            "legend_extent": (0, vmax, 0, 1),
            "legend_xlabel": score_label(scene.score_key or _default_score_key(m)),
            **bar,
        }
    _, names = scene.values()
    k = max(len(names or []), 1)
    pal = colours.cluster_palette(max(k, 20) if name == "roi" else k)[:k]
    return {
        "legend": pal[:, None, :],
        "legend_extent": (0, 1, k + 0.5, 0.5),
        "legend_xlabel": "",
        "legend_ylabel": "",
        "legend_yticklabels": list(names or []) or [""],
        "legend_xticks": False,
    }


def _has_se(model) -> bool:
    """Whether the model holds RF standard errors (its space map fades uncertain RFs)."""
    return "space_se" in (getattr(model, "evaluation", None) or {})


def _custom_range(c) -> tuple[float, float]:
    """Colour-bar range of a :class:`CustomMap` (its own, or ± the largest value)."""
    if c.lo is not None and c.hi is not None and c.hi > c.lo:
        return float(c.lo), float(c.hi)
    v = np.asarray(c.values, np.float64)
    top = float(np.nanmax(np.abs(v))) if np.any(np.isfinite(v)) else 1.0
    return -(top or 1.0), top or 1.0


def _panel(scene: BrainScene, view: str, title: str) -> dict:
    s = replace(scene, view=view, _cache=scene._cache)
    verts, faces = s.geometry()
    rgba = s.colors()
    toward, down, right = verts[:, 0], verts[:, 1], verts[:, 2]
    if view == "flat" or s.kind == "flat":
        pts = np.stack([right, -down, np.zeros_like(right)], 1)
        return {"vertices": pts, "faces": faces, "rgba": rgba, "view": "flat", "title": title}
    # (right, −toward, up) seen from behind ("posterior" of render.py) is the screen itself
    pts = np.stack([right, -toward, -down], 1)
    return {
        "vertices": pts,
        "faces": faces,
        "rgba": rgba,
        "view": "posterior",
        "hemi": "lh",
        "title": title,
    }


def figure_image(
    scene: BrainScene,
    maps: Sequence[str] = ("layer",),
    views: Sequence[str] = ("lateral", "ventral"),
    width_px: int = 3000,
    out_path: str | os.PathLike | None = None,
    stamp: bool = True,
    lighting: str = "flat",
) -> np.ndarray:
    """Render maps × views of a scene into one RGBA image (and a PNG when asked).

    The scene's own map and view are left as they were.

    Parameters
    ----------
    scene : BrainScene
    maps : sequence of str
        Rows (names of :data:`~napari_factortopy.scene.brain.MAPS`).
    views : sequence of str
        Columns (camera presets; ``"flat"`` uses the flat mesh).
    width_px : int
        Width of the figure (≥ 3000 for print).
    out_path : path, optional
        PNG to write (atomically).
    stamp : bool, default True
        Write "UNFINISHED MODEL: <reason>" across each row when the model file says
        training did not converge (``summary["convergence"]``), and "DEGENERATE
        SELECTORS: <reason>" when its selectors chose nothing
        (:meth:`BrainScene.degenerate`).
    lighting : {"flat", "shaded"}, default "flat"
        "flat" keeps each map's colours exact in the pixels (quantitative maps);
        "shaded" adds a headlight that shows the folding.

    Returns
    -------
    image : uint8 array of shape (H, width_px, 4)
    """
    from napari_factortopy.scene.render import surface_figure

    saved = (scene.map_name, scene.view, scene.kind)
    rows = []
    try:
        for name in maps:
            scene.map_name = name
            if name == "clusters" and scene.clusters is None:
                from napari_factortopy.core.analyses import channel_clusters

                beta = scene.model.beta
                scene.clusters = channel_clusters(beta, 20, n_kmeans=min(1000, len(beta))).labels
            panels = []
            for view in views:
                kind = saved[2]
                if view == "flat":
                    scene.kind = "flat"
                sides = hemisphere_caption(view, scene.kind)  # e.g. "R | L" from below
                title = f"{MAP_TITLES.get(name, name)} · {view} ({sides})"
                panels.append(_panel(scene, view, title))
                scene.kind = kind
            warned = warning_parts(scene.model, scene.degenerate()) if stamp else []
            grey = _significance_note(scene)
            if grey:
                panels = [{**p, "title": f"{p['title']} · {grey}"} for p in panels]
            rows.append(
                surface_figure(
                    [panels],
                    width_px=width_px,
                    legend_title=MAP_TITLES.get(name, name) + _slope_note(scene, name),
                    stamp=" · ".join(warned),
                    lighting=lighting,
                    **legend_for(scene),
                )
            )
    finally:
        scene.map_name, scene.view, scene.kind = saved
    width = max(r.shape[1] for r in rows)
    image = np.concatenate(
        [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows],
        axis=0,
    )
    if out_path is not None:
        save_png(image, out_path)
    return image


def _slope_note(scene: BrainScene, name: str) -> str:
    """Under the layer map's legend: the hierarchy slope, its interval and its
    mode-centred reading, worded as in ``info`` and the ROI table
    (:func:`napari_factortopy.scene.tables.slope_parts`; the figure's stamp says when the
    model is unfinished), when the model has hierarchy levels."""
    if name != "layer":
        return ""
    import textwrap

    from napari_factortopy.core.slope_range import model_slope_or_reason
    from napari_factortopy.scene.tables import slope_parts

    found = model_slope_or_reason(scene.model)
    if isinstance(found, str):
        return ""
    parts = slope_parts(scene.model, 2, unfinished=False, found=found)
    # the legend is narrow: a longer part (a group's interval) takes two lines
    return "".join(f"\n{line}" for p in parts for line in textwrap.wrap(p, 22))


def _significance_note(scene: BrainScene) -> str:
    """The note "grey: q > α (FDR)" when the scene greys vertices of its map."""
    ev = (getattr(scene.model, "summary", None) or {}).get("evaluation") or {}
    if not scene.not_significant().any():
        return ""
    return f"grey: q > {ev.get('alpha', 0.05):g} (FDR)"


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGBA uint8 image as PNG atomically; returns the path."""
    from PIL import Image

    out = Path(path)
    with atomic_path(out, suffix=".png") as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp)
    return out
