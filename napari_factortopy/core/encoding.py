"""Vertex coordinates and their positional encoding (METHOD.md §1).

Both hemispheres' registered *sphere* coordinates go into one array, the right
hemisphere shifted along x so that the two spheres do not overlap; the positional
encoding then turns each vertex's 3-D position into 192 sin/cos features.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encoding_dim", "joint_sphere_coordinates", "positional_encoding"]


def joint_sphere_coordinates(lh: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """Stack left and right sphere coordinates with the right sphere shifted along x.

    The right hemisphere is translated along x so that its minimum x lies at
    ``lh_min_x + 1.5 * (lh_max_x - lh_min_x)``.

    Parameters
    ----------
    lh : array of shape (V_lh, 3)
        Sphere coordinates of the modelled left-hemisphere vertices.
    rh : array of shape (V_rh, 3)
        Sphere coordinates of the modelled right-hemisphere vertices.

    Returns
    -------
    coords : array of shape (V_lh + V_rh, 3), float64
        Left vertices first, then the shifted right vertices.
    """
    lh = np.asarray(lh, dtype=np.float64).reshape(-1, 3)
    rh = np.asarray(rh, dtype=np.float64).reshape(-1, 3).copy()
    if len(lh) and len(rh):
        lo, hi = lh[:, 0].min(), lh[:, 0].max()
        rh[:, 0] += lo + 1.5 * (hi - lo) - rh[:, 0].min()
    return np.concatenate([lh, rh], axis=0)


def encoding_dim(n_freqs: int = 32) -> int:
    """Width of the positional encoding: 3 axes × ``n_freqs`` × (sin, cos)."""
    return 3 * n_freqs * 2


def positional_encoding(
    coords: np.ndarray, n_freqs: int = 32, max_period: float = 1000.0
) -> np.ndarray:
    """Sinusoidal encoding of vertex positions (no parameters, no gradient).

    Per axis, ``t = (p - low) * S / (high - low)`` with low/high the per-axis
    min/max over ``coords`` and ``S = 100 * (high - low) / max(high - low)``, so the
    longest axis spans [0, 100] and the others keep their aspect. Then, for
    ``ω_k = max_period ** (-k / n_freqs)``, ``k = 0 .. n_freqs - 1``, the features are
    ``sin(ω_k t)`` and ``cos(ω_k t)``.

    Parameters
    ----------
    coords : array of shape (V, 3)
        Vertex positions (see :func:`joint_sphere_coordinates`).
    n_freqs : int
        Number of frequencies F per axis.
    max_period : float
        The base P of the geometric frequency ladder.

    Returns
    -------
    features : array of shape (V, 3 * n_freqs * 2), float32
        Laid out as ``[axis][sin | cos][frequency]``.
    """
    p = np.asarray(coords, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"vertex coordinates must have shape (V, 3); found {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("vertex coordinates contain NaN or infinite values")
    low, high = p.min(axis=0), p.max(axis=0)
    extent = high - low
    longest = extent.max() if len(p) else 0.0
    safe = np.where(extent > 0, extent, 1.0)
    scale = np.where(extent > 0, 100.0 * extent / max(longest, 1e-12), 0.0)
    t = (p - low) * scale / safe  # (V, 3)
    omega = max_period ** (-np.arange(n_freqs) / n_freqs)  # (F,)
    arg = t[:, :, None] * omega[None, None, :]  # (V, 3, F)
    feats = np.concatenate([np.sin(arg), np.cos(arg)], axis=2)  # (V, 3, 2F)
    return feats.reshape(len(p), -1).astype(np.float32)
