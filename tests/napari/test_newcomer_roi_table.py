"""Issue #22 ("also seen"): the ROI table of a model without scores (the phantom's
truth.ftopy) prints no `nan`: columns nobody has numbers for are not shown, a missing
number reads "—"."""

from __future__ import annotations

from ._drive import dock, open_model, settle


def _shown_table(table) -> tuple[list[str], list[list[str]]]:
    """The header texts and cell texts the ROI table shows."""
    native = table.native
    headers = [native.horizontalHeaderItem(j).text() for j in range(native.columnCount())]
    cells = [
        [
            native.item(i, j).text() if native.item(i, j) else ""
            for j in range(native.columnCount())
        ]
        for i in range(native.rowCount())
    ]
    return headers, cells


def test_truth_table_prints_no_nan(make_napari_viewer, phantom_model_path, phantom_root):
    viewer = make_napari_viewer(show=True)
    open_model(viewer, phantom_root / "truth.ftopy")
    table = dock(viewer, "ROI table")
    settle()
    headers, cells = _shown_table(table.table)
    assert cells, "no ROI rows"
    words = [c.lower() for row in cells for c in row]
    assert "nan" not in words, (headers, cells)
    assert not any("score" in h for h in headers), headers  # the truth has no scores
    for h in ("ROI", "vertices", "argmax layer", "mean scale α"):
        assert h in headers, headers
    assert all(row[headers.index("vertices")].isdigit() for row in cells)
    assert table.sort_by.choices == tuple(headers)  # it sorts by what it shows
    # a trained model keeps its score column, with numbers
    viewer.layers.clear()
    open_model(viewer, phantom_model_path)
    table.reset_choices()
    settle()
    headers, cells = _shown_table(table.table)
    scores = [h for h in headers if h.startswith("mean") and ("score" in h or "R²" in h)]
    assert len(scores) == 1, headers  # its score once (nc_test is the score column)
    col = headers.index(scores[0])
    assert all(row[col] not in ("", "nan", "—") for row in cells), cells
