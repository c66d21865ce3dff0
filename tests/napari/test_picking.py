"""Our click picking (scene.picking) against napari's own (``Surface.get_value`` in 3-D)
on the same clicks: the same vertex wherever the ray crosses the mesh."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.scene.meshes import layout
from napari_factortopy.scene.picking import first_hit, vertex_rays

from .conftest import synthetic_loader


def _meshset(kind: str):
    """fsaverage5 when it is on this machine, else a synthetic mesh of 2,562 vertices."""
    from napari_factortopy.data.surfaces import SurfaceError
    from napari_factortopy.scene.meshes import load_meshset

    try:
        return load_meshset("fsaverage5", kind)
    except (SurfaceError, OSError, ValueError):
        return synthetic_loader(2562)("fsaverage5", kind)


def _napari_vertex(layer, p, d):
    """napari's pick: the triangle ``get_value`` reports, and its corner nearest to where
    the ray crosses that triangle's plane (computed here, from the triangle alone)."""
    _, tri = layer.get_value(p, view_direction=d, dims_displayed=[0, 1, 2], world=True)
    if tri is None:
        return None
    verts, faces = layer.data[0].astype(np.float64), layer.data[1]
    corners = faces[tri]
    a, b, c = verts[corners]
    normal = np.cross(b - a, c - a)
    x = p + np.dot(a - p, normal) / np.dot(d, normal) * d
    return int(corners[np.argmin(((verts[corners] - x) ** 2).sum(1))])


@pytest.mark.parametrize(
    ("kind", "view"), [("inflated", "lateral"), ("pial", "posterior"), ("sphere", "ventral")]
)
def test_our_pick_is_naparis_vertex_on_the_same_clicks(kind, view):
    from napari.components import ViewerModel
    from napari.layers import Surface

    verts, faces = layout(_meshset(kind), view)
    viewer = ViewerModel(ndisplay=3)
    layer = viewer.add_layer(Surface((verts, faces)))
    rays = vertex_rays(verts, faces)
    lo, hi = verts.min(0), verts.max(0)
    rng = np.random.default_rng(0)
    d = np.array([-1.0, 0.0, 0.0])  # napari's default 3-D camera looks along −axis 0
    same = near_miss = both_miss = 0
    for y, z in zip(rng.uniform(lo[1], hi[1], 120), rng.uniform(lo[2], hi[2], 120), strict=True):
        p = np.array([hi[0] + 10.0, y, z])  # a click: a point in front of the brain
        theirs = _napari_vertex(layer, p, d)
        ours = first_hit(rays, p, d)
        if theirs is not None:
            assert ours is not None and ours[1] == theirs, (p, ours, theirs)
            same += 1
        elif ours is None:
            both_miss += 1
        else:  # napari finds nothing; ours picks a vertex within one edge of the ray
            off = verts[ours[1]] - p
            assert np.linalg.norm(off - np.dot(off, d) * d) <= rays.radius + 1e-6
            near_miss += 1
    assert same >= 50 and both_miss >= 10, (same, near_miss, both_miss)
    assert near_miss <= 0.2 * (same + near_miss)


def test_a_click_on_a_vertex_picks_it_and_a_click_off_the_brain_picks_nothing():
    verts, faces = layout(_meshset("inflated"), "lateral")
    rays = vertex_rays(verts, faces)
    d = np.array([-1.0, 0.0, 0.0])
    front = np.flatnonzero(verts[:, 0] > np.percentile(verts[:, 0], 99))[:20]
    for v in front:  # vertices facing the camera, clicked from in front
        t, picked = first_hit(rays, verts[v] + np.array([100.0, 0, 0]), d)
        assert picked == v
        assert t == pytest.approx(100.0, abs=1e-3)
    far = np.array([verts[:, 0].max() + 10, verts[:, 1].max() + 50, 0.0])
    assert first_hit(rays, far, d) is None
