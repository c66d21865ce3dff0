"""Small images for the panels: legends, a layer-weight bar plot, a stimulus marker.

All return uint8 RGBA arrays (H, W, 4) drawn with matplotlib's Agg canvas (no pyplot,
no Qt), ready for a magicgui ``Image`` widget or a napari image layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from napari_factortopy.core import colours
from napari_factortopy.scene.brain import BAR_MAPS, extra_map, score_label

__all__ = ["bar_image", "legend_image", "mark_location", "space_to_pixel"]


def _render(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _fig(size_px: tuple[int, int], dpi: float = 100.0) -> Figure:
    w, h = size_px
    return Figure(figsize=(w / dpi, h / dpi), dpi=dpi, facecolor="white")


def bar_image(
    weights: np.ndarray,
    names: Sequence[str] | None = None,
    size_px=(280, 180),
    title: str = "layer weights",
) -> np.ndarray:
    """Bar plot of one vertex's layer weights, bars coloured like the layer map.

    Parameters
    ----------
    weights : array of shape (L,)
    names : sequence of L str, optional
    size_px : (width, height)

    Returns
    -------
    image : uint8 array of shape (height, width, 4)
    """
    w = np.asarray(weights, np.float64)
    n = len(w)
    labels = (
        list(names) if names is not None and len(names) == n else [str(i + 1) for i in range(n)]
    )
    rotate = n > 8
    # room under the axes for the (rotated) tick labels: 6-pt text is ≈ 5 px a character
    # at this figure's dpi, so "blocks.1.1" needs ≈ 60 px
    longest = max((len(x) for x in labels), default=1) if rotate else 1
    bottom = min(0.5, (10 + 5.0 * longest) / size_px[1])
    fig = _fig(size_px)
    ax = fig.add_axes([0.14, bottom, 0.83, 0.88 - bottom])
    bar_colours = colours.layer_legend(n, (1, n))[0, :, :3]  # confidence-1 colour per layer
    ax.bar(np.arange(n), w, color=bar_colours, edgecolor="black", linewidth=0.4)
    ax.set_ylim(0, max(1.0, float(np.nanmax(w, initial=0))))
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(labels, fontsize=6, rotation=90 if rotate else 0)
    ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=8)
    return _render(fig)


def space_to_pixel(space: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """grid_sample coordinates → pixel (row, col) of an image of ``shape`` (H, W).

    ``align_corners=False``: ``col = (x + 1) / 2 · W − 0.5``, ``row = (y + 1) / 2 · H − 0.5``.

    Parameters
    ----------
    space : array of shape (..., 2)
        ``(x, y)`` in [-1, 1].
    shape : (H, W)

    Returns
    -------
    rc : array of shape (..., 2)
        ``(row, col)``.
    """
    s = np.asarray(space, np.float64)
    h, w = shape[:2]
    return np.stack([(s[..., 1] + 1) / 2 * h - 0.5, (s[..., 0] + 1) / 2 * w - 0.5], axis=-1)


def mark_location(image: np.ndarray, space: np.ndarray, radius: int | None = None) -> np.ndarray:
    """The stimulus with a ring (white on black) at a vertex's selected location.

    Parameters
    ----------
    image : uint8 array of shape (H, W, 3)
    space : array of shape (2,)
        ``(x, y)`` in grid_sample coordinates.
    radius : int, optional
        Ring radius in pixels (default 4 % of the image side, at least 3).

    Returns
    -------
    marked : uint8 array of shape (H, W, 4)
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    out = np.full((h, w, 4), 255, np.uint8)
    out[..., :3] = img[..., :3]
    r0, c0 = space_to_pixel(space, (h, w))
    radius = radius or max(3, int(0.04 * max(h, w)))
    rr, cc = np.mgrid[0:h, 0:w]
    d = np.hypot(rr - r0, cc - c0)
    out[np.abs(d - radius) < 1.0, :3] = 255
    out[np.abs(d - radius - 1.2) < 0.7, :3] = 0
    return out


