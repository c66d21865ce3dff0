"""Offscreen surface rendering, checked on a synthetic sphere whose colours are known."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from napari_factortopy.scene.render import project, render_mesh, surface_figure, view_basis

RED = np.array([1.0, 0.0, 0.0, 1.0])
BLUE = np.array([0.0, 0.0, 1.0, 1.0])
GREEN = np.array([0.0, 1.0, 0.0, 1.0])


def _icosphere(n_sub: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere with faces wound counter-clockwise seen from outside."""
    t = (1 + 5**0.5) / 2
    v = [
        (-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0),
        (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
        (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1),
    ]  # fmt: skip
    f = [
        (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
        (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
        (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
        (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
    ]  # fmt: skip
    verts = [np.array(p, dtype=float) / np.linalg.norm(p) for p in v]
    faces = list(f)
    for _ in range(n_sub):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, cache=cache) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    vv = np.array(verts)
    ff = np.array(faces)
    # make the winding outward (independent of the table above)
    normal = np.cross(vv[ff[:, 1]] - vv[ff[:, 0]], vv[ff[:, 2]] - vv[ff[:, 0]])
    flip = np.einsum("ij,ij->i", normal, vv[ff].mean(axis=1)) < 0
    ff[flip] = ff[flip][:, ::-1]
    return vv * 50.0, ff


def _two_tone(vertices, axis, pos=RED, neg=BLUE):
    return np.where(vertices[:, [axis]] > 0, pos, neg)


def _mask(img, rgba):
    target = np.round(np.asarray(rgba[:3]) * 255)
    return np.all(np.abs(img[..., :3].astype(int) - target) <= 12, axis=-1)


def _cols(mask):
    return np.flatnonzero(mask.any(axis=0))


def _sphere_centre_col(img):
    nonwhite = np.any(img[..., :3] < 200, axis=-1)
    cols = _cols(nonwhite)
    return (cols.min() + cols.max()) / 2


def test_view_basis_is_right_handed_and_projects():
    for view in ("lateral", "medial", "posterior", "anterior", "ventral", "dorsal"):
        for hemi in ("lh", "rh"):
            r, u, f = view_basis(view, hemi)
            np.testing.assert_allclose(np.cross(r, u), -f)
    # lateral view of the left hemisphere: anterior (+y) is to the left, up is +z
    xy, depth = project(np.array([[0.0, 10.0, 3.0], [-5.0, 0.0, 0.0]]), "lateral", "lh")
    np.testing.assert_allclose(xy, [[-10.0, 3.0], [0.0, 0.0]])
    assert depth[1] == pytest.approx(-5.0)  # the lateral (−x) side is nearer the camera
    with pytest.raises(ValueError):
        view_basis("sideways")


@pytest.mark.parametrize(
    ("view", "hemi", "axis", "red_side"),
    [
        ("posterior", "lh", 0, "right"),  # +x to the right
        ("lateral", "lh", 1, "left"),  # anterior to the left
        ("lateral", "rh", 1, "right"),  # anterior to the right
        ("medial", "lh", 1, "right"),
        ("dorsal", "lh", 0, "right"),
        ("ventral", "lh", 0, "left"),  # seen from below, left and right swap
    ],
)
def test_two_halves_land_on_the_expected_sides(view, hemi, axis, red_side):
    v, f = _icosphere(3)
    panel = {"vertices": v, "faces": f, "rgba": _two_tone(v, axis), "view": view, "hemi": hemi}
    img = surface_figure([[panel]], width_px=300)
    assert img.dtype == np.uint8 and img.shape[1] == 300 and img.shape[2] == 4
    red, blue = _mask(img, RED), _mask(img, BLUE)
    assert red.sum() > 2000 and blue.sum() > 2000
    centre = _sphere_centre_col(img)
    left, right = (blue, red) if red_side == "right" else (red, blue)
    assert _cols(right).min() > centre - 2
    assert _cols(left).max() < centre + 2


def test_hidden_half_is_not_drawn():
    v, f = _icosphere(3)
    # dorsal view sees only the upper half: the lower half's colour must not show
    rgba = _two_tone(v, 2, pos=GREEN, neg=RED)
    img = surface_figure(
        [[{"vertices": v, "faces": f, "rgba": rgba, "view": "dorsal"}]], width_px=300
    )
    assert _mask(img, GREEN).sum() > 5000
    assert _mask(img, RED).sum() == 0
    # without culling the painter's algorithm still hides the far half
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 3), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    render_mesh(ax, v, f, rgba, view="dorsal", cull_backfaces=False)
    canvas.draw()
    arr = np.asarray(canvas.buffer_rgba())
    assert _mask(arr, GREEN).sum() > 5000
    assert _mask(arr, RED).sum() < 20  # at most stray antialiased edge pixels


def test_flat_view_uses_xy():
    xs, ys = np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-0.5, 0.5, 6))
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    faces = []
    for i in range(5):
        for j in range(10):
            a = i * 11 + j
            faces += [(a, a + 1, a + 12), (a, a + 12, a + 11)]
    rgba = _two_tone(v, 0, pos=BLUE, neg=RED)
    img = surface_figure(
        [[{"vertices": v, "faces": np.array(faces), "rgba": rgba, "view": "flat"}]], width_px=300
    )
    centre = _sphere_centre_col(img)
    assert _cols(_mask(img, BLUE)).min() > centre - 2
    assert _cols(_mask(img, RED)).max() < centre + 2


def test_figure_layout_legend_titles_and_png(tmp_path):
    v, f = _icosphere(2)
    rgba = _two_tone(v, 0)
    panels = [
        [
            {"vertices": v, "faces": f, "rgba": rgba, "view": "lateral", "title": "lh lateral"},
            {"vertices": v, "faces": f, "rgba": rgba, "view": "lateral", "hemi": "rh"},
        ],
        [{"vertices": v, "faces": f, "rgba": rgba, "view": "ventral", "title": "ventral"}],
    ]
    legend = np.zeros((8, 8, 4))
    legend[...] = GREEN
    out = tmp_path / "sub" / "layer_map.png"
    img = surface_figure(
        panels,
        legend=legend,
        legend_title="layer map",
        width_px=600,
        out_path=out,
        legend_extent=(0.5, 4.5, 0, 1),
    )
    assert img.shape[1] == 600
    # the legend is drawn, in the right-hand column only
    green = _mask(img, GREEN)
    assert green.sum() > 1000
    assert _cols(green).min() > 0.8 * 600
    # the meshes are drawn left of it: lateral lh shows only x<0 (blue), rh only red
    assert _cols(_mask(img, BLUE)).max() < 0.84 * 600
    assert _mask(img, RED).sum() > 500
    # saved atomically, identical to the returned image, no temporary left behind
    assert out.exists()
    saved = np.round(imread(out) * 255).astype(np.uint8)
    np.testing.assert_array_equal(saved, img)
    assert [p.name for p in out.parent.iterdir()] == ["layer_map.png"]
    # text (titles, axis labels) put dark pixels outside the meshes and the legend
    dark = np.all(img[..., :3] < 80, axis=-1)
    assert dark.any()
