"""Issue 23 in the real viewer: a group file opens like a model (maps layer, agreement,
n; the ROI table), and an evaluated model greys its non-significant vertices and offers
the R² layer map."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.core import colours
from napari_factortopy.core.group import combine_models
from napari_factortopy.scene.brain import available_maps

from ._drive import canvas_shot, dock, open_model
from .conftest import make_model


def _group(tmp_path):
    base = make_model(seed=0)
    models = []
    for s in range(3):
        m = make_model(seed=s)
        m.layer[:100] = base.layer[:100]  # the models agree on the first 100 vertices
        models.append(m)
    # the third model lacks the last 20 vertices: n = 2 there
    last = models[2]
    keep = np.r_[np.arange(last.n_lh), np.arange(last.n_lh, last.n_vertices - 20)]
    models[2] = replace(
        last,
        layer=last.layer[keep],
        space=last.space[keep],
        scale=last.scale[keep],
        vertex_ids=last.vertex_ids[keep],
        roi=last.roi[keep],
        scores={k: v[keep] for k, v in last.scores.items()},
        state={
            k: (v[keep] if k in ("coords", "beta", "bias") else v) for k, v in last.state.items()
        },
    )
    return combine_models(models, ["s1", "s2", "s3"]).save(tmp_path / "group.ftopy")


def test_group_file_opens_with_its_maps_and_roi_table(make_napari_viewer, tmp_path, shot_dir):
    path = _group(tmp_path)
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, path)
    brain = dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    g = scene.model
    choices = set(brain.map_choice.choices)
    assert {"layer", "agreement", "n"} <= choices and "clusters" not in choices
    # the layer map darkens where the models disagree (confidence × agreement)
    want = colours.ensemble_layer_rgba(g.layer, g.ensemble["layer_agreement"])
    np.testing.assert_allclose(layer.vertex_colors[scene.mesh_index()], want, atol=1e-6)
    brain.map_choice.value = "n"
    vals, _ = scene.values()
    np.testing.assert_array_equal(vals[scene.mesh_index()], g.ensemble["n"])
    assert sorted(set(g.ensemble["n"].tolist())) == [2, 3]
    assert brain.legend.value is not None
    brain.map_choice.value = "agreement"
    vals, _ = scene.values()
    assert np.all(vals[scene.mesh_index()][:100] == 1.0)
    from PIL import Image

    Image.fromarray(canvas_shot(viewer)).save(shot_dir / "group_agreement.png")
    table = dock(viewer, "ROI table")
    rows = table._on_model()
    assert {r["roi"] for r in rows} == {"V1", "V2/V3", "OPA", "EBA"}
    assert all(np.isfinite(r["score_sd"]) for r in rows)


def test_an_evaluated_model_greys_what_is_not_significant(make_napari_viewer, tmp_path):
    m = make_model(seed=4)
    v = m.n_vertices
    q = np.where(np.arange(v) % 3 == 0, 0.5, 0.001).astype(np.float32)
    split = np.abs(np.random.default_rng(0).normal(size=(v, m.n_layers))).astype(np.float32)
    se = np.where(np.arange(v) % 2 == 0, 0.05, np.inf).astype(np.float32)  # odd: unlocated
    m = replace(
        m,
        evaluation={"p_value": q, "q_value": q, "r2_split": split, "space_se": se},
        summary={"evaluation": {"alpha": 0.05, "permutations": 100}},
    )
    path = m.save(tmp_path / "evaluated.ftopy")
    viewer = make_napari_viewer()
    layer = open_model(viewer, path)
    brain = dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    assert "R² layer" in brain.map_choice.choices and "R² layer" in available_maps(scene.model)
    shown = layer.vertex_colors[scene.mesh_index()]
    grey = np.arange(v) % 3 == 0
    np.testing.assert_allclose(shown[grey, :3], colours.NOT_SIGNIFICANT_GREY)
    np.testing.assert_allclose(
        shown[~grey], colours.layer_rgba(scene.model.layer)[~grey], atol=1e-6
    )
    brain.map_choice.value = "R² layer"
    shown = layer.vertex_colors[scene.mesh_index()]
    want = colours.r2_layer_rgba(split)
    np.testing.assert_allclose(shown[~grey], want[~grey], atol=1e-6)
    # the space map darkens uncertain RFs: unlocated ones at a fifth of the brightness
    brain.map_choice.value = "space"
    shown = layer.vertex_colors[scene.mesh_index()]
    plain = colours.space_rgba(scene.model.space)
    odd = (np.arange(v) % 2 == 1) & ~grey
    np.testing.assert_allclose(shown[odd, :3], 0.2 * plain[odd, :3], atol=1e-6)
    even = (np.arange(v) % 2 == 0) & ~grey
    np.testing.assert_allclose(shown[even, :3], 0.92 * plain[even, :3], atol=1e-6)
    brain.map_choice.value = "RF uncertainty"
    vals, _ = scene.values()
    np.testing.assert_allclose(vals[scene.mesh_index()][odd], 0.5)
    assert brain.legend.value is not None
    brain.map_choice.value = "roi"  # anatomy is never greyed
    shown = layer.vertex_colors[scene.mesh_index()]
    assert not np.allclose(shown[grey, :3], colours.NOT_SIGNIFICANT_GREY)
