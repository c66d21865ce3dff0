"""Offscreen surface figures with matplotlib alone (the CLI's ``layer_map.png``).

Meshes are drawn by orthographic projection and the painter's algorithm (triangles
sorted back to front in one ``PolyCollection``), on a ``matplotlib.figure.Figure`` with
the Agg canvas: no pyplot, no GUI, no OpenGL.

View conventions (camera direction and screen axes, RAS coordinates x = right,
y = anterior, z = superior):

==========  ===================  ==========  =====================================
view        camera looks along   screen up   screen right
==========  ===================  ==========  =====================================
lateral     +x (lh), −x (rh)     +z          anterior on the left (lh), right (rh)
medial      −x (lh), +x (rh)     +z          anterior on the right (lh), left (rh)
posterior   +y (from behind)     +z          +x (left hemisphere on the left)
anterior    −y (from the front)  +z          −x
ventral     +z (from below)      +y          −x
dorsal      −z (from above)      +y          +x
flat        —                    vertex y    vertex x (the mesh's x, y are used as is)
==========  ===================  ==========  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from ..core.atomic import atomic_path

__all__ = ["VIEWS", "compose_figure", "project", "render_mesh", "surface_figure", "view_basis"]

#: Names of the supported views.
VIEWS = ("lateral", "medial", "posterior", "anterior", "ventral", "dorsal", "flat")


def view_basis(view: str, hemi: str = "lh") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen axes of a view.

    Parameters
    ----------
    view : str
        One of :data:`VIEWS` other than "flat".
    hemi : {"lh", "rh"}

    Returns
    -------
    right, up, forward : arrays of shape (3,)
        Unit vectors: screen right, screen up, and the viewing direction (from the
        camera into the scene). ``right × up = −forward``, so a triangle whose outward
        normal faces the camera projects counter-clockwise.
    """
    if hemi not in ("lh", "rh"):
        raise ValueError(f"hemi must be 'lh' or 'rh'; got {hemi!r}")
    x, y, z = np.eye(3)
    sign = 1.0 if hemi == "lh" else -1.0
    table = {
        "lateral": (sign * x, z),
        "medial": (-sign * x, z),
        "posterior": (y, z),
        "anterior": (-y, z),
        "ventral": (z, y),
        "dorsal": (-z, y),
    }
    if view not in table:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    forward, up = table[view]
    return np.cross(forward, up), up, forward


