"""Per-vertex colourings of the model's maps and their legends (METHOD.md §4).

Every ``*_rgba`` function returns an opaque float RGBA array in [0, 1] of shape (V, 4),
ready for a mesh's ``vertex_colors``. Vertices with a NaN value are drawn in
curvature grey, never black. :func:`paint_surface` places the modelled vertices'
colours on a whole hemisphere mesh whose other vertices show curvature grey.

Colormaps come from ``matplotlib.colormaps[name]``; pyplot is never imported.
"""

from __future__ import annotations

import numpy as np

from .analyses import confidence, layer_argmax

__all__ = [
    "GYRUS_GREY",
    "NOT_SIGNIFICANT_GREY",
    "SULCUS_GREY",
    "cluster_palette",
    "cluster_rgba",
    "curvature_grey",
    "ensemble_layer_rgba",
    "layer_brightness",
    "layer_legend",
    "layer_rgba",
    "paint_surface",
    "r2_layer_rgba",
    "scale_rgba",
    "score_rgba",
    "space_brightness",
    "space_legend",
    "space_rgba",
    "weight_rgba",
]

#: Grey level of convex cortex (gyri; curvature < 0 in FreeSurfer's convention).
GYRUS_GREY = 0.62
#: Grey level of concave cortex (sulci; curvature >= 0).
SULCUS_GREY = 0.42
#: Flat grey of modelled vertices whose score is not significant (FDR q > α): lighter
#: than both curvature greys, so the modelled patch stays visible without a colour.
NOT_SIGNIFICANT_GREY = 0.86


def _cmap(name: str):
    import matplotlib  # here, not at import: `factortopy info` and napari start faster

    return matplotlib.colormaps[name]


