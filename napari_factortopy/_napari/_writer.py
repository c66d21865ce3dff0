"""Save a shown surface map for Workbench, freeview, nilearn and pycortex.

The writer contribution ``napari-factortopy.write_map`` takes a FactorTopy surface
layer and writes its current map (the numbers, not the colours), one file per
hemisphere on the mesh it is shown on: for ``out/name.func.gii`` it writes
``out/lh.name.func.gii`` and ``out/rh.name.func.gii``.

- ``.func.gii``: float32 per vertex (NaN where unmodelled); a 2-column map (space)
  becomes two data arrays.
- ``.label.gii``: int32 labels with a label table (label maps only: ``layer``,
  ``clusters``, ``roi``; 0 = unmodelled / none).
- ``.mgz`` / ``.mgh``: FreeSurfer MGH, shape (n, 1, 1) or (n, 1, 1, k), float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_factortopy.core.atomic import atomic_path

__all__ = ["SUFFIXES", "hemisphere_paths", "napari_write_map", "write_map"]

SUFFIXES = (".func.gii", ".label.gii", ".mgz", ".mgh")


def _suffix(path: str) -> str:
    low = path.lower()
    for s in SUFFIXES:
        if low.endswith(s):
            return s
    raise ValueError(f"{path}: expected one of {', '.join(SUFFIXES)}")


def hemisphere_paths(path: str | os.PathLike) -> dict[str, Path]:
    """``{"lh": dir/lh.name.ext, "rh": dir/rh.name.ext}`` for ``dir/name.ext``."""
    p = Path(path)
    return {h: p.with_name(f"{h}.{p.name}") for h in ("lh", "rh")}


def write_map(
    path: str | os.PathLike,
    values: np.ndarray,
    n_lh: int,
    label_names: Sequence[str] | None = None,
    map_name: str = "map",
) -> list[str]:
    """Write a both-hemisphere map as one file per hemisphere.

    Parameters
    ----------
    path : path
        ``name.func.gii``, ``name.label.gii``, ``name.mgz`` or ``name.mgh``.
    values : array of shape (n_lh + n_rh,) or (n_lh + n_rh, k)
        One row per mesh vertex, left hemisphere first.
    n_lh : int
        Mesh vertices of the left hemisphere.
    label_names : sequence of str, optional
        Names of labels 1, 2, … (for ``.label.gii``; required there).
    map_name : str
        Stored as the data arrays' intent name / label table title.

    Returns
    -------
    list of str
        The paths written (left, right).
    """
    import nibabel as nib

    suffix = _suffix(os.fspath(path))
    vals = np.asarray(values)
    if vals.ndim == 1:
        vals = vals[:, None]
    written = []
    for hemi, out in hemisphere_paths(path).items():
        part = vals[:n_lh] if hemi == "lh" else vals[n_lh:]
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".label.gii":
            if label_names is None:
                raise ValueError(
                    f"the {map_name!r} map holds continuous values; save it as .func.gii, "
                    ".mgz or .mgh (.label.gii is for layer, cluster and ROI maps)"
                )
            img = _label_gifti(part[:, 0].astype(np.int32), list(label_names), map_name)
        elif suffix == ".func.gii":
            arrays = [
                nib.gifti.GiftiDataArray(
                    part[:, j].astype(np.float32),
                    intent="NIFTI_INTENT_NONE",
                    datatype="NIFTI_TYPE_FLOAT32",
                    meta=nib.gifti.GiftiMetaData({"Name": f"{map_name}[{j}]"}),
                )
                for j in range(part.shape[1])
            ]
            img = nib.gifti.GiftiImage(darrays=arrays)
        else:
            data = part.astype(np.float32).reshape(len(part), 1, 1, -1)
            img = nib.MGHImage(data[..., 0] if data.shape[3] == 1 else data, np.eye(4))
        with atomic_path(out, suffix=suffix) as tmp:
            nib.save(img, str(tmp))
        written.append(str(out))
    return written


def _label_gifti(labels: np.ndarray, names: list[str], title: str):
    import nibabel as nib

    from napari_factortopy.core.colours import cluster_palette

    table = nib.gifti.GiftiLabelTable()
    pal = cluster_palette(max(len(names), 1))
    for key, name, rgba in [(0, "none", (0.5, 0.5, 0.5, 0.0))] + [
        (i + 1, n, tuple(pal[i])) for i, n in enumerate(names)
    ]:
        lab = nib.gifti.GiftiLabel(
            key=key, red=rgba[0], green=rgba[1], blue=rgba[2], alpha=rgba[3]
        )
        lab.label = name
        table.labels.append(lab)
    arr = nib.gifti.GiftiDataArray(
        labels,
        intent="NIFTI_INTENT_LABEL",
        datatype="NIFTI_TYPE_INT32",
        meta=nib.gifti.GiftiMetaData({"Name": title}),
    )
    return nib.gifti.GiftiImage(darrays=[arr], labeltable=table)


def napari_write_map(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: the current map of a FactorTopy surface layer.

    Returns an empty list (napari then reports that nothing was written) for a
    surface layer that does not come from a FactorTopy model.
    """
    from napari_factortopy._napari._layers import META_KEY

    info = (meta.get("metadata") or {}).get(META_KEY)
    if not info or "values" not in info:
        return []
    return write_map(
        path,
        info["values"],
        int(info["n_lh_mesh"]),
        info.get("label_names"),
        str(info.get("map", "map")),
    )
