"""A sweep's models as one grid of small brains, from its results index."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .index import INDEX_NAME, read_index
from .spec import sweep_folder

__all__ = ["caption", "gallery", "sort_rows"]


def sort_rows(rows: list[dict[str, Any]], by: str | None, descending: bool = False) -> list:
    """Index rows sorted by a column (numbers numerically, missing values last)."""
    import math

    if not by:
        return list(rows)

    def missing(v: Any) -> bool:
        return v is None or v == "" or (isinstance(v, float) and math.isnan(v))

    have = [r for r in rows if not missing(r.get(by))]
    rest = [r for r in rows if missing(r.get(by))]
    numeric = all(isinstance(r[by], int | float) for r in have)
    have.sort(key=(lambda r: r[by]) if numeric else (lambda r: str(r[by])), reverse=descending)
    return have + rest


def caption(row: Mapping[str, Any]) -> list[str]:
    """Two caption lines of a gallery cell."""
    r2 = row.get("r2_test_mean")
    try:
        r2s = f"R² {float(r2):.3f}"
    except (TypeError, ValueError):
        r2s = "R² -"
    seed = row.get("seed")
    seed = int(seed) if isinstance(seed, float) and seed == seed else seed
    return [f"{row.get('backbone', '?')} · {row.get('recipe', '')} · s{seed}",
            f"{row.get('dataset', '')} · {r2s}"]  # fmt: skip


def gallery(
    folder: str | os.PathLike,
    map_name: str = "layer",
    view: str = "ventral",
    sort_by: str | None = None,
    descending: bool = False,
    size_px: int = 220,
    n_cols: int | None = None,
    out_path: str | os.PathLike | None = None,
    loader=None,
):
    """The sweep's models as a grid of small brains (same map, same view).

    Returns
    -------
    image : uint8 (H, W, 4)
    cells : list of scene.gallery.Cell
    rows : list of dict
        The index rows in grid order (``rows[i]`` is drawn in ``cells[i]``); each has
        ``abs_path``, its model file.
    """
    from ...scene.gallery import gallery_grid, thumbnail_cached

    root = sweep_folder(folder)
    rows = read_index(root)
    if rows is None:
        raise FileNotFoundError(
            f"{root}: no {INDEX_NAME}; run `factortopy sweep collect {root}` first"
        )
    if not rows:
        raise ValueError(f"{root / INDEX_NAME} lists no models yet")
    if sort_by and sort_by not in rows[0]:
        raise ValueError(f"no column {sort_by!r} in {root / INDEX_NAME}; columns: {list(rows[0])}")
    rows = sort_rows(rows, sort_by, descending)
    thumbs = []
    for r in rows:
        r["abs_path"] = str((root / r["path"]).resolve())
        thumbs.append(
            thumbnail_cached(
                r["abs_path"], root / "gallery-cache", map_name, view, size_px, loader=loader
            )
        )
    image, cells = gallery_grid(
        thumbs, [caption(r) for r in rows], n_cols=n_cols, out_path=out_path
    )
    return image, cells, rows
