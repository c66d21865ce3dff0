"""The layer confidence that the validation data support (ours; issue 23).

How bright a layer map is (the confidence ``1 − H(π)/log L``) is weakly determined by
the data: between confidence 0.2 and 0.98 a phantom's validation R² moved by less than
0.006 (BENCHMARKS.md, "Why the calibration"), and per-ROI confidences of finished maps
came out up to 0.23 away from the truth's. So a map's confidence is reported with the
range the validation data cannot tell apart from it.

The sharpness calibration (:mod:`napari_factortopy.core.calibration`) scores the layer
softmax at temperatures ``τ`` (``softmax(τ · logits)``, its readout refitted) on a
random probe of vertices and keeps, in ``summary["calibration"]["profile"]``, each probe
vertex's validation R² along the temperatures and under the readout the model keeps
(``reference``). For a set of vertices (all, or one ROI's) with probe vertices ``P``:

- ``d_τ,p = R²_τ,p − R²_ref,p`` (paired: the same vertex, the same validation images);
- ``τ`` is *supported* when ``mean_p d_τ,p ≥ −z · sd_p(d_τ,p) / √|P|`` (not worse than
  the kept readout by more than ``z`` standard errors; ``z`` = :data:`Z`);
- the supported confidence is the range of the set's mean confidence over the stored
  layer weights re-tempered by the supported ratios ``τ / τ_applied``
  (``softmax(r · log π)``, which equals ``softmax(r·τ_applied · logits)``), and always
  includes the map as stored (ratio 1). Confidence rises monotonically with ``r``, so the
  ends of the range are the ratios' ends.

A set with fewer than :data:`MIN_PROBE` probe vertices takes the whole probe's
supported ratios (``pooled``). When the lowest or highest temperature of the grid is
supported, the range may reach further (``open_lo`` / ``open_hi``). No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analyses import confidence

__all__ = [
    "MIN_PROBE",
    "ConfidenceRange",
    "Z",
    "confidence_range",
    "model_confidence_ranges",
    "range_text",
    "supported_ratios",
    "tempered_confidence",
]

#: Standard errors by which a temperature may score below the kept readout.
Z = 2.0
#: Probe vertices a set needs for its own supported temperatures.
MIN_PROBE = 20


@dataclass(frozen=True)
class ConfidenceRange:
    """The mean layer confidence of a set of vertices: as stored and the supported range.

    ``ratio_lo``/``ratio_hi`` are the supported temperatures relative to the stored
    softmax; ``n_probe`` the probe vertices the test used; ``pooled`` whether they are
    the whole probe's (the set had too few); ``open_lo``/``open_hi`` whether the grid's
    end was supported.
    """

    mean: float
    lo: float
    hi: float
    ratio_lo: float
    ratio_hi: float
    n_probe: int
    pooled: bool
    open_lo: bool
    open_hi: bool


def supported_ratios(
    profile: dict, members: np.ndarray | None = None, z: float = Z, min_probe: int = MIN_PROBE
) -> tuple[float, float, int, bool, bool, bool] | None:
    """The supported temperature ratios of the vertices ``members``.

    Parameters
    ----------
    profile : dict
        ``summary["calibration"]["profile"]``: ``probe`` (P,) vertex indices,
        ``temperatures`` (T,), ``r2`` (T, P), ``reference`` (P,), ``applied_tau``.
    members : bool array of shape (V,), optional
        The set (default: every vertex).
    z, min_probe
        See :data:`Z` and :data:`MIN_PROBE`.

    Returns
    -------
    ``(ratio_lo, ratio_hi, n_probe, pooled, open_lo, open_hi)``, or None when the
    profile has no usable probe vertex.
    """
    probe = np.asarray(profile["probe"], np.int64)
    taus = np.asarray(profile["temperatures"], np.float64)
    r2 = np.array(profile["r2"], np.float64).reshape(len(taus), len(probe))
    ref = np.array(profile["reference"], np.float64)
    ok = np.isfinite(r2).all(0) & np.isfinite(ref)
    pooled = False
    use = ok
    if members is not None:
        mine = ok & np.asarray(members, bool)[probe]
        if mine.sum() >= min_probe:
            use = mine
        else:
            pooled = True
    n = int(use.sum())
    if n < 2:
        return None
    d = r2[:, use] - ref[use]  # (T, n)
    se = d.std(1, ddof=1) / np.sqrt(n)
    supported = d.mean(1) >= -z * se
    ratios = taus / float(profile.get("applied_tau") or 1.0)
    lo = min(1.0, float(ratios[supported].min())) if supported.any() else 1.0
    hi = max(1.0, float(ratios[supported].max())) if supported.any() else 1.0
    return lo, hi, n, pooled, bool(supported[0]), bool(supported[-1])


def tempered_confidence(layer: np.ndarray, ratio: float) -> np.ndarray:
    """Confidence of the layer weights re-tempered by ``ratio``: ``softmax(r · log π)``.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights (rows summing to 1; zeros allowed).
    ratio : float
        The temperature ratio ``r > 0`` (1: the weights as they are).

    Returns
    -------
    conf : array of shape (V,)
    """
    pi = np.asarray(layer, np.float64)
    with np.errstate(divide="ignore"):
        logp = np.where(pi > 0, np.log(np.where(pi > 0, pi, 1.0)), -np.inf)
    z = ratio * logp
    z = z - z.max(1, keepdims=True)
    w = np.exp(z)
    return confidence(w / w.sum(1, keepdims=True))


def confidence_range(
    layer: np.ndarray, profile: dict, members: np.ndarray | None = None, **kw
) -> ConfidenceRange | None:
    """The mean confidence of ``members`` (default all vertices) and its supported range.

    Parameters
    ----------
    layer : array of shape (V, L)
        The stored layer weights; rows with a non-finite weight are left out.
    profile : dict
    members : bool array of shape (V,), optional
    **kw
        ``z``, ``min_probe`` of :func:`supported_ratios`.

    Returns
    -------
    ConfidenceRange or None (no profile usable, or no finite member)
    """
    ratios = supported_ratios(profile, members, **kw)
    pi = np.asarray(layer, np.float64)
    rows = np.isfinite(pi).all(1) & (True if members is None else np.asarray(members, bool))
    if ratios is None or not rows.any():
        return None
    lo_r, hi_r, n, pooled, open_lo, open_hi = ratios
    sub = pi[rows]
    return ConfidenceRange(
        mean=float(confidence(sub).mean()),
        lo=float(tempered_confidence(sub, lo_r).mean()),
        hi=float(tempered_confidence(sub, hi_r).mean()),
        ratio_lo=lo_r,
        ratio_hi=hi_r,
        n_probe=n,
        pooled=pooled,
        open_lo=open_lo,
        open_hi=open_hi,
    )


def model_confidence_ranges(model) -> dict | None:
    """Supported confidence ranges of a fitted model: ``{"all": ConfidenceRange, "roi":
    {name: ConfidenceRange}}``, or None when the file keeps no calibration profile
    (no calibration ran, or an older file)."""
    cal = (getattr(model, "summary", None) or {}).get("calibration") or {}
    profile = cal.get("profile")
    if not profile or not profile.get("probe"):
        return None
    layer = np.asarray(model.layer, np.float64)
    overall = confidence_range(layer, profile)
    if overall is None:
        return None
    per_roi = {}
    roi = np.asarray(getattr(model, "roi", np.zeros(len(layer))), np.int64)
    for k, name in enumerate(getattr(model, "roi_names", None) or [], start=1):
        members = roi == k
        if members.any():
            found = confidence_range(layer, profile, members)
            if found is not None:
                per_roi[str(name)] = found
    return {"all": overall, "roi": per_roi}


def range_text(r: ConfidenceRange, digits: int = 2) -> str:
    """``"0.55–0.80"`` with ``≤``/``≥`` where the grid's end was supported."""
    lo = f"{'≤' if r.open_lo and r.ratio_lo < 1 else ''}{r.lo:.{digits}f}"
    hi = f"{'≥' if r.open_hi and r.ratio_hi > 1 else ''}{r.hi:.{digits}f}"
    return f"{lo}–{hi}"
