"""Offscreen surface figures: meshes drawn by the shared off-screen renderer
(:mod:`.surface_renderer`), composed by matplotlib.

Each panel is rendered at its axis' size in pixels from one of the views of
:mod:`.views` (the napari canvas's presets), then the panels are laid out with titles
and a legend on a ``matplotlib.figure.Figure`` (Agg canvas; no pyplot, no GUI). The
views, the renderer and the projection stay importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads when a figure is made, not at import (fast CLI start)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

from ..core.atomic import atomic_path
from .surface_renderer import SurfaceRenderer, renderer
from .views import LIGHTING, VIEWS, lighting_mode, project, view_basis

__all__ = [
    "LIGHTING",
    "VIEWS",
    "SurfaceRenderer",
    "compose_figure",
    "project",
    "render_mesh",
    "renderer",
    "surface_figure",
    "view_basis",
]


def _axes_pixels(ax: Axes) -> tuple[int, int]:
    """Width and height (pixels) of an axis' box."""
    fig = ax.figure
    fw, fh = fig.get_size_inches() * fig.dpi
    box = ax.get_position()
    return max(round(float(box.width * fw)), 1), max(round(float(box.height * fh)), 1)


def _show(ax: Axes, image: np.ndarray) -> AxesImage:
    """Put a rendered panel into an axis, pixel for pixel."""
    h, w = image.shape[:2]
    im = ax.imshow(
        image, extent=(0, w, 0, h), origin="upper", interpolation="nearest",
        aspect="auto", resample=False,
    )  # fmt: skip
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_axis_off()
    return im


def render_mesh(
    ax: Axes,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_rgba: np.ndarray,
    view: str = "lateral",
    hemi: str = "lh",
    shading: bool = False,
    cull_backfaces: bool = True,
    lighting: str | None = None,
) -> AxesImage:
    """Draw a coloured triangle mesh into an axis (rendered by :func:`renderer`).

    The mesh is rendered at the axis' size in pixels, framed to fill it with equal
    aspect, and shown as an image; the axis has no frame.

    Parameters
    ----------
    ax : matplotlib Axes
    vertices, faces, vertex_rgba, view, hemi, cull_backfaces
        As for :meth:`SurfaceRenderer.render`.
    shading : bool, default False
        Shorthand for ``lighting="shaded"``.
    lighting : {"flat", "shaded"}, optional
        Overrides ``shading``.

    Returns
    -------
    AxesImage
        The image added to ``ax``.
    """
    w, h = _axes_pixels(ax)
    image = renderer().render(
        vertices, faces, vertex_rgba, view, hemi, (w, h), lighting_mode(lighting, shading),
        cull_backfaces=cull_backfaces,
    )  # fmt: skip
    return _show(ax, image)


def _panel_aspect(panel: Mapping[str, Any]) -> float:
    """Height/width of a panel's projected mesh (bounded to [0.3, 3])."""
    xy, _ = project(panel["vertices"], panel.get("view", "lateral"), panel.get("hemi", "lh"))
    ext = xy.max(axis=0) - xy.min(axis=0) if len(xy) else np.ones(2)
    if ext[0] <= 0:
        return 1.0
    return float(np.clip(ext[1] / ext[0], 0.3, 3.0))


