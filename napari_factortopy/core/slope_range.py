"""How far the hierarchy slope (paper Table 2) depends on layer weight far from the mode.

The paper's layer position ``λ_v = Σ_l π_vl · l/(L−1)`` counts every layer's weight.
Trained selectors keep a few per cent of weight on layers far from a vertex's mode (on
mismatch phantoms: mostly on the last and middle layers, for vertices whose true layers
are early), where the truth has none. That far mass moves λ of early vertices up and
flattens the slope (0.04–0.19 on held-out phantoms, BENCHMARKS.md "issue 23"), while the
argmax and the neighbourhood of the mode are recovered (within one layer ≥ 0.98).

:func:`hierarchy_slope_range` reports, beside the paper's slope, the slope of the
*mode-centred* position (the weights within ``width`` layers of each vertex's argmax,
renormalised) and a sensitivity interval: from the smaller slope less ``z`` of its
standard error to the larger one plus ``z`` of its own (``z = 1.96`` for 95 %), the
standard errors heteroscedasticity-robust (HC0, what a bootstrap of the vertices
estimates, in closed form). It is an interval over the two readings of the same map
and over which vertices were modelled, not over images or seeds (an ensemble's spread
across seeds is in ``factortopy group``); neighbouring vertices are correlated, so the
sampling part is narrower than a spatially aware one would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analyses import hierarchy_slope, layer_position

__all__ = [
    "SlopeRange",
    "hierarchy_slope_range",
    "mode_layer_position",
    "model_slope_or_reason",
    "model_slope_range",
]


def mode_layer_position(layer: np.ndarray, width: int = 1) -> np.ndarray:
    """Layer position of the weights within ``width`` layers of each row's argmax.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights, rows summing to 1.
    width : int, default 1
        Layers kept on each side of the argmax.

    Returns
    -------
    lam : array of shape (V,), float64
        ``Σ_{|l − argmax| ≤ width} π_vl · l/(L−1)`` divided by the kept weight; in
        [0, 1]. All zeros when L = 1.
    """
    pi = np.asarray(layer, np.float64)
    if pi.ndim != 2:
        raise ValueError(f"layer weights must be (V, L); got shape {pi.shape}")
    n_layers = pi.shape[1]
    if n_layers == 1:
        return np.zeros(len(pi))
    w = np.where(_near_mode(pi, width), pi, 0.0)
    return (w @ (np.arange(n_layers) / (n_layers - 1.0))) / w.sum(1)


def _near_mode(pi: np.ndarray, width: int) -> np.ndarray:
    """(V, L) bool: the layers within ``width`` of each row's argmax."""
    idx = np.arange(pi.shape[1])
    return np.abs(idx[None, :] - pi.argmax(1)[:, None]) <= int(width)


def far_mass(layer: np.ndarray, width: int = 1) -> np.ndarray:
    """Weight more than ``width`` layers from each row's argmax; (V,) → [0, 1]."""
    pi = np.asarray(layer, np.float64)
    return np.where(_near_mode(pi, width), 0.0, pi).sum(1) / pi.sum(1)


