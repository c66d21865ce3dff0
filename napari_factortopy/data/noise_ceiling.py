"""A user-given noise-ceiling file (e.g. for Algonauts 2023) → one value per modelled vertex.

The Algonauts 2023 release holds no noise ceilings; NSD's are per fsaverage vertex
(``{lh,rh}.ncsnr.mgh``, read by the NSD reader itself). A lab brings its own as
``.npy`` or ``.npz``, in one of these layouts:

- ``(V,)``: one value per modelled vertex, in the model's order (left hemisphere first);
- ``(2 · M,)`` or ``(2, M)``: the whole mesh, left then right (M vertices per
  hemisphere, 163,842 for fsaverage), read at the model's vertex ids;
- ``.npz`` with ``lh`` and ``rh`` arrays of M values each.

Values are the noise ceiling NC in percent of explainable variance (0–100, as NSD and
the challenge write it), or fractions (0–1): a file whose finite values are all ≤ 1
is read as fractions, and said so. NaN means "no ceiling known" (such vertices get no
normalised score).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.fitted_model import FSAVERAGE_SIZES

__all__ = ["read_noise_ceiling"]


def _load(path: Path) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if not {"lh", "rh"} <= set(f.files):
                    raise ValueError(
                        f"{path}: a noise-ceiling .npz needs arrays 'lh' and 'rh'; it holds "
                        f"{sorted(f.files)}"
                    )
                return np.asarray(f["lh"]).ravel(), np.asarray(f["rh"]).ravel()
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such noise-ceiling file") from None
    except (OSError, ValueError) as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(
            f"{path}: expected a noise ceiling as .npy (or .npz with lh, rh); cannot read "
            f"it ({exc})"
        ) from exc


def read_noise_ceiling(
    path: str | os.PathLike,
    vertex_ids: np.ndarray,
    n_lh: int,
    mesh: str,
) -> tuple[np.ndarray, str]:
    """The noise ceiling of the modelled vertices, as fractions, and a note saying how it was read.

    Parameters
    ----------
    path : path
        ``.npy`` or ``.npz`` in one of the layouts of the module docstring.
    vertex_ids : int array of shape (V,)
        The modelled vertices' per-hemisphere mesh indices, left hemisphere first.
    n_lh : int
        How many of them are left.
    mesh : str
        Their mesh (``"fsaverage"``, ``"fsaverage5"``…), for the whole-mesh layouts.

    Returns
    -------
    nc : array of shape (V,), float32
        Fraction of explainable variance in [0, 1]; NaN where unknown.
    note : str
        The file, its layout and its unit, for the model file and the user.

    Raises
    ------
    ValueError
        A layout that fits none of the above (the shapes it could have had are named),
        or values outside 0–100.
    """
    path = Path(path)
    ids = np.asarray(vertex_ids, np.int64)
    v = len(ids)
    m = FSAVERAGE_SIZES.get(mesh)
    raw = _load(path)
    if isinstance(raw, tuple):
        lh, rh = raw
        if m is None or lh.shape != (m,) or rh.shape != (m,):
            raise ValueError(
                f"{path}: lh and rh must hold {m or 'one value per mesh vertex'} values each "
                f"(mesh {mesh}); found {lh.size} and {rh.size}"
            )
        arr, whole = None, (lh, rh)
        layout = f"lh/rh arrays of the whole {mesh} mesh"
    else:
        arr = np.asarray(raw)
        if arr.shape == (v,):
            whole, layout = None, f"one value per modelled vertex ({v})"
        elif m is not None and arr.shape in ((2 * m,), (2, m)):
            flat = arr.reshape(-1)
            whole, layout = (flat[:m], flat[m:]), f"the whole {mesh} mesh, lh then rh"
        else:
            shapes = f"({v},)" + (f", ({2 * m},) or (2, {m})" if m is not None else "")
            raise ValueError(
                f"{path}: a noise ceiling of shape {arr.shape} fits neither the {v} modelled "
                f"vertices nor the {mesh} mesh; expected {shapes}"
            )
    if whole is not None:
        arr = np.concatenate([whole[0][ids[:n_lh]], whole[1][ids[n_lh:]]])
    values = np.asarray(arr)
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{path}: expected numbers; found dtype {values.dtype}")
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise ValueError(
            f"{path}: noise ceilings lie in 0–100 % (or 0–1); found "
            f"{finite.min():g}..{finite.max():g}"
        )
    fraction = bool(finite.size) and finite.max() <= 1.0
    unit = "fractions (every value ≤ 1)" if fraction else "percent"
    nc = values if fraction else values / 100.0
    unknown = int((~np.isfinite(nc)).sum())
    note = f"{path.resolve()}: {layout}, read as {unit}" + (
        f"; {unknown} vertices without a ceiling" if unknown else ""
    )
    return nc.astype(np.float32), note