def _save_png_atomic(fig: Figure, out_path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG to a temporary file beside ``out_path``, then rename it."""
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor())


def _draw_legend(
    lax: Axes,
    legend: np.ndarray,
    legend_title: str,
    legend_xlabel: str,
    legend_ylabel: str,
    legend_extent: tuple[float, float, float, float] | None,
    legend_yticklabels: Sequence[str] | None,
    legend_xticks: bool,
    fontsize: float,
) -> None:
    """Draw the legend image into its axis ``lax``, with its labels, ticks and title
    (the parameters are :func:`surface_figure`'s)."""
    n_names = len(legend_yticklabels) if legend_yticklabels is not None else 0
    lax.imshow(
        np.asarray(legend),
        extent=legend_extent if legend_extent is not None else (0.0, 1.0, 0.0, 1.0),
        origin="upper",
        aspect="auto",
        interpolation="nearest",
    )
    lax.set_xlabel(legend_xlabel, fontsize=fontsize * 0.9)
    lax.set_ylabel(legend_ylabel, fontsize=fontsize * 0.9)
    lax.tick_params(labelsize=fontsize * 0.75)
    if legend_yticklabels is not None:
        names = [str(n) for n in legend_yticklabels]
        if names:
            bottom, top = lax.get_ylim()  # as drawn (bottom > top when inverted)
            frac_rows = (np.arange(len(names)) + 0.5) / len(names)
            lax.set_yticks(top + (bottom - top) * frac_rows, names)
        else:
            lax.set_yticks([])
    if not legend_xticks:
        lax.set_xticks([])
    if legend_title:  # over a narrow column of swatches: ends at its right edge
        loc = "right" if n_names > 1 else "center"
        lax.set_title(legend_title, fontsize=fontsize, loc=loc)


def compose_figure(
    panels: Sequence[Sequence[Mapping[str, Any] | None]],
    legend: np.ndarray | None = None,
    legend_title: str = "",
    width_px: int = 2400,
    out_path: str | os.PathLike | None = None,
    legend_xlabel: str = "layer",
    legend_ylabel: str = "confidence",
    legend_extent: tuple[float, float, float, float] | None = None,
    shading: bool = False,
    legend_yticklabels: Sequence[str] | None = None,
    legend_xticks: bool = True,
    stamp: str = "",
    lighting: str | None = None,
) -> Figure:
    """The :func:`surface_figure` as a matplotlib ``Figure`` (Agg canvas attached), not drawn.

    Same parameters as :func:`surface_figure` (``out_path`` is ignored); tests and
    callers that want to adjust the figure start here.
    """
    rows = [list(r) for r in panels]
    if not rows or not any(p is not None for r in rows for p in r):
        raise ValueError("surface_figure needs at least one panel")
    width_px = int(width_px)
    dpi = width_px / 12.0
    pt = dpi / 72.0  # pixels per point
    fontsize = 11.0
    n_cols = max(len(r) for r in rows)
    legend_w = 0.16 * width_px if legend is not None else 0.0
    margin = 0.01 * width_px
    cell_w = (width_px - legend_w - 2 * margin) / n_cols
    title_h = 2.2 * fontsize * pt

    heights = []
    for r in rows:
        aspects = [_panel_aspect(p) for p in r if p is not None]
        has_title = any(p is not None and p.get("title") for p in r)
        heights.append(cell_w * max(aspects, default=1.0) + (title_h if has_title else 0.0))
    # the legend's box: a square colour bar / map, or for named rows (ROIs, clusters) a
    # narrow column of swatches tall enough to give each name its own line
    n_names = len(legend_yticklabels) if legend_yticklabels is not None else 0
    box_w = box_h = 0.55 * legend_w
    if n_names > 1:
        box_w = 0.3 * legend_w
        box_h = max(box_h, 1.6 * fontsize * 0.75 * pt * n_names)
    legend_h = 0.0
    if legend is not None:
        legend_h = max(0.6 * legend_w, box_h) + 2 * title_h + 3 * fontsize * pt
    # the stamp (a warning) gets a band of its own above the panels, wrapped to the width
    stamp_lines = _wrap_stamp(stamp, width_px - 2 * margin, fontsize * pt)
    stamp_h = 1.35 * fontsize * pt * len(stamp_lines)
    height_px = int(np.ceil(max(sum(heights), legend_h) + 2 * margin + stamp_h))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=((width_px + 0.25) / dpi, (height_px + 0.25) / dpi), dpi=dpi, facecolor="white"
    )

    def frac(x0: float, y_top: float, w: float, h: float) -> list[float]:
        """Pixel box (left, top-down y of the top edge, width, height) → figure fraction."""
        return [x0 / width_px, 1.0 - (y_top + h) / height_px, w / width_px, h / height_px]

    y = margin + stamp_h
    for r, row_h in zip(rows, heights, strict=True):
        has_title = any(p is not None and p.get("title") for p in r)
        top_pad = title_h if has_title else 0.0
        for j, p in enumerate(r):
            if p is None:
                continue
            ax = fig.add_axes(frac(margin + j * cell_w, y + top_pad, cell_w, row_h - top_pad))
            mode = p.get("lighting") or lighting_mode(
                lighting if "shading" not in p else None, bool(p.get("shading", shading))
            )
            render_mesh(
                ax,
                p["vertices"],
                p["faces"],
                p["rgba"],
                view=p.get("view", "lateral"),
                hemi=p.get("hemi", "lh"),
                lighting=mode,
            )
            if p.get("title"):
                ax.set_title(str(p["title"]), fontsize=fontsize)
        y += row_h

    if legend is not None:
        x0 = width_px - 0.15 * legend_w - box_w
        lax = fig.add_axes(frac(x0, (height_px + stamp_h - box_h) / 2.0, box_w, box_h))
        _draw_legend(
            lax, legend, legend_title, legend_xlabel, legend_ylabel, legend_extent,
            legend_yticklabels, legend_xticks, fontsize,
        )  # fmt: skip

    if stamp_lines:
        fig.text(
            0.5, 1.0 - 0.5 * margin / height_px, "\n".join(stamp_lines), ha="center",
            va="top", color="#c00000", fontsize=fontsize, fontweight="bold",
        )  # fmt: skip

    FigureCanvasAgg(fig)
    return fig


def _wrap_stamp(stamp: str, width_px: float, font_px: float) -> list[str]:
    """``stamp`` cut at spaces into lines that fit ``width_px`` (bold glyphs of about
    0.62 em); [] for no stamp."""
    if not stamp:
        return []
    import textwrap

    per_line = max(20, int(width_px / (0.62 * font_px)))
    return textwrap.wrap(" ".join(stamp.split()), per_line, break_on_hyphens=False)


def surface_figure(
    panels: Sequence[Sequence[Mapping[str, Any] | None]],
    legend: np.ndarray | None = None,
    legend_title: str = "",
    width_px: int = 2400,
    out_path: str | os.PathLike | None = None,
    legend_xlabel: str = "layer",
    legend_ylabel: str = "confidence",
    legend_extent: tuple[float, float, float, float] | None = None,
    shading: bool = False,
    legend_yticklabels: Sequence[str] | None = None,
    legend_xticks: bool = True,
    stamp: str = "",
    lighting: str | None = None,
) -> np.ndarray:
    """Compose surface renderings (and an optional legend) into one image.

    Parameters
    ----------
    panels : list of rows, each a list of dict (or None for an empty cell)
        Each dict has ``vertices`` (n, 3), ``faces`` (m, 3), ``rgba`` (n, 4) and
        optionally ``view`` (default "lateral"), ``hemi`` (default "lh"), ``title``
        and ``lighting`` or ``shading`` (default: the ``lighting`` argument). Every
        panel is drawn by the same off-screen plotter (:func:`renderer`). Rows may
        differ in length;
        panel width is the width of the longest row's cells, each row's height follows
        its panels' aspect.
    legend : array of shape (h, w, 3 or 4), optional
        A legend image (e.g. :func:`~napari_factortopy.core.colours.layer_legend`),
        drawn in an extra column on the right with axis labels.
    legend_title : str
        Title above the legend.
    width_px : int, default 2400
        Width of the image in pixels; the height follows from the layout. Fonts scale
        with the width (the figure is 12 inches wide at ``width_px / 12`` dpi).
    out_path : path, optional
        Where to save the PNG; written atomically (temporary file in the same folder,
        then ``os.replace``).
    legend_xlabel, legend_ylabel : str
        Legend axis labels, by default those of the layer legend.
    legend_extent : (left, right, bottom, top), optional
        Data extent of the legend image, for meaningful ticks; e.g.
        ``(0.5, L + 0.5, 0, 1)`` for the layer legend. Default ``(0, 1, 0, 1)``.
    shading : bool, default False
        Shorthand for ``lighting="shaded"``.
    legend_yticklabels : sequence of str, optional
        Names of the legend's rows, one per row from the top (label maps); an empty
        sequence hides the y axis (a 1-D colour bar has no second axis). Default:
        numeric ticks.
    legend_xticks : bool, default True
        False hides the x axis (label swatches have no x scale).
    stamp : str, optional
        A warning written across the top of the figure in red (e.g. "unfinished
        model: …"); none by default.
    lighting : {"flat", "shaded"}, optional
        Lighting of panels that do not say otherwise; default "flat" (exact colours)
        unless ``shading`` is set.

    Returns
    -------
    image : uint8 array of shape (H, W, 4)
        The rendered RGBA figure (white background), identical to the saved PNG.
    """
    fig = compose_figure(
        panels, legend, legend_title, width_px, None, legend_xlabel, legend_ylabel,
        legend_extent, shading, legend_yticklabels, legend_xticks, stamp, lighting,
    )  # fmt: skip
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    if out_path is not None:
        _save_png_atomic(fig, out_path)
    return image
