"""Issue #23 (and #21's rehearsal): a model whose selectors chose nothing (space collapsed
to one point, layer weights still uniform, one layer everywhere) is named as such, from
numbers checked against plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_factortopy.core.selector_check import (
    MIN_VERTICES,
    SPACE_SPREAD_MIN,
    UNDECIDED_CONFIDENCE,
    assess_selectors,
)


def _healthy(v=300, n_layers=8, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(v, n_layers)) * 4
    layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    space = rng.uniform(-0.9, 0.9, size=(v, 2))
    return layer, space


def _loop_spread(space):
    cx = sum(p[0] for p in space) / len(space)
    cy = sum(p[1] for p in space) / len(space)
    return math.sqrt(sum((p[0] - cx) ** 2 + (p[1] - cy) ** 2 for p in space) / len(space))


def _loop_confidence(layer):
    total = 0.0
    for row in layer:
        h = -sum(p * math.log(p) for p in row if p > 0)
        total += 1 - h / math.log(len(row))
    return total / len(layer)


def test_a_trained_looking_model_has_no_finding_and_its_numbers_match_loops():
    layer, space = _healthy()
    out = assess_selectors(layer, space)
    assert out["findings"] == [] and out["line"] is None
    assert out["vertices"] == 300
    assert out["space_spread"] == pytest.approx(_loop_spread(space), rel=1e-12)
    assert out["layer_confidence"] == pytest.approx(_loop_confidence(layer), rel=1e-9)
    counts = [0] * layer.shape[1]
    for row in layer:
        counts[max(range(len(row)), key=lambda k: row[k])] += 1
    top = max(range(len(counts)), key=lambda k: counts[k])
    assert out["top_layer"] == top + 1  # 1-based, as the maps and info read
    assert out["top_layer_share"] == pytest.approx(counts[top] / 300)


def test_space_collapsed_to_the_corner_is_named_with_its_place():
    layer, _ = _healthy(seed=1)
    space = np.tile([1.0, -1.0], (300, 1)) + np.random.default_rng(2).normal(0, 1e-4, (300, 2))
    out = assess_selectors(layer, space)
    kinds = [f["kind"] for f in out["findings"]]
    assert kinds == ["space_collapsed"]
    assert "(1.00, -1.00) (the image's corner)" in out["line"]
    assert out["space_spread"] < SPACE_SPREAD_MIN


def test_space_collapsed_at_an_edge_and_inside():
    layer, _ = _healthy(seed=3)
    edge = assess_selectors(layer, np.tile([0.2, 0.99], (300, 1)))
    assert "(the image's edge)" in edge["line"]
    inside = assess_selectors(layer, np.tile([0.2, 0.3], (300, 1)))
    assert "one image point (0.20, 0.30):" in inside["line"]


def test_the_spread_threshold_is_a_boundary_not_a_guess():
    """Two clusters whose spread is just under / just over the threshold."""
    layer, _ = _healthy(seed=4)
    for r, collapsed in ((0.9 * SPACE_SPREAD_MIN, True), (1.1 * SPACE_SPREAD_MIN, False)):
        space = np.zeros((300, 2))
        space[::2, 0], space[1::2, 0] = r, -r  # every point at distance r from the mean
        out = assess_selectors(layer, space)
        assert out["space_spread"] == pytest.approx(r)
        assert ("space_collapsed" in [f["kind"] for f in out["findings"]]) is collapsed


def test_undecided_layers_and_one_layer_everywhere():
    _, space = _healthy(seed=5)
    rng = np.random.default_rng(6)
    layer = np.full((300, 12), 1 / 12) + rng.normal(0, 1e-3, (300, 12))
    layer[:, 3] += 0.01  # every vertex's argmax is layer 4 (1-based), by a hair
    layer /= layer.sum(1, keepdims=True)
    out = assess_selectors(layer, space)
    assert [f["kind"] for f in out["findings"]] == ["layer_undecided", "one_layer"]
    assert out["layer_confidence"] == pytest.approx(_loop_confidence(layer), rel=1e-9)
    assert out["layer_confidence"] < UNDECIDED_CONFIDENCE
    assert "every vertex's argmax layer is layer 4" in out["line"]
    # decided, but one layer at 99.3 % of vertices
    sharp = np.full((300, 12), 1e-4)
    sharp[:, 5] = 1.0
    sharp[:2, 5], sharp[:2, 0] = 1e-4, 1.0
    sharp /= sharp.sum(1, keepdims=True)
    out = assess_selectors(sharp, space)
    assert [f["kind"] for f in out["findings"]] == ["one_layer"]
    assert "99.3 % of vertices' argmax layer is layer 6" in out["line"]


def test_ablations_missing_vertices_and_too_few_vertices():
    layer = np.full((300, 6), 1 / 6)
    space = np.zeros((300, 2))
    # an ablation that fixes a factor is not judged on it
    out = assess_selectors(layer, space, select_layer=False, select_space=False)
    assert out["findings"] == [] and out["layer_confidence"] is None
    assert out["space_spread"] is None
    # non-finite rows and rows outside `valid` are left out
    good_layer, good_space = _healthy(seed=7)
    good_space[:50] = np.nan
    valid = np.ones(300, bool)
    valid[50:60] = False
    out = assess_selectors(good_layer, good_space, valid=valid)
    assert out["vertices"] == 240
    assert out["space_spread"] == pytest.approx(_loop_spread(good_space[60:]))
    # no verdict on fewer than MIN_VERTICES
    few = assess_selectors(layer[: MIN_VERTICES - 1], space[: MIN_VERTICES - 1])
    assert few["line"] is None and few["findings"] == []


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(V, L\).*\(V, 2\)"):
        assess_selectors(np.ones((5, 3)), np.ones((4, 2)))
