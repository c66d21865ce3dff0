"""model_layers / BrainScene: colours, geometry, fallback and picking (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari import _layers
from napari_factortopy.core import colours
from napari_factortopy.data import surfaces
from napari_factortopy.scene.brain import BrainScene, layout, roi_boundary

from .conftest import make_model, synthetic_loader


def test_model_layers_show_layer_map_with_curvature_background(model_path, tiny_model):
    (layer,) = _layers.model_layers(model_path)
    (verts, faces), kwargs, kind = layer
    assert kind == "surface" and kwargs["shading"] == "none"
    n = surfaces.MESH_SIZES["fsaverage5"]
    assert verts.shape == (2 * n, 3) and faces.max() == 2 * n - 1
    rgba = kwargs["vertex_colors"]
    assert rgba.shape == (2 * n, 4) and np.all(rgba[:, 3] == 1)
    m = tiny_model
    # modelled vertices: exactly colours.layer_rgba; others: curvature grey
    idx = m.vertex_ids + np.where(np.arange(m.n_vertices) < m.n_lh, 0, n)
    np.testing.assert_allclose(rgba[idx], colours.layer_rgba(m.layer), atol=1e-6)
    other = np.setdiff1d(np.arange(2 * n), idx)
    curv = np.concatenate([surfaces.fsaverage5_morph("curv", h) for h in ("lh", "rh")])
    np.testing.assert_allclose(rgba[other], colours.curvature_grey(curv[other]), atol=1e-6)
    meta = kwargs["metadata"][_layers.META_KEY]
    assert meta["map"] == "layer" and meta["kind"] == "inflated"
    np.testing.assert_array_equal(meta["values"][idx], m.layer.argmax(1) + 1)


def test_layout_puts_hemispheres_side_by_side():
    loader = synthetic_loader(500)
    ms = loader("x", "inflated")
    with pytest.raises(ValueError, match="flat mesh"):
        layout(ms, "flat")  # a 3-D mesh is never squashed into a plane
    for view, mesh in [(v, ms) for v in ("lateral", "medial", "ventral", "posterior")] + [
        ("flat", loader("x", "flat"))
    ]:
        verts, faces = layout(mesh, view, gap=10)
        lh, rh = verts[:500], verts[500:]
        assert lh[:, 2].max() + 10 <= rh[:, 2].min() + 1e-4 or rh[:, 2].max() + 10 <= (
            lh[:, 2].min() + 1e-4
        ), view
        assert faces.shape == (2 * len(ms.faces["lh"]), 3)
        if view == "flat":
            np.testing.assert_array_equal(verts[:, 0], 0)


def test_roi_boundary_matches_a_naive_loop():
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    labels = np.array([1, 1, 2, 2, 0, 3])
    want = np.zeros(6, bool)
    for f in faces:
        for a in f:
            for b in f:
                if labels[a] > labels[b] > 0:
                    want[a] = True
    np.testing.assert_array_equal(roi_boundary(faces, labels), want)
    assert want.sum() == 3  # 2 and 3 next to 1; 3 next to 2; nothing next to 0


def test_missing_mesh_falls_back_to_fsaverage5(tmp_path):
    ids = np.r_[np.arange(0, 20000, 100), np.arange(0, 20000, 100)]
    model = make_model(vertex_ids=ids, n_lh=200, mesh="fsaverage6")
    notes = []

    def loader(name, kind):
        if name != "fsaverage5":
            raise surfaces.SurfaceError(f"mesh {name}: not found")
        return _layers.load_meshset(name, kind)

    scene = _layers.load_scene(model, loader=loader, notify=notes.append)
    assert scene.mesh_name == "fsaverage5"
    assert len(scene.rows) == 2 * int(np.sum(np.arange(0, 20000, 100) < 10242))
    assert notes and "fsaverage6" in notes[0] and "fsaverage5" in notes[0]
    far = make_model(vertex_ids=np.r_[20000, 20001], n_lh=1, mesh="fsaverage6")
    with pytest.raises(surfaces.SurfaceError, match="fsaverage6"):
        _layers.load_scene(far, loader=loader, notify=notes.append)


def test_pick_finds_the_vertex_under_a_ray():
    model = make_model(
        vertex_ids=np.r_[np.arange(0, 2000, 7), np.arange(0, 2000, 5)],
        n_lh=len(np.arange(0, 2000, 7)),
        mesh="synthetic",
    )
    scene = BrainScene(model, loader=synthetic_loader(2000))
    verts, _ = scene.geometry()
    rng = np.random.default_rng(1)
    direction = np.array([-1.0, 0.0, 0.0])  # napari's default camera looks along -axis 0
    for target in rng.choice(len(verts), 50, replace=False):
        v = verts[target]
        front = verts[:, 0] > v[0] + 1
        near = np.linalg.norm(verts[:, 1:] - v[1:], axis=1) < 10
        if np.any(front & near):
            continue  # hidden behind another part of the surface
        pick = scene.pick(np.r_[0.0, v[1:]], direction)
        assert pick is not None
        assert np.linalg.norm(verts[pick.mesh_index] - v) < 6
        hemi = "lh" if pick.mesh_index < 2000 else "rh"
        assert pick.hemi == hemi
    assert scene.pick(np.r_[0.0, 1e4, 1e4], direction) is None
    # a modelled vertex maps back to its row
    row = 3
    p = scene.describe(int(scene.mesh_index()[row]))
    assert p.row == row and p.hemi == "lh" and p.hemi_vertex == model.vertex_ids[row]


def test_painted_colours_are_kept_until_their_sources_change():
    from napari_factortopy.scene.brain import BrainScene

    from .conftest import make_model, synthetic_loader

    model = make_model(n_vertices=300)
    scene = BrainScene(model, loader=synthetic_loader(10242))
    first = scene.colors()
    assert scene.colors() is first and not first.flags.writeable
    scene.map_name = "space"
    space = scene.colors()
    scene.map_name = "layer"
    assert scene.colors() is first  # switching back costs no colouring
    scene.outlines = True
    assert scene.colors() is not first
    scene.outlines = False
    # the training preview replaces the selector arrays: the map is repainted
    model.layer = np.roll(model.layer, 1, axis=1)
    fresh = scene.colors()
    assert fresh is not first and not np.array_equal(fresh, first)
    idx = scene.mesh_index()
    from napari_factortopy.core import colours

    np.testing.assert_allclose(fresh[idx], colours.layer_rgba(model.layer), atol=1e-6)
    scene.map_name = "space"  # painted again (any source replaced), same colours
    again = scene.colors()
    np.testing.assert_array_equal(again, space)
    assert scene.colors() is again
    scene.kind = "sphere"
    assert scene.colors() is not again
    assert len(scene._cache["painted"]) <= scene.N_PAINTED


def test_layer_vertices_are_column_major_for_fast_extents():
    from napari_factortopy.scene.brain import BrainScene

    from .conftest import make_model, synthetic_loader

    scene = BrainScene(make_model(n_vertices=300), loader=synthetic_loader(10242))
    verts, faces = scene.layer_data()
    assert verts.flags.f_contiguous
    np.testing.assert_array_equal(verts, scene.geometry()[0])
    assert faces is scene.geometry()[1]


def test_non_finite_selectors_are_grey_on_every_map():
    """A vertex with a non-finite selector shows curvature grey on every fitted map."""
    from napari_factortopy.scene.brain import MAPS

    model = make_model(n_vertices=200, seed=7)
    model.layer[3] = np.nan
    model.space[10, 1] = np.inf
    model.scale[20] = np.nan
    model.__post_init__()  # recompute FittedModel.missing after the edit
    scene = BrainScene(model)
    scene.clusters = np.arange(model.n_vertices) % 4
    idx = scene.mesh_index()
    grey = scene.background()
    bad = [3, 10, 20]
    for name in MAPS:
        scene.map_name = name
        col = scene.colors()
        if name == "roi":
            np.testing.assert_allclose(col[idx[bad]], colours.cluster_rgba(model.roi[bad] - 1, 20))
            continue
        np.testing.assert_allclose(col[idx[bad]], grey[idx[bad]], atol=1e-6, err_msg=name)
        good = np.setdiff1d(np.arange(model.n_vertices), bad)
        assert not np.allclose(col[idx[good]], grey[idx[good]]), name
