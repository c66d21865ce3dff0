"""Sweep gallery: every model of a sweep as a small brain, one grid image; click to open.

The grid is drawn offscreen (:func:`napari_factortopy.app.sweep.gallery`, the same
picture as ``factortopy sweep gallery``) and shown as one RGBA image layer. A click on
a cell (or the "Open" button with the model chosen in the list) opens that model in
full through the plugin's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy.scene.brain import MAPS, VIEWS

if TYPE_CHECKING:
    import napari

__all__ = ["GalleryWidget"]

LAYER_NAME = "sweep gallery"


class GalleryWidget(widgets.Container):
    """Choose a sweep folder → a grid of its models' maps, sortable by any index column.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.folder = widgets.FileEdit(
            label="sweep folder",
            mode="d",
            value="",
            tooltip="a sweep's output folder (holding results.csv), or pick its TOML's `out`",
        )
        self.map_name = widgets.ComboBox(
            label="map", choices=list(MAPS), value="layer", tooltip="the map every brain shows"
        )
        self.view = widgets.ComboBox(
            label="view", choices=list(VIEWS), value="ventral", tooltip="the same camera for all"
        )
        self.sort_by = widgets.ComboBox(
            label="sort by",
            choices=["(index order)"],
            value="(index order)",
            tooltip="any column of results.csv",
        )
        self.descending = widgets.CheckBox(label="descending", value=True, tooltip="largest first")
        self.size = widgets.SpinBox(
            label="brain size (px)", value=200, min=80, max=800,
            tooltip="width of each model's brain in the grid, in pixels",
        )  # fmt: skip
        self.show_button = widgets.PushButton(text="Show gallery", tooltip="draw the grid")
        self.rows: list[dict] = []
        self.models = widgets.ComboBox(
            label="model",
            choices=self._model_keys,
            tooltip="the models in grid order (click a brain too)",
        )
        self.open_button = widgets.PushButton(text="Open model", tooltip="open it in full")
        self.status = widgets.Label(label="status", value="choose a sweep folder")
        self.extend(
            [
                self.folder,
                self.map_name,
                self.view,
                self.sort_by,
                self.descending,
                self.size,
                self.show_button,
                self.models,
                self.open_button,
                self.status,
            ]
        )
        self.cells: list = []
        self.layer = None
        self.worker = None
        self._shown: tuple = ("layer", "ventral", None)
        self.folder.changed.connect(self._on_folder)
        self.show_button.changed.connect(self.show_gallery)
        self.open_button.changed.connect(self._on_open)

    # ------------------------------------------------------------ actions
    def _root(self) -> Path | None:
        text = str(self.folder.value or "").strip()
        return Path(text) if text and text != "." else None

    def _on_folder(self, _=None) -> None:
        from napari_factortopy.app.sweep import read_index

        root = self._root()
        rows = read_index(root) if root and root.is_dir() else None
        if rows is None:
            self.status.value = f"no results.csv in {root}" if root else "choose a sweep folder"
            return
        cols = ["(index order)", *(list(rows[0]) if rows else [])]
        self.sort_by.choices = cols
        if "r2_test_mean" in cols:
            self.sort_by.value = "r2_test_mean"
        self.status.value = f"{len(rows)} models in {root.name}/results.csv"

    def show_gallery(self, _=None, *, sync: bool = False) -> np.ndarray | None:
        """Draw the grid offscreen and show it as an image layer.

        The button draws in a worker thread (a sweep of a hundred models takes a while
        the first time; thumbnails are cached in the sweep folder); ``sync=True``
        draws here and returns the image.
        """
        from napari_factortopy.app.sweep import gallery

        root = self._root()
        if root is None:
            self.status.value = "choose a sweep folder"
            return None
        sort = None if self.sort_by.value == "(index order)" else self.sort_by.value
        args = (root, self.map_name.value, self.view.value)
        kwargs = {
            "sort_by": sort,
            "descending": bool(self.descending.value),
            "size_px": int(self.size.value),
        }
        self._shown = (self.map_name.value, self.view.value, sort)
        if sync:
            try:
                result = gallery(*args, **kwargs)
            except (OSError, ValueError) as exc:
                self.status.value = f"cannot draw: {exc}"
                return None
            return self._show(result)
        from napari.qt.threading import create_worker

        worker = create_worker(gallery, *args, **kwargs, _start_thread=False)
        worker.returned.connect(self._show)
        worker.errored.connect(self._failed)
        self.worker = worker
        self.show_button.enabled = False
        worker.finished.connect(lambda: setattr(self.show_button, "enabled", True))
        self.status.value = f"drawing {root.name} …"
        worker.start()
        return None

    def _failed(self, exc: BaseException) -> None:
        self.status.value = f"cannot draw: {exc}"

    def _show(self, result) -> np.ndarray:
        image, cells, rows = result
        self.rows, self.cells = rows, cells
        if LAYER_NAME in self.viewer.layers:
            self.layer = self.viewer.layers[LAYER_NAME]
            self.layer.data = image
            self.layer.visible = True
        else:
            self.layer = self.viewer.add_image(image, name=LAYER_NAME, rgb=True)
            self.layer.mouse_drag_callbacks.append(self._on_click)
        self.viewer.layers.selection.active = self.layer
        self.viewer.dims.ndisplay = 2
        self.viewer.reset_view()
        self.models.reset_choices()
        map_name, view, sort = self._shown
        text = f"{len(rows)} models, map {map_name}, view {view}"
        self.status.value = text + (f", sorted by {sort}" if sort else "")
        return image

    def _model_keys(self, _widget=None) -> list[str]:
        return [r["key"] for r in self.rows]

    def row_at(self, row: float, col: float) -> dict | None:
        """The index row drawn at a pixel of the grid image (None between cells)."""
        for cell, r in zip(self.cells, self.rows, strict=False):
            if cell.contains(row, col):
                return r
        return None

    def _on_click(self, layer, event) -> None:
        pos = layer.world_to_data(event.position)
        hit = self.row_at(float(pos[-2]), float(pos[-1]))
        if hit is not None:
            self.models.value = hit["key"]
            self.open_model(hit)

    def _on_open(self, _=None) -> None:
        key = self.models.value
        hit = next((r for r in self.rows if r["key"] == key), None)
        if hit is not None:
            self.open_model(hit)

    def open_model(self, row: dict):
        """Open a model of the sweep in full (the plugin's reader); returns its layers."""
        layers = self.viewer.open(row["abs_path"], plugin="napari-factortopy")
        if self.layer is not None:
            self.layer.visible = False
        self.status.value = f"opened {row['key']}"
        return layers
