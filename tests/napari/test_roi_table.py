"""ROI table panel: per-ROI numbers against a plain loop; sorting; CSV export."""

from __future__ import annotations

import csv
import json
import math

import numpy as np

from ._drive import dock, open_model


def _naive(model, key):
    rows = {}
    for k, name in enumerate(model.roi_names, start=1):
        members = [i for i in range(model.n_vertices) if model.roi[i] == k]
        if not members:
            continue
        votes = [0] * model.n_layers
        confs, scores, scales = [], [], []
        for i in members:
            p = model.layer[i]
            votes[int(np.argmax(p))] += 1
            h = -sum(x * math.log(x) for x in p if x > 0)
            confs.append(1 - h / math.log(model.n_layers))
            scores.append(float(model.scores[key][i]))
            scales.append(float(model.scale[i]))
        best = max(range(model.n_layers), key=lambda l: (votes[l], -l))
        rows[name] = {
            "n_vertices": len(members),
            "score": sum(scores) / len(scores),
            "layer": model.backbone["layer_names"][best],
            "layer_share": votes[best] / len(members),
            "confidence": sum(confs) / len(confs),
            "scale": sum(scales) / len(scales),
        }
    return rows


def test_roi_table_numbers_sorting_and_csv(make_napari_viewer, model_path, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    open_model(viewer, model_path)
    widget = dock(viewer, "ROI table")
    assert widget.score_key.choices == ("r2_test", "r_test")
    want = _naive(tiny_model, "r2_test")
    got = {r["roi"]: r for r in widget.rows}
    assert set(got) == set(want)
    for name, w in want.items():
        assert got[name]["layer"] == w["layer"] and got[name]["n_vertices"] == w["n_vertices"]
        for key in ("score", "layer_share", "confidence", "scale"):
            np.testing.assert_allclose(got[name][key], w[key], rtol=1e-6, err_msg=key)
    widget.score_key.value = "r_test"
    np.testing.assert_allclose(
        [r["score"] for r in widget.rows],
        [_naive(tiny_model, "r_test")[r["roi"]]["score"] for r in widget.rows],
        rtol=1e-6,
    )
    widget.sort_by.value = "mean score"
    widget.descending.value = True
    scores = [r["score"] for r in widget.rows]
    assert scores == sorted(scores, reverse=True)
    table = widget.table.data.to_list()
    assert [row[0] for row in table] == [r["roi"] for r in widget.rows]  # shown as sorted
    widget.out.value = str(tmp_path / "rois.csv")
    widget.save_button.native.click()  # the user's Save
    path = tmp_path / "rois.csv"
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0][2] == "mean r (test)"
    assert [line[0] for line in lines[1:]] == [r["roi"] for r in widget.rows]
    np.testing.assert_allclose([float(x[2]) for x in lines[1:]], scores, rtol=1e-9)
    assert "warning" not in lines[0]  # a finished model with decided selectors
    # the sidecar says what the table alone would not (BIDS-style column descriptions)
    from napari_factortopy.core.analyses import confidence_note

    side = json.loads((tmp_path / "rois.json").read_text())
    assert widget.status.value.startswith(f"wrote {path} and rois.json")
    assert side["Model"] == str(model_path) and side["Warnings"] == []
    assert side["HierarchySlope"] == widget.slope.value
    assert {h: "Description" in side[h] for h in lines[0]} == dict.fromkeys(lines[0], True)
    assert "r (test)" in side["mean r (test)"]["Description"]
    assert side["mean confidence"]["Caveat"] == confidence_note()


def test_confidence_column_says_what_it_can_say(
    make_napari_viewer, model_path, phantom_model_path, phantom_root
):
    """Issue 23: with two ROIs or more showing a confidence, the panel says under the
    table (and on the column's header) that differences below 0.2 are not a finding;
    a phantom's truth (given weights) shows no such note."""
    from napari_factortopy.core.analyses import confidence_note

    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    widget = dock(viewer, "ROI table")
    assert not widget.note.native.isHidden() and widget.note.value == confidence_note()
    header = widget.table.native.horizontalHeaderItem(
        [widget.table.native.horizontalHeaderItem(i).text()
         for i in range(widget.table.native.columnCount())].index("mean confidence")
    )  # fmt: skip
    assert header.toolTip() == confidence_note()
    viewer.layers.remove(layer)
    open_model(viewer, phantom_root / "truth.ftopy")
    widget.model_choice.reset_choices()
    widget._on_model()
    assert widget.note.native.isHidden() and widget.note.value == ""
