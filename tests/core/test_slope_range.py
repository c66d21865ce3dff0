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
    r = hierarchy_slope_range(tailed, levels)
    assert r.slope == pytest.approx((1 - eps) * truth, rel=1e-9)
    # near the mode the tail adds ε/L to each of the 3 kept layers: a symmetric
    # neighbourhood except at the first/last layer, so the slope moves by < 1 %
    assert r.slope_mode == pytest.approx(truth, rel=0.01)
    # far: ε/L on each layer outside the mode ±1 (L − 3 of them; L − 2 at the ends)
    assert eps * (n_layers - 3) / n_layers <= r.far_mass <= eps * (n_layers - 2) / n_layers
    assert r.lo <= r.slope < r.slope_mode <= r.hi
    assert r.lo > r.slope - 0.05 and r.hi < r.slope_mode + 0.05  # not vacuous


def test_interval_covers_the_population_slope_95_percent_of_the_time():
    """Draw 400 samples of vertices from a population with a known slope and
    heteroscedastic scatter (larger at the middle levels); with both readings equal
    (two layers: nothing is far from the mode) the interval is the slope's 95 %
    interval, so it covers the population slope in about 95 % of the samples."""
    rng = np.random.default_rng(2)
    a_true, b_true, covered = 0.6, 0.2, 0
    for _ in range(400):
        levels = rng.integers(1, 5, size=300)
        x = (levels - 1) / 3
        sd = np.where((levels == 2) | (levels == 3), 0.15, 0.05)
        lam = np.clip(a_true * x + b_true + rng.normal(0, sd), 0, 1)
        r = hierarchy_slope_range(np.stack([1 - lam, lam], 1), levels)
        assert r.slope == pytest.approx(r.slope_mode) and r.far_mass == 0.0
        covered += r.lo <= a_true <= r.hi
    # clipping at 0/1 barely touches this population: its slope stays a_true
    assert 0.92 <= covered / 400 <= 0.98, covered / 400


def test_refuses_what_the_slope_refuses():
    with pytest.raises(ValueError, match="at least 2 distinct levels"):
        hierarchy_slope_range(np.full((5, 3), 1 / 3), np.ones(5, int))
