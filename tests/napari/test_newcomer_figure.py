"""Issue #22.10: an exported figure's legend of 20 channel clusters names each cluster
on its own line (the legend grows with its rows)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ._drive import dock, open_model, settle


def _text_bands(column_dark: np.ndarray) -> list[tuple[int, int]]:
    """Runs of rows holding dark (text) pixels: (first, last + 1)."""
    rows = np.flatnonzero(column_dark)
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(rows) > 1)
    starts = np.r_[rows[0], rows[cuts + 1]]
    ends = np.r_[rows[cuts], rows[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def test_twenty_cluster_names_do_not_overlap(make_napari_viewer, model_path, tmp_path):
    """Export figure of the clusters map at 3000 px: the legend's 20 names are 20 text
    lines apart, each beside its own swatch."""
    viewer = make_napari_viewer(show=True)
    open_model(viewer, model_path)
    export = dock(viewer, "Export figure")
    export.maps.value, export.views.value = ["clusters"], ["lateral"]
    export.width_px.value = 3000
    export.out.value = str(tmp_path / "clusters.png")
    export.figure_button.native.click()
    settle()
    assert export.status.value.startswith("wrote"), export.status.value
    image = np.asarray(Image.open(tmp_path / "clusters.png"))[..., :3].astype(int)
    h, w = image.shape[:2]
    legend = image[:, int(0.84 * w) :]  # the legend's column (right 16 %)
    spread = legend.max(-1) - legend.min(-1)
    swatch_cols = np.flatnonzero((spread > 60).sum(0) > 0.05 * h)
    assert len(swatch_cols), "no colour swatches in the legend"
    left = swatch_cols.min()
    swatch_rows = np.flatnonzero(spread[:, swatch_cols].max(1) > 60)
    top, bottom = swatch_rows.min(), swatch_rows.max() + 1
    names = legend[top:bottom, : left - 4]  # the names, left of the swatches
    dark = (names.max(-1) < 110).any(1)
    bands = _text_bands(dark)
    assert len(bands) == 20, f"{len(bands)} text lines for 20 cluster names"
    # each name is centred on its own swatch (1/20 of the column)
    centres = np.array([(a + b) / 2 for a, b in bands])
    want = (np.arange(20) + 0.5) * (bottom - top) / 20
    np.testing.assert_allclose(centres, want, atol=0.25 * (bottom - top) / 20)
    # the legend's title is whole: its text ends before the image's right edge
    assert (image[:top, -3:].max(-1) > 200).all(), "the legend title runs off the figure"