def legend_image(scene, size_px=(232, 200)) -> np.ndarray:
    """The legend of a scene's current map.

    232 px wide: with the label column and a vertical scroll bar it still fits the
    Brain maps panel of a 1440-px-wide window with every panel docked.

    Layer map: the 2-D layer × confidence legend; space: the square image-plane legend;
    scalar maps: a colour bar; label maps: swatches with names.

    Returns
    -------
    image : uint8 array of shape (height, width, 4)
    """
    name = scene.map_name
    model = scene.model
    fig = _fig(size_px)
    if name in ("layer", "R² layer"):
        ax = fig.add_axes([0.2, 0.22, 0.72, 0.66])
        n = model.n_layers
        ax.imshow(
            colours.layer_legend(n, (64, 256)),
            extent=(0.5, n + 0.5, 0, 1),
            aspect="auto",
            interpolation="nearest",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        ax.set_xlabel("layer" if name == "layer" else "layer carrying most R²", fontsize=7)
        ax.set_ylabel("confidence" if name == "layer" else "share of R²", fontsize=7)
    elif name == "space":
        ax = fig.add_axes([0.25, 0.12, 0.5, 0.74])
        ax.imshow(colours.space_legend(128), extent=(-1, 1, 1, -1), interpolation="nearest")
        dark = "space_se" in (getattr(model, "evaluation", None) or {})
        ax.set_xlabel("image x" + ("\n(darker: RF less certain)" if dark else ""), fontsize=7)
        ax.set_ylabel("image y", fontsize=7)
    elif name in getattr(scene, "custom", {}) or name in BAR_MAPS:
        ax = fig.add_axes([0.08, 0.45, 0.84, 0.2])
        c = scene.custom[name] if name in scene.custom else extra_map(model, name)
        vals = np.asarray(c.values, np.float64)
        lim = float(np.nanmax(np.abs(vals))) if np.any(np.isfinite(vals)) else 1.0
        lo, hi = (c.lo, c.hi) if c.lo is not None and c.hi is not None else (-lim, lim)
        lo, hi = (lo, hi) if hi > lo else (-1.0, 1.0)
        ramp = np.linspace(lo, hi, 256)
        ax.imshow(
            colours.weight_rgba(ramp, lo, hi, cmap=c.cmap)[None],
            extent=(lo, hi, 0, 1),
            aspect="auto",
        )
        ax.set_yticks([])
        ax.set_title(c.label or name, fontsize=7)
    elif name in ("layer weights", "scale", "score"):
        ax = fig.add_axes([0.08, 0.45, 0.84, 0.2])
        ramp = np.linspace(0, 1, 256)
        if name == "score":
            vals, _ = scene.values()
            vmax = float(np.nanmax(vals)) if np.any(np.isfinite(vals)) else 0.0
            vmax = max(vmax, 0.0)
            # every score ≤ 0 (or none): the bar keeps a range; its colours are all the
            # bottom one, as on the brain (a 0-wide axis would warn and say nothing)
            top = vmax if vmax > 0 else 1.0
            bar = colours.score_rgba(ramp * top, vmax=vmax if vmax > 0 else 0.0)
            key = scene.score_key or next(iter(scene.model.scores), None)
            what = score_label(key) if key else "(this model has no scores)"
            lo, hi, label = 0.0, top, f"brain score {what}"
        elif name == "scale":
            bar, lo, hi, label = colours.scale_rgba(ramp), 0.0, 1.0, "scale α (global share)"
        else:
            bar = colours.weight_rgba(ramp)
            lo, hi, label = 0.0, 1.0, f"weight of layer {scene.layer_index + 1}"
        ax.imshow(bar[None], extent=(lo, hi, 0, 1), aspect="auto")
        ax.set_yticks([])
        ax.set_title(label, fontsize=7)
    else:
        _values, names = scene.values()
        names = list(names or [])
        k = len(names)
        ax = fig.add_axes([0.05, 0.05, 0.9, 0.9])
        ax.set_axis_off()
        pal = (
            colours.cluster_palette(max(k, 1))
            if name != "roi"
            else colours.cluster_palette(max(20, k))
        )
        cols = 2 if k > 8 else 1
        per = int(np.ceil(k / cols)) if k else 1
        for i, nm in enumerate(names):
            cx, cy = (i // per) / cols, 1 - (i % per + 1) / (per + 1)
            ax.add_patch(_square(cx + 0.02, cy - 0.03, 0.06, pal[i]))
            ax.text(cx + 0.1, cy, nm, fontsize=6, va="center")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for a in fig.axes:
        a.tick_params(labelsize=6)
    return _render(fig)


def _square(x, y, s, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), s, s, facecolor=colour[:3], edgecolor="black", linewidth=0.3)
