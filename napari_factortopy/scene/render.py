"""Offscreen surface figures: meshes drawn by VTK (pyvista), composed by matplotlib.

One renderer draws every surface panel: an off-screen :class:`pyvista.Plotter`
(:class:`SurfaceRenderer`), created once per thread and reused for every panel, since
its first render (OpenGL context, shaders) costs seconds and each further panel well
under one. The camera is orthographic and placed by :func:`view_basis`, the same
table the napari canvas's presets use, so a figure's views match the viewer. Panel
images are then laid out with titles and a legend on a ``matplotlib.figure.Figure``
(Agg canvas; no pyplot, no GUI).

No display is needed: without ``$DISPLAY`` (Linux) VTK renders through EGL (its
wheels since 9.4 carry it; Mesa's software EGL where there is no GPU); with a display
or under Xvfb it uses GLX. Lighting is ``"flat"`` by default: the vertex colours
reach the pixels exactly (quantitative maps); ``"shaded"`` adds a headlight (ambient
0.35, diffuse 0.65) for a sense of shape.

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
flat        −z                   vertex y    vertex x (the mesh's x, y are used as is)
==========  ===================  ==========  =====================================
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads when a figure is made, not at import (fast CLI start)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

from ..core.atomic import atomic_path

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

#: Names of the supported views.
VIEWS = ("lateral", "medial", "posterior", "anterior", "ventral", "dorsal", "flat")

#: Lighting modes: "flat" keeps the map's colours exact, "shaded" adds a headlight.
LIGHTING = ("flat", "shaded")


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


def _camera_basis(view: str, hemi: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`view_basis`, with "flat" seen from +z (screen right = x, up = y)."""
    if view == "flat":
        x, y, z = np.eye(3)
        return x, y, -z
    return view_basis(view, hemi)


def _lighting(lighting: str | None, shading: bool = False) -> str:
    mode = lighting if lighting is not None else ("shaded" if shading else "flat")
    if mode not in LIGHTING:
        raise ValueError(f"lighting must be one of {LIGHTING}; got {mode!r}")
    return mode


