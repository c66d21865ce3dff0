"""Colourings and legends, checked against per-vertex formulas computed another way."""

from __future__ import annotations

import colorsys
import math

import matplotlib
import numpy as np
import pytest

from napari_factortopy.core.colours import (
    GYRUS_GREY,
    SULCUS_GREY,
    cluster_palette,
    cluster_rgba,
    curvature_grey,
    layer_legend,
    layer_rgba,
    paint_surface,
    scale_rgba,
    score_rgba,
    space_legend,
    space_rgba,
    weight_rgba,
)


def _expected_layer_colour(row, cmap="coolwarm"):
    n_layers = len(row)
    h = -sum(p * math.log(p) for p in row if p > 0)
    conf = 1.0 if n_layers == 1 else 1 - h / math.log(n_layers)
    best = max(range(n_layers), key=lambda l: row[l])
    pos = 0.5 if n_layers == 1 else best / (n_layers - 1)
    rgb = matplotlib.colormaps[cmap](pos)[:3]
    factor = 1.2 - (1 - conf) ** 3
    return [min(1.0, max(0.0, c * factor)) for c in rgb] + [1.0]


def test_layer_rgba_formula():
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.full(6, 0.3), size=12)
    pi[0] = np.eye(6)[5]  # confident, last layer: red scaled by 1.2 then clipped
    pi[1] = 1 / 6  # uniform: factor 0.2
    got = layer_rgba(pi)
    for v in range(12):
        np.testing.assert_allclose(got[v], _expected_layer_colour(pi[v]), atol=1e-12)
    red = matplotlib.colormaps["coolwarm"](1.0)
    np.testing.assert_allclose(got[0, :3], np.minimum(1, np.array(red[:3]) * 1.2))
    blue = matplotlib.colormaps["coolwarm"](0.0)  # uniform: argmax ties → layer 0
    np.testing.assert_allclose(got[1, :3], np.array(blue[:3]) * 0.2)
    single = layer_rgba(np.ones((2, 1)))
    np.testing.assert_allclose(
        single[0, :3], np.minimum(1, np.array(matplotlib.colormaps["coolwarm"](0.5)[:3]) * 1.2)
    )


def test_layer_legend_layout():
    leg = layer_legend(4, size=(11, 8))
    assert leg.shape == (11, 8, 4)
    for i in range(11):
        conf = 1 - i / 10
        for j in range(8):
            layer = j * 4 // 8  # two columns per layer band
            rgb = matplotlib.colormaps["coolwarm"](layer / 3)[:3]
            factor = 1.2 - (1 - conf) ** 3
            exp = [min(1, max(0, c * factor)) for c in rgb]
            np.testing.assert_allclose(leg[i, j, :3], exp, atol=1e-12)
    # top row = confident: identical to a one-hot vertex of that layer
    np.testing.assert_allclose(leg[0, 7], layer_rgba(np.eye(4)[[3]])[0])
    np.testing.assert_allclose(leg[0, 0], layer_rgba(np.eye(4)[[0]])[0])


def _expected_space(x, y):
    hue = (math.atan2(y, x) / (2 * math.pi)) % 1.0
    sat = min(1.0, math.hypot(x, y))
    return [*colorsys.hsv_to_rgb(hue, sat, 1.0), 1.0]


def test_space_rgba_hue_and_saturation():
    pts = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0], [0.3, -0.4], [1, 1], [np.nan, 0]])
    got = space_rgba(pts)
    for v in range(7):
        np.testing.assert_allclose(got[v], _expected_space(*pts[v]), atol=1e-12)
    np.testing.assert_allclose(got[0], [1, 0, 0, 1], atol=1e-12)  # +x is red
    np.testing.assert_allclose(got[4], [1, 1, 1, 1])  # centre is white
    np.testing.assert_allclose(got[7], [GYRUS_GREY] * 3 + [1])


def test_space_legend_orientation():
    n = 6
    leg = space_legend(n)
    assert leg.shape == (n, n, 4)
    for i in range(n):
        for j in range(n):
            x = (2 * j + 1) / n - 1
            y = (2 * i + 1) / n - 1
            np.testing.assert_allclose(leg[i, j], _expected_space(x, y), atol=1e-12)
    # right-middle is reddish (+x), top-middle is y = -1 (hue 0.75: violet)
    big = space_legend(64)
    r, g, b = big[32, 63, :3]
    assert r > 0.99 and g < 0.2 and b < 0.2
    assert big[0, 32, :3] == pytest.approx(colorsys.hsv_to_rgb(0.75, 1.0, 1.0), abs=0.05)