def _opaque(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    out = np.ones((*rgb.shape[:-1], 4))
    out[..., :3] = rgb[..., :3]
    return out


def _grey(n: int, level: float = GYRUS_GREY) -> np.ndarray:
    out = np.full((n, 4), float(level))
    out[:, 3] = 1.0
    return out


def layer_brightness(conf: np.ndarray) -> np.ndarray:
    """Brightness factor of the layer map, ``1.2 − e³`` with ``e = 1 − confidence``.

    Parameters
    ----------
    conf : array of any shape
        Confidence in [0, 1].

    Returns
    -------
    factor : array of the same shape, in [0.2, 1.2]
    """
    e = 1.0 - np.asarray(conf, dtype=np.float64)
    return 1.2 - e**3


def _layer_colour(position: np.ndarray, conf: np.ndarray, cmap: str) -> np.ndarray:
    rgb = _cmap(cmap)(np.asarray(position, dtype=np.float64))[..., :3]
    rgb = np.clip(rgb * layer_brightness(conf)[..., None], 0.0, 1.0)
    return _opaque(rgb)


def layer_rgba(layer: np.ndarray, cmap: str = "coolwarm") -> np.ndarray:
    """The layer map: hue from the chosen layer, brightness from confidence.

    Colour ``cmap(argmax_l π_v / (L − 1))`` (0.5 when L = 1); its RGB is multiplied by
    ``1.2 − e³`` with ``e = 1 −`` :func:`~napari_factortopy.core.analyses.confidence`
    and clipped to [0, 1].

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights, rows summing to 1.
    cmap : str, default "coolwarm"
        A matplotlib colormap name.

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1], alpha 1
        Rows with non-finite weights are grey.
    """
    pi = np.asarray(layer, dtype=np.float64)
    bad = ~np.isfinite(pi).all(axis=1)  # e.g. a diverged model: drawn grey
    pi = np.where(bad[:, None], 1.0, pi)
    idx = layer_argmax(pi)
    n_layers = pi.shape[1]
    pos = idx / (n_layers - 1) if n_layers > 1 else np.full(idx.shape, 0.5)
    out = _layer_colour(pos, confidence(pi), cmap)
    out[bad] = _grey(int(bad.sum()))
    return out


def ensemble_layer_rgba(
    layer: np.ndarray, agreement: np.ndarray, cmap: str = "coolwarm"
) -> np.ndarray:
    """The layer map of a seed ensemble: :func:`layer_rgba` with brightness from
    ``confidence × agreement``.

    Hue from the argmax of the seeds' mean selector ``layer``; the brightness factor
    ``1.2 − e³`` takes ``e = 1 − confidence(layer) · agreement`` (``agreement``: share
    of seeds whose argmax is the modal layer), so a vertex whose seeds vote for
    different layers is drawn dark even where their mean looks peaked.

    Parameters
    ----------
    layer : array of shape (V, L)
    agreement : array of shape (V,), in [0, 1]

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1], alpha 1
    """
    pi = np.asarray(layer, dtype=np.float64)
    agree = np.asarray(agreement, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(pi).all(axis=1) | ~np.isfinite(agree)
    pi = np.where(bad[:, None], 1.0, pi)
    idx = layer_argmax(pi)
    n_layers = pi.shape[1]
    pos = idx / (n_layers - 1) if n_layers > 1 else np.full(idx.shape, 0.5)
    conf = confidence(pi) * np.clip(np.where(bad, 1.0, agree), 0.0, 1.0)
    out = _layer_colour(pos, conf, cmap)
    out[bad] = _grey(int(bad.sum()))
    return out


def r2_layer_rgba(split: np.ndarray, cmap: str = "coolwarm") -> np.ndarray:
    """The ``R² layer`` map: which layer carries most of a vertex's explained variance.

    Hue as in :func:`layer_rgba` from the layer with the largest share of R²
    (:func:`~napari_factortopy.core.variance_split.dominant_layer`); brightness
    ``1.2 − e³`` with ``e = 1 −`` that layer's share of the positive part of R², so a
    vertex whose R² is spread over several layers is drawn dark. Read it with the
    layer legend (its y axis is the share instead of the confidence).

    Parameters
    ----------
    split : array of shape (V, L)
        Per-layer R² (``evaluation["r2_split"]``).

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1], alpha 1
        Grey where no layer carries positive R² (or the row is not finite).
    """
    from .variance_split import dominant_layer

    s = np.asarray(split, dtype=np.float64)
    layer, share = dominant_layer(s)
    bad = ~np.isfinite(share)
    n_layers = s.shape[1]
    pos = layer / (n_layers - 1) if n_layers > 1 else np.full(layer.shape, 0.5)
    out = _layer_colour(pos, np.where(bad, 1.0, share), cmap)
    out[bad] = _grey(int(bad.sum()))
    return out


def layer_legend(
    n_layers: int, size: tuple[int, int] = (256, 256), cmap: str = "coolwarm"
) -> np.ndarray:
    """2-D legend of :func:`layer_rgba`: layer along x, confidence along y.

    Column band ``l = floor(col · L / W)`` shows layer l (0-based, left to right);
    row ``i`` shows confidence ``1 − i / (H − 1)`` (top row = confidence 1, bottom
    row = 0). Drawn with ``imshow(extent=(0.5, L + 0.5, 0, 1))`` the axis ticks read as
    1-based layer numbers and confidence.

    Parameters
    ----------
    n_layers : int
        L >= 1.
    size : (H, W), default (256, 256)
        Image size in pixels.
    cmap : str, default "coolwarm"

    Returns
    -------
    legend : array of shape (H, W, 4), float64 in [0, 1]
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1; got {n_layers}")
    h, w = int(size[0]), int(size[1])
    band = np.minimum((np.arange(w) * n_layers) // w, n_layers - 1)
    pos = band / (n_layers - 1) if n_layers > 1 else np.full(w, 0.5)
    conf = 1.0 - np.arange(h) / max(h - 1, 1)
    pos2, conf2 = np.broadcast_arrays(pos[None, :], conf[:, None])
    return _layer_colour(pos2, conf2, cmap)


def _space_colour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    hue = np.mod(np.arctan2(y, x) / (2.0 * np.pi), 1.0)
    sat = np.clip(np.hypot(x, y), 0.0, 1.0)
    hsv = np.stack([hue, sat, np.ones_like(hue)], axis=-1)
    from matplotlib.colors import hsv_to_rgb

    return _opaque(hsv_to_rgb(hsv))


def space_rgba(space: np.ndarray, uncertainty: np.ndarray | None = None) -> np.ndarray:
    """The space map: hue from the angle, saturation from the radius, value 1.

    Hue ``= atan2(y, x) / 2π mod 1`` (red along +x); saturation ``= min(1, √(x² + y²))``
    (white at the grid centre).

    Parameters
    ----------
    space : array of shape (V, 2)
        Grid position ``(x, y)`` in [-1, 1] (grid_sample coordinates).
    uncertainty : array of shape (V,), optional
        The RF's standard error (``factortopy evaluate``): less certain RFs are drawn
        darker, unlocated ones dark (:func:`space_brightness`).

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1]; NaN rows are grey.
    """
    s = np.asarray(space, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"space must be a (V, 2) array; got {s.shape}")
    bad = ~np.all(np.isfinite(s), axis=1)
    out = _space_colour(np.where(bad, 0.0, s[:, 0]), np.where(bad, 0.0, s[:, 1]))
    if uncertainty is not None:
        out[:, :3] *= space_brightness(uncertainty)[:, None]
    out[bad] = _grey(int(bad.sum()))
    return out


def space_brightness(se: np.ndarray, unlocated: float = 0.5) -> np.ndarray:
    """Brightness factor of the space map from the RF's standard error.

    ``1 − 0.8 · min(se / unlocated, 1)``: 1 for a sharply located RF, 0.2 (dark, no
    hue to read) from ``se ≥ unlocated`` (grid units; ``inf``: unlocated). The legend's
    colours all have brightness 1, so a dark vertex never reads as an image location.

    Parameters
    ----------
    se : array of shape (V,)
        Standard error of the RF location (NaN: unknown, drawn at full brightness).
    """
    e = np.asarray(se, dtype=np.float64).reshape(-1)
    fade = np.clip(np.where(np.isnan(e), 0.0, e) / unlocated, 0.0, 1.0)
    return 1.0 - 0.8 * fade


def space_legend(size: int = 256) -> np.ndarray:
    """Square legend of :func:`space_rgba` over the token grid ``[-1, 1]²``.

    Laid out like the stimulus image: pixel ``(row i, col j)`` shows the grid point
    ``x = (2j + 1)/size − 1`` (x grows to the right) and ``y = (2i + 1)/size − 1``
    (y grows **downwards**: y = −1 is the top row), the pixel centres of
    ``grid_sample`` with ``align_corners=False``. So the legend can be laid over the
    image directly.

    Parameters
    ----------
    size : int, default 256

    Returns
    -------
    legend : array of shape (size, size, 4), float64 in [0, 1]
    """
    c = (2.0 * np.arange(int(size)) + 1.0) / size - 1.0
    xx, yy = np.meshgrid(c, c)  # xx[i, j] = c[j] (column), yy[i, j] = c[i] (row)
    return _space_colour(xx, yy)


def _scalar_rgba(norm: np.ndarray, cmap: str, curv: np.ndarray | None = None) -> np.ndarray:
    """cmap(norm) with NaN entries in curvature grey."""
    norm = np.asarray(norm, dtype=np.float64)
    bad = ~np.isfinite(norm)
    out = _opaque(_cmap(cmap)(np.clip(np.where(bad, 0.0, norm), 0.0, 1.0))[..., :3])
    if bad.any():
        if curv is None:
            out[bad] = _grey(int(bad.sum()))
        else:
            out[bad] = curvature_grey(np.asarray(curv).reshape(-1)[bad])
    return out


def scale_rgba(
    scale: np.ndarray, cmap: str = "PuOr", curv: np.ndarray | None = None
) -> np.ndarray:
    """The scale map ``α_v`` (weight of the global token) over [0, 1].

    Parameters
    ----------
    scale : array of shape (V,)
        Values in [0, 1] (clipped).
    cmap : str, default "PuOr"
        A diverging map: the ends are local (0) and global (1), the middle a mix.
    curv : array of shape (V,), optional
        Curvature used for NaN entries (see :func:`curvature_grey`); default the gyral
        grey.

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1]
    """
    return _scalar_rgba(np.asarray(scale, dtype=np.float64).reshape(-1), cmap, curv)


def score_rgba(
    score: np.ndarray,
    vmax: float | None = None,
    cmap: str = "Reds",
    curv: np.ndarray | None = None,
) -> np.ndarray:
    """Brain score over [0, vmax]; NaN (unscored) vertices in curvature grey.

    Parameters
    ----------
    score : array of shape (V,)
        Per-vertex score; negative values get the colour of 0.
    vmax : float, optional
        Top of the colour range; default ``max(0, nanmax(score))``. A non-positive
        ``vmax`` maps every finite value to the bottom colour.
    cmap : str, default "Reds"
    curv : array of shape (V,), optional
        Curvature used for NaN entries (see :func:`curvature_grey`).

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1]
    """
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if vmax is None:
        finite = s[np.isfinite(s)]
        vmax = float(finite.max()) if finite.size else 0.0
    vmax = max(float(vmax), 0.0)
    norm = s / vmax if vmax > 0 else np.where(np.isfinite(s), 0.0, np.nan)
    return _scalar_rgba(norm, cmap, curv)


def weight_rgba(
    values: np.ndarray,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    curv: np.ndarray | None = None,
) -> np.ndarray:
    """Generic sequential colouring over [vmin, vmax] (e.g. one layer's weights π_vl).

    Parameters
    ----------
    values : array of shape (V,)
    vmin, vmax : float
        Colour range, ``vmin < vmax``; values outside are clipped.
    cmap : str, default "viridis"
    curv : array of shape (V,), optional
        Curvature used for NaN entries.

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1]
    """
    if not vmax > vmin:
        raise ValueError(f"need vmin < vmax; got vmin={vmin}, vmax={vmax}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return _scalar_rgba((v - vmin) / (vmax - vmin), cmap, curv)


def cluster_palette(n_clusters: int = 20) -> np.ndarray:
    """Categorical colours: matplotlib's ``tab20`` with its strong shades first.

    ``tab20`` comes in (dark, light) pairs of one hue; here the 10 dark shades come
    first, then the 10 light ones, so up to 10 clusters get 10 distinct hues. Beyond
    20 the palette repeats.

    Returns
    -------
    palette : array of shape (n_clusters, 4), float64 in [0, 1]
    """
    base = np.asarray(_cmap("tab20").colors, dtype=np.float64)[:, :3]
    order = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)]
    base = base[order]
    return _opaque(base[np.arange(int(n_clusters)) % len(base)])


def cluster_rgba(labels: np.ndarray, n_clusters: int = 20) -> np.ndarray:
    """Categorical colouring of cluster labels (see :func:`cluster_palette`).

    Parameters
    ----------
    labels : int array of shape (V,)
        Cluster per vertex in ``[0, n_clusters)``; a negative label means "no
        cluster" and is drawn grey.
    n_clusters : int, default 20

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1]
    """
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    if lab.size and lab.max() >= n_clusters:
        raise ValueError(f"cluster label {lab.max()} out of range [0, {n_clusters})")
    pal = cluster_palette(n_clusters)
    out = _grey(lab.size)
    ok = lab >= 0
    out[ok] = pal[lab[ok]]
    return out


def curvature_grey(curv: np.ndarray) -> np.ndarray:
    """Two-tone grey background from mesh curvature.

    FreeSurfer convention: ``curv < 0`` is convex (gyri) → light grey
    :data:`GYRUS_GREY`; otherwise (sulci, and NaN) → dark grey :data:`SULCUS_GREY`.

    Parameters
    ----------
    curv : array of shape (n,)

    Returns
    -------
    rgba : array of shape (n, 4), float64, opaque
    """
    c = np.asarray(curv, dtype=np.float64).reshape(-1)
    level = np.where(c < 0, GYRUS_GREY, SULCUS_GREY)
    out = np.repeat(level[:, None], 4, axis=1)
    out[:, 3] = 1.0
    return out


def paint_surface(
    n_mesh_vertices: int,
    vertex_ids: np.ndarray,
    rgba: np.ndarray,
    curv: np.ndarray | None = None,
) -> np.ndarray:
    """Colours for a whole mesh: curvature grey, with the modelled vertices painted.

    Parameters
    ----------
    n_mesh_vertices : int
        Number of vertices of the hemisphere mesh.
    vertex_ids : int array of shape (V,)
        Mesh index of each modelled vertex.
    rgba : array of shape (V, 4) or (V, 3)
        Their colours (alpha 1 is added to RGB).
    curv : array of shape (n_mesh_vertices,), optional
        Mesh curvature for the background (:func:`curvature_grey`); default a uniform
        gyral grey.

    Returns
    -------
    colours : array of shape (n_mesh_vertices, 4), float64 in [0, 1]

    Raises
    ------
    ValueError
        If an id is out of range or the shapes do not agree.
    """
    n = int(n_mesh_vertices)
    ids = np.asarray(vertex_ids).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"vertex_ids must be integers; got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    col = np.asarray(rgba, dtype=np.float64)
    if col.ndim != 2 or col.shape[0] != ids.size or col.shape[1] not in (3, 4):
        raise ValueError(
            f"rgba must be ({ids.size}, 4) or ({ids.size}, 3) to match vertex_ids; got {col.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)]
        raise ValueError(
            f"{bad.size} vertex ids out of range [0, {n}) for this mesh "
            f"(e.g. {int(bad[0])}); is it the right mesh or hemisphere?"
        )
    if curv is None:
        out = _grey(n)
    else:
        c = np.asarray(curv).reshape(-1)
        if c.size != n:
            raise ValueError(f"curv has {c.size} entries; the mesh has {n} vertices")
        out = curvature_grey(c)
    if col.shape[1] == 3:
        col = _opaque(col)
    out[ids] = np.clip(col, 0.0, 1.0)
    return out
