"""ROI table: per ROI, how many vertices, how well fitted, which layer, how sure, how global.

Rows come from :func:`napari_factortopy.scene.tables.roi_rows`; click a header (or use
"sort by") to sort, and save the table as CSV. Under the table, the hierarchy slope
across the ROIs' levels with its interval, as ``factortopy info`` words it
(:func:`napari_factortopy.scene.tables.slope_line`), or why the model has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui import widgets

from napari_factortopy._napari._common import ModelChoice, StatusText
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.core.analyses import CONFIDENCE_RESOLUTION, confidence_note
from napari_factortopy.scene.brain import score_label
from napari_factortopy.scene.tables import (
    COLUMNS,
    roi_rows,
    score_note,
    sidecar_path,
    slope_line,
    write_csv,
)

if TYPE_CHECKING:
    import napari

__all__ = ["RoiTableWidget"]


class RoiTableWidget(widgets.Container):
    """A sortable per-ROI table of the chosen model, with CSV export.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.rows: list[dict] = []
        self.model_choice = ModelChoice(viewer)
        self.score_key = widgets.ComboBox(
            label="score", choices=self._score_keys, tooltip="score averaged per ROI"
        )
        self.sort_by = widgets.ComboBox(
            label="sort by", choices=self._sort_names, value="ROI",
            tooltip="column to sort by (clicking a header sorts too)",
        )  # fmt: skip
        self.descending = widgets.CheckBox(text="descending", value=False, tooltip="largest first")
        self.table = widgets.Table(value=[], columns=list(COLUMNS.values()))
        self.table.read_only = True
        self.table.native.setSortingEnabled(True)
        self.out = widgets.FileEdit(
            label="save as", mode="w", filter="*.csv",
            value=str(Path.home() / "factortopy" / "rois.csv"), tooltip="CSV file to write",
        )  # fmt: skip
        self.save_button = widgets.PushButton(
            text="Export CSV",
            tooltip="write the table as CSV, with a .json sidecar beside it: what each "
            "column holds, the slope line, caveats and warnings",
        )
        self.slope = StatusText(  # room for an unfinished model's reason too
            label="slope", value="", max_lines=8,
            tooltip="hierarchy slope (paper Table 2): expected layer against ROI level "
            "(V1 … EBA), with its interval and its reading within ±1 layer of each "
            "vertex's mode (mode-centred); far weight: the mean layer weight further "
            "from the mode. The same line as `factortopy info`",
        )  # fmt: skip
        self.note = StatusText(  # what per-ROI confidence can say: shown with its column
            label="confidence", value="", max_lines=8,
            tooltip=f"why per-ROI confidence differences below {CONFIDENCE_RESOLUTION:.1f} "
            "are not a finding (BENCHMARKS.md: on phantoms the truth's layer mixture fit "
            "at most 0.4 % better)",
        )  # fmt: skip
        self.status = StatusText(label="status", value="")
        self.extend(
            [self.model_choice, self.score_key, self.sort_by, self.descending, self.table,
             self.slope, self.note, self.out, self.save_button, self.status]
        )  # fmt: skip
        self.model_choice.changed.connect(self._on_model)
        self.score_key.changed.connect(self._on_model)
        self.sort_by.changed.connect(self._on_sort)
        self.descending.changed.connect(self._on_sort)
        self.save_button.changed.connect(self._on_save)
        self._slope_of = None  # the model whose slope line is shown
        self._on_model()

    def _score_keys(self, _widget=None) -> list[str]:
        layer = self.model_choice.layer
        scene = None if layer is None else scene_for_layer(layer)
        return [] if scene is None else list(scene.model.scores)

    def _on_model(self, _=None) -> list[dict]:
        layer = self.model_choice.layer
        scene = None if layer is None else scene_for_layer(layer)
        if scene is None:
            self.rows = []
            self.slope.value, self._slope_of = "", None
        else:
            with self.score_key.changed.blocked():
                self.score_key.reset_choices()
            self.rows = roi_rows(scene.model, self.score_key.value)
            if scene.model is not self._slope_of:  # once per model, not per score
                self.slope.value = slope_line(scene.model)
                self._slope_of = scene.model
        self.status.value = f"{len(self.rows)} ROIs" if self.rows else "no ROIs"
        if scene is not None:  # where the scores stand: normalised, or raw R²
            self.status.value += f"; {score_note(scene.model)}"
        self._on_sort()
        return self.rows

    def _headers(self) -> dict[str, str]:
        """Shown columns (key → header): those some row has a number or name for (a
        model without scores shows no score columns), ROI and vertices always."""
        headers = dict(COLUMNS)
        if self.score_key.value:
            headers["score"] = f"mean {score_label(self.score_key.value)}"
        if self.score_key.value == "nc_test":  # the score column shows it already
            headers.pop("nc_score")
        keep = {"roi", "n_vertices"}
        return {
            k: h for k, h in headers.items() if k in keep or any(_has(r[k]) for r in self.rows)
        }

    def _sort_names(self, _widget=None) -> list[str]:
        """The "sort by" choices: the shown columns (by their plain names)."""
        return [COLUMNS[k] for k in self._headers()]

    def _on_sort(self, _=None) -> None:
        headers = self._headers()
        if self._sort_names() != list(self.sort_by.choices):  # sort by what is shown
            with self.sort_by.changed.blocked():
                was = self.sort_by.value
                self.sort_by.reset_choices()
                self.sort_by.value = was if was in self.sort_by.choices else "ROI"
        key = {v: k for k, v in COLUMNS.items()}[self.sort_by.value]
        filled = [r for r in self.rows if r[key] == r[key]]  # NaN last, either way
        empty = [r for r in self.rows if r[key] != r[key]]
        filled.sort(key=lambda r: r[key], reverse=bool(self.descending.value))
        self.rows = filled + empty
        data = [[_cell(r[k]) for k in headers] for r in self.rows]
        self.table.native.setSortingEnabled(False)  # fill in order, then let headers sort
        index = [str(i + 1) for i in range(len(data))]
        self.table.value = {"data": data, "index": index, "columns": list(headers.values())}
        self.table.native.setSortingEnabled(True)
        self._show_confidence_note(list(headers))

    def _show_confidence_note(self, keys: list[str]) -> None:
        """Under the table and on the confidence column's header: what per-ROI confidence
        can say, while two ROIs or more show one."""
        layer = self.model_choice.layer
        scene = None if layer is None else scene_for_layer(layer)
        shown = "confidence" in keys and sum(_has(r["confidence"]) for r in self.rows) > 1
        note = confidence_note(scene.model.kind) if shown and scene is not None else ""
        self.note.value, self.note.visible = note, bool(note)
        if note:
            self.table.native.horizontalHeaderItem(keys.index("confidence")).setToolTip(note)

    def _on_save(self, _=None) -> Path | None:
        if not self.rows:
            self.status.value = "no ROIs to save"
            return None
        layer = self.model_choice.layer
        scene = None if layer is None else scene_for_layer(layer)
        source = None if layer is None else (layer.source.path or layer.name)
        path = write_csv(
            self.rows,
            str(self.out.value),
            self.score_key.value,
            model=None if scene is None else scene.model,
            source=source,
        )
        side = f" and {sidecar_path(path).name} (what the columns hold, caveats)" if scene else ""
        self.status.value = f"wrote {path}{side} ({len(self.rows)} ROIs)"
        return path


def _has(value) -> bool:
    """Whether a cell holds something: not NaN, not an empty name."""
    return value == value and value != ""


def _cell(value):
    """A cell as shown: floats to 4 decimals, a missing number as "—"."""
    if isinstance(value, float):
        return round(value, 4) if value == value else "—"
    return value