def project(
    vertices: np.ndarray, view: str = "lateral", hemi: str = "lh"
) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of vertices onto the screen of a view.

    Parameters
    ----------
    vertices : array of shape (n, 3) (or (n, 2) for "flat")
    view : str
        One of :data:`VIEWS`.
    hemi : {"lh", "rh"}

    Returns
    -------
    xy : array of shape (n, 2)
        Screen coordinates (right, up).
    depth : array of shape (n,)
        Distance along the viewing direction (larger = farther); zeros for "flat".
    """
    v = np.asarray(vertices, dtype=np.float64)
    if view == "flat":
        return v[:, :2].copy(), np.zeros(len(v))
    right, up, forward = view_basis(view, hemi)
    return np.stack([v @ right, v @ up], axis=1), v @ forward


def render_mesh(
    ax: Axes,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_rgba: np.ndarray,
    view: str = "lateral",
    hemi: str = "lh",
    shading: bool = False,
    ambient: float = 0.4,
    cull_backfaces: bool = True,
    edge_width: float | None = None,
) -> PolyCollection:
    """Draw a coloured triangle mesh into an axis.

    Triangles are projected orthographically (:func:`project`), back-facing ones are
    dropped (those that project clockwise; not for "flat"), and the rest are drawn
    back to front. A face's colour is the mean of its three vertices' colours. The axis
    gets equal aspect and no frame.

    Parameters
    ----------
    ax : matplotlib Axes
    vertices : array of shape (n, 3)
        Vertex positions (RAS).
    faces : int array of shape (m, 3)
        Triangles, counter-clockwise seen from outside (FreeSurfer order).
    vertex_rgba : array of shape (n, 4) or (n, 3)
        Colours in [0, 1].
    view : str, default "lateral"
        One of :data:`VIEWS`.
    hemi : {"lh", "rh"}, default "lh"
    shading : bool, default False
        Lambert shading ``ambient + (1 − ambient) · max(0, n · l)`` with the light at
        the camera; off by default so the colours stay exact.
    ambient : float, default 0.4
    cull_backfaces : bool, default True
    edge_width : float, optional
        Width (points) of each triangle's edge, drawn in the face colour to hide the
        antialiasing seams between triangles; default one pixel at the figure's dpi.

    Returns
    -------
    PolyCollection
        The collection added to ``ax``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    col = np.asarray(vertex_rgba, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (m, 3); got {f.shape}")
    if col.shape[0] != v.shape[0] or col.shape[1] not in (3, 4):
        raise ValueError(f"vertex_rgba must be ({v.shape[0]}, 4); got {col.shape}")
    if col.shape[1] == 3:
        col = np.concatenate([col, np.ones((len(col), 1))], axis=1)
    xy, depth = project(v, view, hemi)
    tri = xy[f]  # (m, 3, 2)
    face_col = col[f].mean(axis=1)
    keep = np.ones(len(f), dtype=bool)
    if view != "flat":
        e1 = tri[:, 1] - tri[:, 0]
        e2 = tri[:, 2] - tri[:, 0]
        area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        if cull_backfaces:
            keep = area2 > 0
        if shading:
            _, _, forward = view_basis(view, hemi)
            p = v[f]
            normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            norm = np.linalg.norm(normal, axis=1, keepdims=True)
            normal = normal / np.where(norm > 0, norm, 1.0)
            lam = np.clip(normal @ -forward, 0.0, 1.0)
            if not cull_backfaces:
                lam = np.abs(normal @ -forward)
            factor = ambient + (1.0 - ambient) * lam
            face_col[:, :3] = np.clip(face_col[:, :3] * factor[:, None], 0.0, 1.0)
    order = np.argsort(-depth[f].mean(axis=1), kind="stable")
    order = order[keep[order]]
    face_col = np.clip(face_col[order], 0.0, 1.0)
    if edge_width is None:
        edge_width = 72.0 / float(ax.figure.dpi)
    coll = PolyCollection(
        tri[order],
        facecolors=face_col,
        edgecolors=face_col,
        linewidths=edge_width,
        antialiased=True,
    )
    ax.add_collection(coll)
    used = xy[np.unique(f)] if f.size else xy
    if len(used):
        lo, hi = used.min(axis=0), used.max(axis=0)
        pad = 0.02 * float(max(hi - lo)) if np.any(hi > lo) else 1.0
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return coll


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
    legend_h = 0.0
    if legend is not None:
        legend_h = 0.6 * legend_w + 2 * title_h + 3 * fontsize * pt
    height_px = int(np.ceil(max(sum(heights), legend_h) + 2 * margin))

    fig = Figure(
        figsize=((width_px + 0.25) / dpi, (height_px + 0.25) / dpi), dpi=dpi, facecolor="white"
    )

    def frac(x0: float, y_top: float, w: float, h: float) -> list[float]:
        """Pixel box (left, top-down y of the top edge, width, height) → figure fraction."""
        return [x0 / width_px, 1.0 - (y_top + h) / height_px, w / width_px, h / height_px]

    y = margin
    for r, row_h in zip(rows, heights, strict=True):
        has_title = any(p is not None and p.get("title") for p in r)
        top_pad = title_h if has_title else 0.0
        for j, p in enumerate(r):
            if p is None:
                continue
            ax = fig.add_axes(frac(margin + j * cell_w, y + top_pad, cell_w, row_h - top_pad))
            render_mesh(
                ax,
                p["vertices"],
                p["faces"],
                p["rgba"],
                view=p.get("view", "lateral"),
                hemi=p.get("hemi", "lh"),
                shading=bool(p.get("shading", shading)),
            )
            if p.get("title"):
                ax.set_title(str(p["title"]), fontsize=fontsize)
        y += row_h

    if legend is not None:
        x0 = width_px - legend_w + 0.3 * legend_w
        side = 0.55 * legend_w
        y0 = (height_px - side) / 2.0
        lax = fig.add_axes(frac(x0, y0, side, side))
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
        if legend_title:
            lax.set_title(legend_title, fontsize=fontsize)

    if stamp:
        fig.text(
            0.5, 1.0 - 0.5 * margin / height_px, stamp, ha="center", va="top",
            color="#c00000", fontsize=fontsize, fontweight="bold",
        )  # fmt: skip

    FigureCanvasAgg(fig)
    return fig


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
) -> np.ndarray:
    """Compose surface renderings (and an optional legend) into one image.

    Parameters
    ----------
    panels : list of rows, each a list of dict (or None for an empty cell)
        Each dict has ``vertices`` (n, 3), ``faces`` (m, 3), ``rgba`` (n, 4) and
        optionally ``view`` (default "lateral"), ``hemi`` (default "lh"), ``title``
        and ``shading`` (default: the ``shading`` argument). Rows may differ in length;
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
        Lambert shading for panels that do not say otherwise.
    legend_yticklabels : sequence of str, optional
        Names of the legend's rows, one per row from the top (label maps); an empty
        sequence hides the y axis (a 1-D colour bar has no second axis). Default:
        numeric ticks.
    legend_xticks : bool, default True
        False hides the x axis (label swatches have no x scale).
    stamp : str, optional
        A warning written across the top of the figure in red (e.g. "unfinished
        model: …"); none by default.

    Returns
    -------
    image : uint8 array of shape (H, W, 4)
        The rendered RGBA figure (white background), identical to the saved PNG.
    """
    fig = compose_figure(
        panels, legend, legend_title, width_px, None, legend_xlabel, legend_ylabel,
        legend_extent, shading, legend_yticklabels, legend_xticks, stamp,
    )  # fmt: skip
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    if out_path is not None:
        _save_png_atomic(fig, out_path)
    return image
