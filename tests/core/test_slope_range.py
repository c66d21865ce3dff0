"""The hierarchy slope's sensitivity interval against closed forms and a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.analyses import hierarchy_slope
from napari_factortopy.core.slope_range import (
    far_mass,
    hierarchy_slope_range,
    mode_layer_position,
)


def _one_hot_levels(n_per_level: int, n_layers: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of levels 1–4 whose layer is (level − 1)·(L − 1)/3 ± 1 at random."""
    levels = np.repeat(np.arange(1, 5), n_per_level)
    centre = np.round((levels - 1) * (n_layers - 1) / 3).astype(int)
    layer_idx = np.clip(centre + rng.integers(-1, 2, size=len(levels)), 0, n_layers - 1)
    w = np.zeros((len(levels), n_layers))
    w[np.arange(len(levels)), layer_idx] = 1.0
    return w, levels


def test_mode_position_and_far_mass_against_a_loop():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.full(9, 0.4), size=200)
    lam, far = mode_layer_position(w, width=2), far_mass(w, width=2)
    for v in range(len(w)):
        a = int(np.argmax(w[v]))
        num = den = out = 0.0
        for layer in range(9):
            if abs(layer - a) <= 2:
                num += w[v, layer] * layer / 8
                den += w[v, layer]
            else:
                out += w[v, layer]
        assert lam[v] == pytest.approx(num / den, abs=1e-12)
        assert far[v] == pytest.approx(out, abs=1e-12)


def test_a_uniform_far_tail_compresses_the_paper_slope_and_not_the_mode_slope():
    """Mixing a fraction ε of uniform weight over L layers into one-hot rows gives the
    paper's slope (1 − ε)·a exactly (the uniform part has the same position 1/2
    everywhere); the mode-centred slope stays a up to the tail's share near the mode,
    and the interval spans both."""
    rng = np.random.default_rng(1)
    n_layers, eps = 16, 0.15
    onehot, levels = _one_hot_levels(300, n_layers, rng)
    truth = hierarchy_slope(onehot, levels).slope
    tailed = (1 - eps) * onehot + eps / n_layers
    r = hierarchy_slope_range(tailed, levels, n_boot=200)
    assert r.slope == pytest.approx((1 - eps) * truth, rel=1e-9)
    # near the mode the tail adds ε/L to each of the 3 kept layers: a symmetric
    # neighbourhood except at the first/last layer, so the slope moves by < 1 %
    assert r.slope_mode == pytest.approx(truth, rel=0.01)
    # far: ε/L on each layer outside the mode ±1 (L − 3 of them; L − 2 at the ends)
    assert eps * (n_layers - 3) / n_layers <= r.far_mass <= eps * (n_layers - 2) / n_layers
    assert r.lo <= r.slope < r.slope_mode <= r.hi
    assert r.lo > r.slope - 0.05 and r.hi < r.slope_mode + 0.05  # not vacuous


def test_interval_width_matches_the_bootstrap_spread_when_both_readings_agree():
    """With no far weight both slopes coincide, so the interval is the vertex
    bootstrap's: its half-width ≈ 1.96 × the slope's heteroscedasticity-robust (HC0)
    standard error, the closed form a bootstrap of vertices estimates (the residuals are
    smaller at the end levels, where the first/last layer clips them)."""
    rng = np.random.default_rng(2)
    n_layers = 12
    onehot, levels = _one_hot_levels(400, n_layers, rng)
    r = hierarchy_slope_range(onehot, levels, n_boot=800)
    assert r.slope == pytest.approx(r.slope_mode, abs=1e-12) and r.far_mass == 0.0
    x = (levels - 1) / 3
    y = onehot @ (np.arange(n_layers) / (n_layers - 1))
    resid = y - (r.slope * x + r.intercept)
    xc = x - x.mean()
    se = np.sqrt((xc**2 * resid**2).sum()) / (xc**2).sum()
    assert (r.hi - r.lo) / 2 == pytest.approx(1.96 * se, rel=0.15)


def test_subsampled_bootstrap_keeps_the_full_sets_spread():
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.full(12, 0.3), size=6000)
    levels = rng.integers(1, 5, size=6000)
    full = hierarchy_slope_range(w, levels, n_boot=600, max_vertices=6000)
    sub = hierarchy_slope_range(w, levels, n_boot=600, max_vertices=1500)
    assert sub.slope == full.slope and sub.slope_mode == full.slope_mode
    assert (sub.hi - sub.lo) == pytest.approx(full.hi - full.lo, rel=0.25)


def test_refuses_what_the_slope_refuses():
    with pytest.raises(ValueError, match="at least 2 distinct levels"):
        hierarchy_slope_range(np.full((5, 3), 1 / 3), np.ones(5, int))
