"""The non-code assets shipped in the wheel (``napari_factortopy/resources/`` in an install).

The single source is the repository's top-level ``resources/``; the package's
``resources`` is a link to it in the source tree, and the wheel holds regular files.

- ``roi_groups.csv``: the paper's ROI groups over the NSD label families and their
  hierarchy levels (the source of :data:`napari_factortopy.core.analyses.
  DEFAULT_HIERARCHY_LEVELS` and the datasets' ``PAPER_ROI_GROUPS``);
- ``legend_layer_confidence.png``, ``legend_space.png``, ``legends.json``: the 2-D
  legend colour tables of the layer and space maps (256 × 256 RGB), for composing
  figures elsewhere; ``legends.json`` says what each axis means;
- ``stimuli/*.png`` + ``stimuli/stimuli.csv``: small sample stimuli (224 × 224 crops of
  scikit-image's bundled photographs, with their source and licence) for trying a
  model's prediction on an image;
- ``factortopy.png``: the plugin's icon (napari.yaml).

``scripts/make_resources.py`` writes every file except ``roi_groups.csv`` (the table is
the source); a test checks the shipped files are what it writes.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources as _resources
from pathlib import Path
from typing import NamedTuple

__all__ = ["ROIGroup", "paper_roi_groups", "resource_path", "sample_stimuli"]


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource file (``resource_path("stimuli", "coffee.png")``).

    Raises
    ------
    FileNotFoundError
        Naming the path when the file is not in the installed package.
    """
    root = Path(str(_resources.files("napari_factortopy"))) / "resources"
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not among the package's resources (broken install?)")
    return path


class ROIGroup(NamedTuple):
    """One row of ``roi_groups.csv``."""

    group: str
    family: str
    members: tuple[str, ...]
    #: Table 2's hierarchy level, None when the group is not ranked.
    level: int | None


@functools.cache
def paper_roi_groups() -> tuple[ROIGroup, ...]:
    """The rows of ``roi_groups.csv`` in file order (earlier groups win overlaps)."""
    path = resource_path("roi_groups.csv")
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            members = tuple(r["members"].split())
            level = int(r["hierarchy_level"]) if r["hierarchy_level"].strip() else None
            if not r["group"] or not r["family"] or not members:
                raise ValueError("empty group, family or members")
        except (KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: row {i} is malformed ({exc}): {r}") from exc
        out.append(ROIGroup(r["group"], r["family"], members, level))
    return tuple(out)


def sample_stimuli() -> dict[str, Path]:
    """The shipped sample stimuli: name → PNG path, in ``stimuli.csv`` order."""
    table = resource_path("stimuli", "stimuli.csv")
    with table.open(newline="") as fh:
        return {r["name"]: resource_path("stimuli", r["file"]) for r in csv.DictReader(fh)}