@dataclass(frozen=True)
class SlopeRange:
    """The hierarchy slope and its sensitivity to far layer weight.

    Attributes
    ----------
    slope, intercept : float
        The paper's fit (every layer's weight counts).
    slope_mode, intercept_mode : float
        The same fit of the mode-centred position (:func:`mode_layer_position`).
    far_mass : float
        Mean weight more than ``width`` layers from the argmax over the vertices fitted.
    lo, hi : float
        The sensitivity interval (see the module docstring).
    n_vertices, width : int
    """

    slope: float
    intercept: float
    slope_mode: float
    intercept_mode: float
    far_mass: float
    lo: float
    hi: float
    n_vertices: int
    width: int

    def line(self) -> str:
        """One line for ``info``, figures and panels."""
        return (
            f"slope a={self.slope:.3f} (all layers), {self.slope_mode:.3f} (±{self.width} "
            f"layer of each mode), interval [{self.lo:.3f}, {self.hi:.3f}]; "
            f"far weight {100 * self.far_mass:.1f} %"
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _slope_se(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of ``y`` on ``x`` and its HC0 (sandwich) standard error."""
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    slope = float((xc * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * xc
    return slope, float(np.sqrt((xc**2 * resid**2).sum()) / sxx)


def hierarchy_slope_range(
    layer: np.ndarray,
    roi_level: np.ndarray,
    *,
    width: int = 1,
    coverage: float = 0.95,
) -> SlopeRange:
    """The paper's hierarchy slope, the mode-centred one, and their interval.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights.
    roi_level : int array of shape (V,)
        Hierarchy level per vertex (0 = excluded, 1..4), as for
        :func:`~napari_factortopy.core.analyses.hierarchy_slope`.
    width : int, default 1
        Layers kept on each side of the mode.
    coverage : float, default 0.95
        Of each reading's own (normal) interval.

    Returns
    -------
    SlopeRange

    Raises
    ------
    ValueError
        As :func:`~napari_factortopy.core.analyses.hierarchy_slope` (fewer than two
        levels, levels outside 0..4, shape mismatch).
    """
    from statistics import NormalDist

    full = hierarchy_slope(layer, roi_level)  # the paper's numbers; checks the inputs
    used = np.asarray(roi_level).astype(np.int64) > 0
    x = (np.asarray(roi_level)[used] - 1) / 3.0
    lam_mode = mode_layer_position(layer, width)[used]
    a_full, se_full = _slope_se(x, layer_position(layer)[used])
    a_mode, se_mode = _slope_se(x, lam_mode)
    z = NormalDist().inv_cdf(0.5 + coverage / 2.0)
    ends = (a_full - z * se_full, a_full + z * se_full, a_mode - z * se_mode, a_mode + z * se_mode)
    return SlopeRange(
        slope=full.slope,
        intercept=full.intercept,
        slope_mode=a_mode,
        intercept_mode=float(lam_mode.mean() - a_mode * x.mean()),
        far_mass=float(far_mass(layer, width)[used].mean()),
        lo=float(min(ends)),
        hi=float(max(ends)),
        n_vertices=int(used.sum()),
        width=int(width),
    )


def model_slope_range(model, **options) -> SlopeRange | None:
    """:func:`hierarchy_slope_range` of a model file's layer map on its own ROI levels.

    Parameters
    ----------
    model : FittedModel
    **options
        Passed to :func:`hierarchy_slope_range`.

    Returns
    -------
    SlopeRange or None
        None when the model has no real layer map (a baseline without one), no ROI
        names, or fewer than two hierarchy levels among its vertices
        (:func:`model_slope_or_reason` says which).
    """
    found = model_slope_or_reason(model, **options)
    return found if isinstance(found, SlopeRange) else None


def model_slope_or_reason(model, **options) -> SlopeRange | str:
    """:func:`model_slope_range`, or why there is none: one short phrase for a person.

    Returns
    -------
    SlopeRange or str
        The range, or e.g. ``"the model has no ROI names"``.
    """
    from .analyses import hierarchy_levels

    if getattr(model, "kind", None) == "baseline":
        real = set(((model.extra or {}).get("baseline") or {}).get("maps") or ())
        if "layer" not in real:
            return "this baseline has no layer map"
    if not getattr(model, "roi_names", None):
        return "the model has no ROI names"
    layer = np.asarray(model.layer, np.float64)
    ok = np.isfinite(layer).all(1)
    try:
        levels = np.where(ok, hierarchy_levels(model.roi, model.roi_names), 0)
        found = np.unique(levels[levels > 0]).tolist()
        if len(found) < 2:
            return f"its ROIs span fewer than two hierarchy levels (found {found or 'none'})"
        return hierarchy_slope_range(np.where(ok[:, None], layer, 1.0), levels, **options)
    except ValueError as exc:
        return str(exc)
