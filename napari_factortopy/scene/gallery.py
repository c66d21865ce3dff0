"""A gallery of small brains: one model's map per cell, all from the same view.

Qt-free (matplotlib, offscreen), for ``factortopy sweep gallery`` and the plugin's
Sweep gallery panel alike. Each thumbnail is the model's :class:`BrainScene` (its
geometry and colours, :func:`~napari_factortopy.scene.brain.load_scene`) drawn with
:func:`~napari_factortopy.scene.render.render_mesh`; :func:`gallery_grid` tiles them
with a caption under each and returns where each cell lies, so that a click on the
grid image names its model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Cell", "gallery_grid", "thumbnail", "thumbnail_cached"]


@dataclass(frozen=True)
class Cell:
    """Where one model's thumbnail lies in the grid image (pixels, rows then columns)."""

    index: int
    row0: int
    col0: int
    row1: int
    col1: int

    def contains(self, row: float, col: float) -> bool:
        return self.row0 <= row < self.row1 and self.col0 <= col < self.col1


def thumbnail(
    model,
    map_name: str = "layer",
    view: str = "ventral",
    size_px: int = 240,
    loader=None,
) -> np.ndarray:
    """One model's map from one view, as a small RGBA image (white background).

    Parameters
    ----------
    model : FittedModel
    map_name : str
        A name of :data:`~napari_factortopy.scene.brain.MAPS`.
    view : str
        A camera preset of :data:`~napari_factortopy.scene.brain.VIEWS`.
    size_px : int
        Width (and height) of the square image.
    loader : callable, optional
        Mesh loader (tests pass synthetic meshes).

    Returns
    -------
    uint8 array of shape (size_px, size_px, 4)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from napari_factortopy.scene.brain import load_scene
    from napari_factortopy.scene.render import render_mesh

    scene = load_scene(model, loader=loader, notify=lambda _msg: None)
    scene.map_name = map_name
    scene.set_view(view)
    verts, faces = scene.geometry()
    rgba = scene.colors()
    toward, down, right = verts[:, 0], verts[:, 1], verts[:, 2]
    if scene.kind == "flat":
        pts, cam = np.stack([right, -down, np.zeros_like(right)], 1), "flat"
    else:  # the screen as the viewer shows it (see scene.figure)
        pts, cam = np.stack([right, -toward, -down], 1), "posterior"
    dpi = 100.0
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    render_mesh(ax, pts, faces, rgba, view=cam, hemi="lh")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def thumbnail_cached(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    map_name: str = "layer",
    view: str = "ventral",
    size_px: int = 240,
    loader=None,
) -> np.ndarray:
    """:func:`thumbnail` of a model file, kept as a PNG in ``cache_dir`` (keyed by the
    file's path, size and modification time, the map, the view and the size)."""
    from PIL import Image

    from napari_factortopy.core.atomic import atomic_path
    from napari_factortopy.core.fitted_model import FittedModel

    p = Path(path)
    st = p.stat()
    tag = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{map_name}|{view}|{size_px}"
    name = hashlib.sha256(tag.encode()).hexdigest()[:20] + ".png"
    target = Path(cache_dir) / name
    if target.is_file():
        try:
            return np.asarray(Image.open(target).convert("RGBA"))
        except OSError:
            pass
    img = thumbnail(FittedModel.load(p), map_name, view, size_px, loader=loader)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    except OSError:
        pass  # a read-only sweep folder: no cache, same picture
    return img


def _caption(text: Sequence[str], width: int, height: int) -> np.ndarray:
    """Lines of text on white, (height, width, 4) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100.0
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    n = max(len(text), 1)
    for i, line in enumerate(text):
        fig.text(
            0.5,
            1 - (i + 0.5) / n,
            line,
            ha="center",
            va="center",
            fontsize=max(6.0, min(10.0, height / n * 0.5)),
            family="sans-serif",
        )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def gallery_grid(
    images: Sequence[np.ndarray],
    captions: Sequence[Sequence[str]] = (),
    n_cols: int | None = None,
    caption_px: int = 34,
    gap_px: int = 6,
    out_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[Cell]]:
    """Tile equally sized RGBA thumbnails into one image, a caption under each.

    Parameters
    ----------
    images : sequence of (h, w, 4) uint8
    captions : sequence of line lists, optional
        One list of lines per image.
    n_cols : int, optional
        Columns (default: about square).
    caption_px, gap_px : int
        Caption height and the white gap between cells.
    out_path : path, optional
        PNG to write (atomically).

    Returns
    -------
    image : uint8 (H, W, 4)
    cells : list of Cell
        Where each image lies (in the order given).
    """
    if not len(images):
        raise ValueError("no models to show")
    h, w = images[0].shape[:2]
    n = len(images)
    n_cols = n_cols or int(np.ceil(np.sqrt(n)))
    n_rows = int(np.ceil(n / n_cols))
    ch = caption_px if captions else 0
    cell_h, cell_w = h + ch + gap_px, w + gap_px
    grid = np.full((n_rows * cell_h + gap_px, n_cols * cell_w + gap_px, 4), 255, np.uint8)
    cells = []
    for i, img in enumerate(images):
        r, c = divmod(i, n_cols)
        y, x = gap_px + r * cell_h, gap_px + c * cell_w
        grid[y : y + h, x : x + w] = img[:h, :w]
        if ch:
            grid[y + h : y + h + ch, x : x + w] = _caption(captions[i], w, ch)
        cells.append(Cell(i, y, x, y + h + ch, x + w))
    if out_path is not None:
        from napari_factortopy.scene.figure import save_png

        save_png(grid, out_path)
    return grid, cells
