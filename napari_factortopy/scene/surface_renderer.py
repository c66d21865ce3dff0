"""Off-screen drawing of one coloured mesh into pixels by VTK (pyvista).

One renderer draws every surface panel: an off-screen :class:`pyvista.Plotter`
(:class:`SurfaceRenderer`), created once per thread (:func:`renderer`) and reused for
every panel, since its first render (OpenGL context, shaders) costs seconds and each
further panel well under one. The camera is orthographic and placed by
:func:`~.views.view_basis`, the same table the napari canvas's presets use, so a
figure's views match the viewer.

No display is needed: without ``$DISPLAY`` (Linux) VTK renders through EGL (its
wheels since 9.4 carry it; Mesa's software EGL where there is no GPU); with a display
or under Xvfb it uses GLX. Lighting is ``"flat"`` by default: the vertex colours
reach the pixels exactly (quantitative maps); ``"shaded"`` adds a headlight (ambient
0.35, diffuse 0.65) for a sense of shape.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time

import numpy as np

from .views import camera_basis, lighting_mode

__all__ = ["SurfaceRenderer", "renderer"]


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
        mode = lighting_mode(lighting)
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
        right, up, forward = camera_basis(view, hemi)
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