def test_scalar_maps():
    x = np.array([0.0, 0.25, 1.0, 1.5, -1.0, np.nan])
    got = scale_rgba(x)
    cm = matplotlib.colormaps["PuOr"]
    for v, t in enumerate([0.0, 0.25, 1.0, 1.0, 0.0]):
        np.testing.assert_allclose(got[v], [*cm(t)[:3], 1.0])
    np.testing.assert_allclose(got[5], [GYRUS_GREY] * 3 + [1])

    w = weight_rgba(np.array([2.0, 3.0, 4.0]), vmin=2, vmax=4)
    cm = matplotlib.colormaps["viridis"]
    for v, t in enumerate([0.0, 0.5, 1.0]):
        np.testing.assert_allclose(w[v], [*cm(t)[:3], 1.0])
    with pytest.raises(ValueError):
        weight_rgba(np.zeros(2), vmin=1, vmax=1)


def test_score_rgba_range_and_nan():
    s = np.array([0.0, 0.2, 0.4, -0.1, np.nan])
    curv = np.array([0, 0, 0, 0, 1.0])  # nan vertex lies in a sulcus
    got = score_rgba(s, curv=curv)
    cm = matplotlib.colormaps["Reds"]
    for v, t in enumerate([0.0, 0.5, 1.0, 0.0]):
        np.testing.assert_allclose(got[v], [*cm(t)[:3], 1.0])
    np.testing.assert_allclose(got[4], [SULCUS_GREY] * 3 + [1])
    fixed = score_rgba(s, vmax=0.8)
    np.testing.assert_allclose(fixed[2], [*cm(0.5)[:3], 1.0])
    np.testing.assert_allclose(fixed[4], [GYRUS_GREY] * 3 + [1])
    neg = score_rgba(np.array([-0.3, -0.1]))  # nanmax < 0 → vmax clipped to 0
    np.testing.assert_allclose(neg, [[*cm(0.0)[:3], 1.0]] * 2)


def test_cluster_palette_and_rgba():
    tab = matplotlib.colormaps["tab20"].colors
    pal = cluster_palette(20)
    # dark shades (even tab20 indices) first, then light ones
    for k in range(10):
        np.testing.assert_allclose(pal[k, :3], tab[2 * k])
        np.testing.assert_allclose(pal[10 + k, :3], tab[2 * k + 1])
    assert len({tuple(c) for c in pal}) == 20
    got = cluster_rgba(np.array([0, 3, 19, -1]))
    np.testing.assert_allclose(got[:3], pal[[0, 3, 19]])
    np.testing.assert_allclose(got[3], [GYRUS_GREY] * 3 + [1])
    with pytest.raises(ValueError, match="out of range"):
        cluster_rgba(np.array([20]))


def test_curvature_grey_and_paint_surface():
    curv = np.array([-0.5, 0.2, 0.0, -1e-3, 0.7])
    grey = curvature_grey(curv)
    exp = [GYRUS_GREY, SULCUS_GREY, SULCUS_GREY, GYRUS_GREY, SULCUS_GREY]
    np.testing.assert_allclose(grey[:, 0], exp)
    np.testing.assert_allclose(grey[:, :3], np.repeat(np.array(exp)[:, None], 3, axis=1))
    np.testing.assert_allclose(grey[:, 3], 1)

    rgba = np.array([[1.0, 0, 0, 1], [0, 0, 1.0, 1]])
    out = paint_surface(5, np.array([3, 1]), rgba, curv=curv)
    expected = grey.copy()
    expected[3] = rgba[0]
    expected[1] = rgba[1]
    np.testing.assert_allclose(out, expected)
    plain = paint_surface(3, np.array([0]), rgba[:1, :3])
    np.testing.assert_allclose(
        plain, [[1, 0, 0, 1], [GYRUS_GREY] * 3 + [1], [GYRUS_GREY] * 3 + [1]]
    )
    with pytest.raises(ValueError, match="out of range"):
        paint_surface(5, np.array([0, 5]), rgba)
    with pytest.raises(ValueError, match="out of range"):
        paint_surface(5, np.array([-1, 2]), rgba)
    with pytest.raises(ValueError, match="match vertex_ids"):
        paint_surface(5, np.array([0]), rgba)
    with pytest.raises(ValueError, match="curv"):
        paint_surface(5, np.array([0, 1]), rgba, curv=curv[:4])


def test_layer_rgba_draws_non_finite_rows_grey():
    from napari_factortopy.core.colours import GYRUS_GREY, layer_rgba

    pi = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    out = layer_rgba(pi)
    np.testing.assert_allclose(out[1], [GYRUS_GREY, GYRUS_GREY, GYRUS_GREY, 1.0])
    np.testing.assert_allclose(out[[0, 2]], layer_rgba(pi[[0, 2]]))
