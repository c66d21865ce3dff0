"""The per-layer split of R²: it adds up to R² (closed form), it puts a one-layer
vertex's variance on that layer, and a module's layer parts add up to its prediction."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.metrics import r2_score
from napari_factortopy.core.variance_split import (
    R2Split,
    dominant_layer,
    layer_contributions,
    r2_split,
)


def test_split_plus_offset_is_r2_and_batches_do_not_matter():
    rng = np.random.default_rng(0)
    n, v, n_layers = 80, 30, 4
    y = rng.normal(size=(n, v)) + 3.0
    parts = rng.normal(size=(n_layers, n, v)) * rng.uniform(0, 1, (n_layers, 1, v))
    parts[0] += 0.5 * y
    bias = rng.normal(size=v)
    split, offset = r2_split(y, parts, bias)
    want = r2_score(y, parts.sum(0) + bias)
    np.testing.assert_allclose(split.sum(1) + offset, want, rtol=1e-10, atol=1e-12)
    assert (offset <= 1e-12).all()
    # the centred prediction's R² is the split's sum (a prediction shifted to the mean)
    centred = parts.sum(0) - parts.sum(0).mean(0) + y.mean(0)
    np.testing.assert_allclose(split.sum(1), r2_score(y, centred), rtol=1e-10)
    # the formula, one vertex and one layer, written out
    yc = y[:, 3] - y[:, 3].mean()
    cc = parts[:, :, 3] - parts[:, :, 3].mean(1, keepdims=True)
    want_l = (2 * cc[2] @ yc - cc[2] @ cc.sum(0)) / (yc @ yc)
    assert split[3, 2] == pytest.approx(want_l)
    acc = R2Split(n_layers, v)
    for lo in range(0, n, 17):
        acc.add(y[lo : lo + 17], parts[:, lo : lo + 17])
    s2, o2 = acc.result(bias)
    np.testing.assert_allclose(s2, split, rtol=1e-9)
    np.testing.assert_allclose(o2, offset, rtol=1e-9)


def test_one_layer_vertices_carry_their_variance_on_that_layer():
    """Responses made by one layer only: the split puts (almost) all R² there, the
    other layers' parts (uncorrelated with the responses) get about none."""
    rng = np.random.default_rng(1)
    n, v, n_layers = 400, 60, 5
    truth = rng.integers(0, n_layers, v)
    parts = rng.normal(size=(n_layers, n, v)) * 0.15  # small parts of every layer
    parts[truth, :, np.arange(v)] = rng.normal(size=(v, n)) * 1.0  # the true layer
    y = parts[truth, :, np.arange(v)].T + rng.normal(size=(n, v)) * 0.7
    split, _ = r2_split(y, parts)
    layer, share = dominant_layer(split)
    np.testing.assert_array_equal(layer, truth)
    r2 = split.sum(1)
    on_truth = split[np.arange(v), truth]
    assert (on_truth / r2 > 0.9).all() and (share > 0.9).all()
    mask = np.ones_like(split, bool)
    mask[np.arange(v), truth] = False
    assert np.abs(split[mask]).max() < 0.05


def test_constant_responses_give_nan_and_dominant_layer_handles_it():
    y = np.ones((10, 2))
    y[:, 1] = np.arange(10)
    split, offset = r2_split(y, np.stack([y * 0.5, y * 0.1]))
    assert np.isnan(split[0]).all() and np.isnan(offset[0])
    layer, share = dominant_layer(split)
    assert layer[0] == 0 and np.isnan(share[0]) and layer[1] == 0 and share[1] > 0.5


def test_module_layer_parts_add_up_to_its_prediction_and_follow_one_hot_layers():
    torch = pytest.importorskip("torch")
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = FactorTopyConfig((3, 5, 4), (4, 4), bottleneck=6, hidden=8, n_freqs=2)
    m = FactorTopy(rng.normal(size=(7, 3)), cfg)
    torch.nn.init.normal_(m.layer_mlp[-1].weight)
    torch.nn.init.normal_(m.space_mlp[-1].weight)
    local = [torch.randn(5, c, 4, 4) for c in cfg.widths]
    glo = [torch.randn(5, c) for c in cfg.widths]
    with torch.no_grad():
        parts = layer_contributions(m, local, glo)
        full = m(local, glo)
    assert parts.shape == (3, 5, 7)
    torch.testing.assert_close(parts.sum(0) + m.bias, full, rtol=1e-5, atol=1e-6)
    # a vertex whose layer selector is one-hot has every part but that layer's zero
    with torch.no_grad():
        sel = m.selectors()
        layer = sel.layer.clone()
        layer[2] = torch.tensor([0.0, 1.0, 0.0])
        sel.layer = layer
        parts = layer_contributions(m, local, glo, sel)
    assert torch.all(parts[[0, 2], :, 2] == 0) and torch.any(parts[1, :, 2] != 0)


def test_r2_weighted_slope_is_not_compressed_by_a_soft_selectors_tail():
    """A selector with a uniform tail of mass ε compresses the layer-position slope by
    (1 − ε); the R²-weighted layer map, where the variance sits, keeps the true slope."""
    from napari_factortopy.core.analyses import hierarchy_slope
    from napari_factortopy.core.variance_split import r2_layer_weights

    rng = np.random.default_rng(3)
    n, n_layers, per = 300, 10, 30
    level = np.repeat(np.arange(1, 5), per)  # V1 … EBA
    v = level.size
    true_layer = np.array([0, 3, 6, 9])[level - 1]  # positions 0, 1/3, 2/3, 1: slope 1
    eps = 0.4
    pi = np.full((v, n_layers), eps / n_layers)
    pi[np.arange(v), true_layer] += 1 - eps
    # each layer's part is π_vl times an independent signal; only the true layer's
    # signal is in the responses
    signals = rng.normal(size=(n_layers, n, v))
    parts = pi.T[:, None, :] * signals
    y = signals[true_layer, :, np.arange(v)].T + rng.normal(size=(n, v)) * 0.5
    split, _ = r2_split(y, parts)
    w = r2_layer_weights(split)
    assert np.isfinite(w).all() and np.allclose(w.sum(1), 1)
    assert hierarchy_slope(pi, level).slope == pytest.approx(1 - eps, abs=1e-9)
    assert hierarchy_slope(w, level).slope == pytest.approx(1.0, abs=0.05)
    nan_row = r2_layer_weights(np.array([[-0.1, -0.2], [np.nan, 0.3]]))
    assert np.isnan(nan_row).all()