def _use_egl_without_display() -> None:
    """Without a display on Linux, ask VTK for EGL at once (instead of failing on X
    with a warning first). A user's own choice of window class is kept."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (outward for counter-clockwise faces)."""
    p = v[f]
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    n = np.zeros_like(v)
    for k in range(3):
        n[:, k] = np.bincount(f.ravel(), np.repeat(fn[:, k], 3), minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


class SurfaceRenderer:
    """One off-screen pyvista ``Plotter``, reused for every panel it draws.

    Use :func:`renderer` for the thread's shared instance. ``plotter`` is created on
    the first :meth:`render` (that first render costs seconds: the OpenGL context and
    shaders); each later panel replaces the mesh, the camera and the window size.

    Parameters
    ----------
    multi_samples : int, default 4
        MSAA samples (smooth outlines; the inside of each colour region stays exact).
    """

    def __init__(self, multi_samples: int = 4) -> None:
        self.multi_samples = int(multi_samples)
        self.plotter = None
        self._actor = None
        self.n_rendered = 0  # panels drawn, and the seconds they took (benchmarks)
        self.seconds = 0.0

    def _ensure(self, size: tuple[int, int]):
        if self.plotter is None:
            _use_egl_without_display()
            try:
                import pyvista as pv
            except ImportError as exc:  # pragma: no cover - pyvista is a dependency
                raise ImportError(
                    "figures need pyvista: pip install 'napari-factortopy[render]'"
                ) from exc
            p = pv.Plotter(off_screen=True, window_size=size, lighting="none")
            if self.multi_samples > 1:
                p.enable_anti_aliasing("msaa", multi_samples=self.multi_samples)
            p.set_background("white")
            p.add_light(pv.Light(light_type="headlight"))
            p.enable_parallel_projection()
            self.plotter = p
        return self.plotter

    def render(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        vertex_rgba: np.ndarray,
        view: str = "lateral",
        hemi: str = "lh",
        size: tuple[int, int] = (800, 600),
        lighting: str = "flat",
        pad: float = 0.02,
        cull_backfaces: bool = False,
    ) -> np.ndarray:
        """Draw one coloured mesh, framed to fill ``size``.

        Parameters
        ----------
        vertices : array of shape (n, 3) (or (n, 2) for "flat")
            Vertex positions (RAS).
        faces : int array of shape (m, 3)
            Triangles, counter-clockwise seen from outside (FreeSurfer order).
        vertex_rgba : array of shape (n, 4) or (n, 3)
            Colours in [0, 1] (alpha is ignored: surfaces are opaque).
        view : str
            One of :data:`VIEWS`; the camera follows :func:`view_basis`.
        hemi : {"lh", "rh"}
        size : (width, height)
            Image size in pixels.
        lighting : {"flat", "shaded"}
            "flat": the pixels carry the vertex colours exactly (colours are
            interpolated across a triangle, as in napari); "shaded": headlight.
        pad : float
            Margin around the mesh, as a fraction of its larger extent.
        cull_backfaces : bool
            Skip triangles facing away (the depth buffer hides them anyway).

        Returns
        -------
        image : uint8 array of shape (height, width, 3)
        """
        import pyvista as pv

        t0 = time.perf_counter()
        v = np.asarray(vertices, dtype=np.float64)
        if v.ndim == 2 and v.shape[1] == 2:
            v = np.concatenate([v, np.zeros((len(v), 1))], axis=1)
        f = np.asarray(faces, dtype=np.int64)
        col = np.asarray(vertex_rgba, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be (m, 3); got {f.shape}")
        if col.ndim != 2 or col.shape[0] != v.shape[0] or col.shape[1] not in (3, 4):
            raise ValueError(f"vertex_rgba must be ({v.shape[0]}, 4); got {col.shape}")
        mode = _lighting(lighting)
        w, h = max(int(size[0]), 1), max(int(size[1]), 1)
        p = self._ensure((w, h))
        if self._actor is not None:
            p.remove_actor(self._actor, render=False)
            self._actor = None
        mesh = pv.PolyData.from_regular_faces(v, f)
        mesh.point_data["rgb"] = np.round(np.clip(col[:, :3], 0.0, 1.0) * 255).astype(np.uint8)
        if mode == "shaded":
            mesh.point_data["Normals"] = _vertex_normals(v, f)
            mesh.point_data.active_normals_name = "Normals"
        self._actor = p.add_mesh(
            mesh,
            scalars="rgb",
            rgb=True,
            lighting=mode == "shaded",
            ambient=0.35 if mode == "shaded" else 0.0,
            diffuse=0.65 if mode == "shaded" else 1.0,
            specular=0.0,
            culling="back" if cull_backfaces else None,
            show_scalar_bar=False,
            reset_camera=False,
            render=False,
        )
        right, up, forward = _camera_basis(view, hemi)
        if f.size:
            mask = np.zeros(len(v), dtype=bool)
            mask[f.ravel()] = True  # (np.unique sorts: ~1 s on fsaverage)
            used = v[mask]
        else:
            used = v
        if not len(used):
            used = np.zeros((1, 3))
        sx, sy, depth = used @ right, used @ up, used @ forward
        lo, hi = np.array([sx.min(), sy.min()]), np.array([sx.max(), sy.max()])
        ext = hi - lo
        margin = pad * float(max(ext.max(), 1e-9))
        cx, cy = (lo + hi) / 2.0
        span_y = max(ext[1] + 2 * margin, (ext[0] + 2 * margin) * h / w, 1e-9)
        dist = float(depth.max() - depth.min()) + 10.0 * float(max(ext.max(), 1.0))
        focal = right * cx + up * cy + forward * float(depth.mean())
        cam = p.camera
        cam.focal_point = tuple(focal)
        cam.position = tuple(focal - forward * dist)
        cam.up = tuple(up)
        cam.parallel_projection = True
        cam.parallel_scale = span_y / 2.0
        if tuple(p.ren_win.GetSize()) != (w, h):
            p.ren_win.SetSize(w, h)  # (pyvista's window_size setter renders once more)
        p.renderer.ResetCameraClippingRange()
        p.render()
        image = np.asarray(p.screenshot(return_img=True))[..., :3]
        self.n_rendered += 1
        self.seconds += time.perf_counter() - t0
        if image.shape[:2] != (h, w):  # pragma: no cover - a window manager resized it
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((w, h), Image.NEAREST))
        return np.ascontiguousarray(image)

    def close(self) -> None:
        """Release the plotter (its OpenGL context)."""
        if self.plotter is not None:
            self.plotter.close()
        self.plotter, self._actor = None, None


_local = threading.local()
_all: list[tuple[threading.Thread, SurfaceRenderer]] = []
_all_lock = threading.Lock()


def _close_all() -> None:
    """Close every shared renderer before the interpreter tears VTK down."""
    with _all_lock:
        while _all:
            _all.pop()[1].close()


def renderer() -> SurfaceRenderer:
    """This thread's shared :class:`SurfaceRenderer`, created on first use.

    An OpenGL context belongs to one thread, so each thread that draws (the main
    thread, a napari worker) gets its own; those of threads that have ended are closed
    here, and all of them at exit.
    """
    r = getattr(_local, "renderer", None)
    if r is None:
        with _all_lock:
            if not _all:
                atexit.register(_close_all)
            for entry in [e for e in _all if not e[0].is_alive()]:
                _all.remove(entry)
                with contextlib.suppress(Exception):  # best effort: its thread is gone
                    entry[1].close()
            r = _local.renderer = SurfaceRenderer()
            _all.append((threading.current_thread(), r))
    return r


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
        vertices, faces, vertex_rgba, view, hemi, (w, h), _lighting(lighting, shading),
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
    height_px = int(np.ceil(max(sum(heights), legend_h) + 2 * margin))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
            mode = p.get("lighting") or _lighting(
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
        lax = fig.add_axes(frac(x0, (height_px - box_h) / 2.0, box_w, box_h))
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
