"""The tables of :func:`~.compare_methods.compare_methods`: ``comparison.csv`` (one row
per method and ROI), ``comparison.md`` (the tables) and ``comparison.json`` (everything,
with the layer-map agreement against a truth), each written atomically.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.config import TrainConfig
from .recovery import markdown_table

__all__ = ["write_tables"]


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_tables(out, rows, per_roi, agreement, roi_names, opts, tcfg) -> None:
    """Write ``comparison.csv``, ``.md`` and ``.json`` into ``out`` from the methods'
    rows, the per-ROI scores and the layer-map agreement."""
    from ..core.atomic import atomic_path

    by = {(p["method"], p["roi"]): p for p in per_roi}
    fields = ["method", "family", "roi", "n", "r2", "r", "nn", "seconds", "steps",
              "ms_per_step", "peak_rss_mb", "rss_increase_mb", "status", "file"]  # fmt: skip
    with atomic_path(out / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            for roi in ["all", *roi_names]:
                p = by.get((row["method"], roi))
                if p is None and roi != "all":
                    continue
                w.writerow({**row, **(p or {"roi": roi})})
    summary_cols = [("method", "method"), ("R² test", "r2"), ("r test", "r"),
                    ("noise-norm. %", "nn"), ("train s", "seconds"), ("steps", "steps"),
                    ("ms/step", "ms_per_step"), ("peak RSS MB", "peak_rss_mb"),
                    ("RSS increase MB", "rss_increase_mb"),
                    ("file", "file")]  # fmt: skip
    md = ["## Methods (test split)", "", markdown_table(rows, summary_cols), ""]
    for key, title in (("r2", "R²"), ("nn", "noise-normalised score (%)")):
        if key == "nn" and all(p["nn"] is None for p in per_roi):
            continue
        table = []
        for row in rows:
            t = {"method": row["method"]}
            for roi in ["all", *roi_names]:
                p = by.get((row["method"], roi))
                t[roi] = None if p is None else p[key]
            table.append(t)
        cols = [("method", "method")] + [(r, r) for r in ["all", *roi_names]]
        md += [f"## Test {title} per ROI", "", markdown_table(table, cols), ""]
    if agreement:
        maps = [k[: -len("_exact")] for k in agreement[0] if k.endswith("_exact")]
        cols = [("ROI", "roi"), ("n", "n"), ("truth mean layer", "truth_mean_layer")]
        for m in maps:
            cols += [(f"{m} exact", f"{m}_exact"), (f"{m} ±1", f"{m}_within1"),
                     (f"{m} mean layer", f"{m}_mean_layer")]  # fmt: skip
        md += ["## Layer maps against the truth (argmax / best layer)", "",
               markdown_table(agreement, cols), ""]  # fmt: skip
    failed = [r for r in rows if r.get("status") == "failed"]
    for r in failed:
        md.append(f"- {r['method']} failed: {r['error']}")
    md.append(
        f"Recipe per torch method: {json.dumps(_recipe_line(tcfg))}; bottleneck "
        f"{opts.bottleneck}, hidden {opts.hidden}, seed {opts.seed}."
    )
    with atomic_path(out / "comparison.md") as tmp:
        Path(tmp).write_text("\n".join(md) + "\n", encoding="utf-8")
    payload = {
        "rows": [{k: _num(v) for k, v in r.items()} for r in rows],
        "per_roi": [{k: _num(v) for k, v in p.items()} for p in per_roi],
        "agreement": agreement,
        "options": {
            "methods": list(opts.methods),
            "max_seconds": opts.max_seconds,
            "bottleneck": opts.bottleneck,
            "hidden": opts.hidden,
            "seed": opts.seed,
            "train": tcfg.to_dict(),
        },
    }
    with atomic_path(out / "comparison.json") as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")


def _recipe_line(tcfg: TrainConfig) -> dict:
    keep = ("recipe", "max_seconds", "batch_size", "lr", "steps_per_epoch", "max_epochs")
    return {k: v for k, v in replace(tcfg).to_dict().items() if k in keep}
