"""The shipped resources: the ROI table against the paper, the generated files against
their generator, the legend tables against closed forms."""

from __future__ import annotations

import colorsys
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from napari_factortopy.core.analyses import DEFAULT_HIERARCHY_LEVELS
from napari_factortopy.core.resources import paper_roi_groups, resource_path, sample_stimuli
from napari_factortopy.data.datasets._base import PAPER_ROI_GROUPS

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "resources"  # the single source; the package links to it


def test_roi_table_is_the_papers():
    # transcribed from the paper (Figure 2 / Table 2) and the NSD label families
    paper = [
        ("V1", "prf-visualrois", ("V1v", "V1d"), 1),
        ("V2", "prf-visualrois", ("V2v", "V2d"), 2),
        ("V3", "prf-visualrois", ("V3v", "V3d"), 2),
        ("V4", "prf-visualrois", ("hV4",), None),
        ("EBA", "floc-bodies", ("EBA",), 4),
        ("FBA", "floc-bodies", ("FBA-1", "FBA-2"), None),
        ("OFA", "floc-faces", ("OFA",), None),
        ("FFA", "floc-faces", ("FFA-1", "FFA-2"), None),
        ("OPA", "floc-places", ("OPA",), 3),
        ("PPA", "floc-places", ("PPA",), None),
        ("OWFA", "floc-words", ("OWFA",), None),
        ("VWFA", "floc-words", ("VWFA-1", "VWFA-2"), None),
    ]
    assert [tuple(g) for g in paper_roi_groups()] == paper
    assert PAPER_ROI_GROUPS == tuple(p[:3] for p in paper)
    assert dict(DEFAULT_HIERARCHY_LEVELS) == {
        "V1": 1, "V1v": 1, "V1d": 1, "V2": 2, "V2v": 2, "V2d": 2,
        "V3": 2, "V3v": 2, "V3d": 2, "OPA": 3, "EBA": 4,
    }  # fmt: skip


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_resources.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(made) == 11, made
    for rel in made:
        shipped = RESOURCES / rel
        assert shipped.is_file(), f"{shipped} is not shipped: run scripts/make_resources.py"
        if rel.suffix == ".png":
            a, b = np.asarray(Image.open(shipped)), np.asarray(Image.open(tmp_path / rel))
            assert a.shape == b.shape and np.array_equal(a, b), f"{rel} is stale"
        else:
            assert shipped.read_text() == (tmp_path / rel).read_text(), f"{rel} is stale"


def test_legend_tables_against_closed_forms():
    meta = json.loads(resource_path("legends.json").read_text())
    assert set(meta) == {"legend_layer_confidence.png", "legend_space.png"}
    lay = np.asarray(Image.open(resource_path("legend_layer_confidence.png")).convert("RGB"))
    spc = np.asarray(Image.open(resource_path("legend_space.png")).convert("RGB"))
    assert lay.shape == spc.shape == (256, 256, 3)
    cool = colormaps["coolwarm"]
    for i, j in [(0, 0), (0, 255), (128, 64), (255, 200), (37, 150)]:
        pos, conf = (j + 0.5) / 256, 1 - i / 255
        bright = 1.2 - (1 - conf) ** 3
        want = np.clip(np.asarray(cool(pos)[:3]) * bright, 0, 1) * 255
        np.testing.assert_allclose(lay[i, j], want, atol=0.51)
        x, y = (2 * j + 1) / 256 - 1, (2 * i + 1) / 256 - 1
        hue = (np.arctan2(y, x) / (2 * np.pi)) % 1
        want = np.asarray(colorsys.hsv_to_rgb(hue, min(1.0, np.hypot(x, y)), 1.0)) * 255
        np.testing.assert_allclose(spc[i, j], want, atol=0.51)
    # the grid centre is white, +x (right edge, middle row) is red
    assert spc[127:129, 127:129].min() > 245
    assert spc[128, 255, 0] == 255 and spc[128, 255, 1:].max() < 5


def test_sample_stimuli_are_listed_licensed_and_square():
    stimuli = sample_stimuli()
    assert list(stimuli) == ["astronaut", "cat", "coffee", "rocket", "camera", "galaxies"]
    with resource_path("stimuli", "stimuli.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert row["licence"] and row["source"].startswith("skimage.data.")
        img = np.asarray(Image.open(stimuli[row["name"]]))
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8 and img.std() > 10


def test_missing_resource_names_the_path():
    import pytest

    with pytest.raises(FileNotFoundError, match=r"nothing\.png: not among the package's"):
        resource_path("nothing.png")
