"""The results index, ``OUT/results.csv``: one row per finished model (write, read)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "INDEX_HEAD",
    "INDEX_NAME",
    "INDEX_TAIL",
    "TEXT_COLUMNS",
    "index_row",
    "read_index",
    "write_index",
]

INDEX_NAME = "results.csv"
#: Columns of the index before the per-ROI R² columns (``r2_<ROI>``) and after them.
INDEX_HEAD = (
    "key",
    "dataset",
    "backbone",
    "spec",
    "layers",
    "recipe",
    "seed",
    "r2_test_mean",
    "r_test_mean",
)
INDEX_TAIL = (
    "hierarchy_slope",
    "hierarchy_intercept",
    "convergence_state",
    "convergence_line",
    "selectors",
    "steps",
    "epochs",
    "train_seconds",
    "job_seconds",
    "peak_rss_mb",
    "device",
    "n_vertices",
    "path",
)
TEXT_COLUMNS = (
    "key",
    "dataset",
    "backbone",
    "spec",
    "layers",
    "recipe",
    "path",
    "convergence_state",
    "convergence_line",
    "selectors",
    "device",
)


def index_row(model_path: Path, meta: Mapping[str, Any], run: Mapping | None, root: Path):
    """One index row: a model's scores, hierarchy slope, convergence and job costs."""
    import numpy as np

    from ...core.analyses import hierarchy_levels, hierarchy_slope
    from ...core.fitted_model import FittedModel
    from ...core.selector_check import model_selector_check

    m = FittedModel.load(model_path)
    s = m.summary
    conv = s.get("convergence") or {}
    row: dict[str, Any] = {k: meta.get(k, "") for k in INDEX_HEAD[:7]}
    row["r2_test_mean"] = s.get("r2_test_mean")
    row["r_test_mean"] = s.get("r_test_mean")
    r2 = m.scores.get("r2_test")
    for k, name in enumerate(m.roi_names, start=1):
        vals = None if r2 is None else np.asarray(r2)[np.asarray(m.roi) == k]
        row[f"r2_{name}"] = (
            float(np.nanmean(vals)) if vals is not None and np.isfinite(vals).any() else None
        )
    slope = intercept = None
    if m.roi_names:
        try:
            hs = hierarchy_slope(m.layer, hierarchy_levels(m.roi, m.roi_names))
            slope, intercept = float(hs.slope), float(hs.intercept)
        except ValueError:
            pass
    row.update(
        hierarchy_slope=slope,
        hierarchy_intercept=intercept,
        convergence_state=conv.get("state", ""),
        convergence_line=conv.get("line", ""),
        selectors=(model_selector_check(m) or {}).get("line") or "",
        steps=s.get("steps"),
        epochs=s.get("epochs"),
        train_seconds=s.get("train_seconds"),
        job_seconds=(run or {}).get("seconds"),
        peak_rss_mb=(run or {}).get("peak_rss_mb"),
        device=s.get("device", ""),
        n_vertices=m.n_vertices,
        path=os.path.relpath(model_path, root),
    )
    return row


def write_index(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write index rows as CSV (columns: the fixed ones, per-ROI R² in between)."""
    from ...core.atomic import atomic_path

    rois: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("r2_") and k not in ("r2_test_mean",) and k not in rois:
                rois.append(k)
    cols = [*INDEX_HEAD, *rois, *INDEX_TAIL]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_path(path, suffix=".csv") as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    return path


def read_index(folder: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The rows of a sweep folder's ``results.csv`` (numbers as float), or None."""
    p = Path(folder)
    p = p / INDEX_NAME if p.is_dir() else p
    if not p.is_file():
        return None
    rows = []
    with p.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k in TEXT_COLUMNS:
                    row[k] = v
                    continue
                try:
                    row[k] = float(v) if v != "" else float("nan")
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows
