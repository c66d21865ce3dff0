"""Issues #8 and #11 in the real viewer: seed ensembles (consistency maps, seeds in the
inspector) and baselines / ablations (only real maps, the method named, ridge vs
FactorTopy in Compare)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.core import colours
from napari_factortopy.core.analyses import confidence
from napari_factortopy.core.ensemble import combine_seeds
from napari_factortopy.scene.brain import ENSEMBLE_MAPS, MAPS, available_maps

from ._drive import canvas_shot, click, dock, open_model
from .conftest import make_model


def ensemble_model(n_seeds: int = 3):
    """K test models on the same vertices and split, combined as a seed ensemble."""
    base = make_model(seed=0)
    models = []
    for k in range(n_seeds):
        other = make_model(seed=k)
        # seeds agree on half the vertices: the first half keeps seed 0's layers
        layer = other.layer.copy()
        half = base.n_vertices // 2
        layer[:half] = base.layer[:half]
        models.append(
            replace(
                base,
                layer=layer,
                space=other.space,
                scale=other.scale,
                summary={"val_score": 0.1 * k},
            )
        )
    return combine_seeds(models, list(range(10, 10 + n_seeds)))


@pytest.fixture
def ensemble_path(tmp_path):
    return ensemble_model().save(tmp_path / "seeds.ftopy")


def test_ensemble_consistency_maps_in_the_viewer(
    make_napari_viewer, ensemble_path, model_path, shot_dir
):
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, ensemble_path)
    brain = dock(viewer, "Brain maps")
    scene = scene_for_layer(layer)
    m = scene.model
    assert set(ENSEMBLE_MAPS) <= set(brain.map_choice.choices)
    # the layer map's brightness is confidence × agreement
    agree = m.ensemble["layer_agreement"]
    assert agree.min() < 1.0 and agree[: m.n_vertices // 2].min() == 1.0
    expected = colours.layer_rgba(m.layer)
    dark = colours._layer_colour(
        np.argmax(m.layer, 1) / (m.n_layers - 1), confidence(m.layer) * agree, "coolwarm"
    )
    np.testing.assert_allclose(layer.vertex_colors[scene.mesh_index()], dark, atol=1e-6)
    disagree = agree < 1
    assert not np.allclose(dark[disagree], expected[disagree])
    for name, key in zip(ENSEMBLE_MAPS, ("layer_agreement", "space_spread", "scale_sd"),
                         strict=True):  # fmt: skip
        brain.map_choice.value = name
        vals, _ = scene.values()
        np.testing.assert_allclose(vals[scene.mesh_index()], m.ensemble[key], rtol=1e-6)
        assert brain.legend.value is not None
    brain.map_choice.value = "agreement"
    shot = canvas_shot(viewer)
    from PIL import Image

    Image.fromarray(shot).save(shot_dir / "ensemble_agreement.png")
    # the inspector names each seed's argmax layer at the clicked vertex
    brain._on_view("lateral")
    row = int(np.flatnonzero(disagree)[0])
    mi = int(scene.mesh_index()[row])
    world = np.asarray(layer.data_to_world(np.asarray(layer.data[0][mi])))
    pick = brain._on_click_world(world + np.array([200.0, 0, 0]), np.array([-1.0, 0, 0]))
    assert pick is not None and pick.row is not None
    r = pick.row
    names = m.backbone["layer_names"]
    for seed, stack in zip(m.summary["ensemble"]["seeds"], m.ensemble["layer"], strict=True):
        assert f"{seed}: {names[int(np.argmax(stack[r]))]}" in brain.info.value
    assert "agreement" in brain.info.value
    brain.map_choice.value = "space spread"
    brain._on_view("posterior")
    Image.fromarray(canvas_shot(viewer)).save(shot_dir / "ensemble_spread_posterior.png")
    assert brain.native.grab().save(str(shot_dir / "ensemble_panel.png"))
    # a plain model does not offer the consistency maps
    plain = open_model(viewer, model_path)
    brain.model_choice.value = plain.name
    assert not set(ENSEMBLE_MAPS) & set(brain.map_choice.choices)


def test_a_click_through_the_canvas_reports_the_seeds(make_napari_viewer, ensemble_path):
    from ._drive import colour_centroid, paint_hemispheres

    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, ensemble_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("lateral")
    n_lh = scene_for_layer(layer).meshes().n("lh")
    paint_hemispheres(layer, n_lh)
    click(viewer, colour_centroid(canvas_shot(viewer), (255, 0, 0)))
    assert brain.last_pick is not None
    if brain.last_pick.row is not None:
        assert "seeds' layers" in brain.info.value
    else:
        assert "not modelled" in brain.info.value


def baseline_model(method="ridge", maps=("layer",)):
    m = make_model(seed=3)
    return replace(m, kind="baseline", extra={"baseline": {"method": method, "maps": list(maps)}})


def test_baseline_shows_only_its_real_maps(make_napari_viewer, tmp_path):
    ridge = baseline_model().save(tmp_path / "ridge.ftopy")
    gnet = baseline_model("gnet", ("space",)).save(tmp_path / "gnet.ftopy")
    viewer = make_napari_viewer()
    layer = open_model(viewer, ridge)
    brain = dock(viewer, "Brain maps")
    assert layer.name == "ridge [ridge]"
    assert brain.method.value == "ridge" and not brain.method.native.isHidden()
    assert tuple(brain.map_choice.choices) == ("layer", "layer weights", "score", "roi")
    g = open_model(viewer, gnet)
    assert g.name == "gnet [gnet]"
    assert scene_for_layer(g).map_name == "space"  # no layer map: its first real map
    brain.model_choice.value = g.name
    assert tuple(brain.map_choice.choices) == ("space", "score", "roi")  # in MAPS order
    assert available_maps(make_model()) == list(MAPS)


def test_ablation_is_named(make_napari_viewer, tmp_path):
    m = make_model(seed=4)
    state = {k: v for k, v in m.state.items() if not k.startswith("scale_mlp")}
    abl = replace(m, config={**m.config, "select_scale": False}, state=state)
    path = abl.save(tmp_path / "abl.ftopy")
    viewer = make_napari_viewer()
    layer = open_model(viewer, path)
    brain = dock(viewer, "Brain maps")
    assert layer.name == "abl [no_scale_sel]" and brain.method.value == "no_scale_sel"


def test_compare_ridge_with_factortopy(
    make_napari_viewer, tmp_path, model_path, tiny_model, shot_dir
):
    ridge = baseline_model().save(tmp_path / "ridge.ftopy")
    viewer = make_napari_viewer(show=True)
    compare = dock(viewer, "Clusters and compare")
    compare.file_a.value = str(ridge)
    compare.file_b.value = str(model_path)
    layers = compare._on_compare()
    assert layers[0].name == "A: ridge [ridge]" and layers[1].name == "B: tiny"
    # only differences of real maps: ridge has a layer map, no space or scale
    assert set(compare.difference.choices) == {
        "layer position A − B", "layer selector distance", "r2_test A − B"
    }  # fmt: skip
    compare.difference.value = "layer position A − B"
    assert not compare.scatter.native.isHidden() and compare.scatter.value is not None
    a, b = compare.scores
    np.testing.assert_allclose(a, baseline_model().scores["r2_test"])
    np.testing.assert_allclose(b, tiny_model.scores["r2_test"])
    from PIL import Image

    Image.fromarray(canvas_shot(viewer)).save(shot_dir / "compare_ridge.png")
    Image.fromarray(np.asarray(compare.scatter_image)).save(shot_dir / "compare_scatter.png")
