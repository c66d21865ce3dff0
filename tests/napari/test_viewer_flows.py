"""Issue #9 flows in the real viewer: open through the reader, dock through the Plugins
menu, reset_choices as napari does, click through napari's mouse handling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.core import colours
from napari_factortopy.core.analyses import channel_clusters

from ._drive import canvas_shot, click, colour_centroid, dock, open_model, paint_hemispheres


def test_predict_with_brain_maps_open(make_napari_viewer, phantom_model_path, qtbot):
    """#9.1: the top-channel layers no longer break Brain maps; the status ends."""
    viewer = make_napari_viewer()
    layer = open_model(viewer, phantom_model_path)
    brain = dock(viewer, "Brain maps")
    stim = dock(viewer, "Stimuli and predictions")
    stim.index.value = 4
    worker = stim._on_predict()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: stim.status.value.startswith("image 4"), timeout=10_000)
    response, tops = stim.last
    assert {f"top channels {r}" for r in tops} <= {ly.name for ly in viewer.layers}
    # panel and surface agree: the prediction is the shown map, with its own colours
    assert brain.map_choice.value == "prediction"
    assert "prediction" in brain.map_choice.choices
    scene = scene_for_layer(layer)
    lim = np.abs(response).max()
    np.testing.assert_allclose(
        layer.vertex_colors[scene.mesh_index()],
        colours.weight_rgba(response, -lim, lim, "coolwarm"),
        atol=1e-6,
    )
    # back to a built-in map and forth again through the drop-down
    brain.map_choice.value = "scale"
    np.testing.assert_allclose(
        layer.vertex_colors[scene.mesh_index()], colours.scale_rgba(scene.model.scale), atol=1e-6
    )


def test_dropdowns_survive_reset_choices(make_napari_viewer, model_path, tiny_model):
    """#9.2: score and ROI lists keep their entries when docked and on every new layer."""
    viewer = make_napari_viewer()
    open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    stim = dock(viewer, "Stimuli and predictions")
    rois = [n for k, n in enumerate(tiny_model.roi_names, 1) if np.any(tiny_model.roi == k)]
    for _ in range(2):
        assert brain.score_choice.choices == tuple(tiny_model.scores)
        assert stim.rois.choices == tuple(rois)
        assert brain.model_choice.value == "tiny"
        viewer.add_points(np.zeros((1, 3)))  # napari resets every docked widget's choices
    brain.map_choice.value = "score"
    brain.score_choice.value = "r_test"
    viewer.add_points(np.zeros((1, 3)))
    assert (brain.map_choice.value, brain.score_choice.value) == ("score", "r_test")
    assert scene_for_layer(viewer.layers["tiny"]).score_key == "r_test"


def _world_of(layer, mesh_index):
    return np.asarray(layer.data_to_world(np.asarray(layer.data[0][mesh_index])))


def test_clicks_pick_the_surface_under_the_cursor(make_napari_viewer, model_path, tiny_model):
    """#9.4: with ROI outlines on (the names layer selected), clicks still inspect."""
    viewer = make_napari_viewer(show=True)
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("lateral")
    brain.outlines.value = True
    names = viewer.layers["tiny ROI names"]
    viewer.layers.selection.active = names  # the case of the issue: another layer selected
    n_lh = scene_for_layer(layer).meshes().n("lh")
    colours_before = np.array(layer.vertex_colors)
    paint_hemispheres(layer, n_lh)
    shot = canvas_shot(viewer)
    layer.vertex_colors = colours_before
    for rgb, hemi in (((255, 0, 0), "lh"), ((0, 0, 255), "rh")):
        where = colour_centroid(shot, rgb)
        click(viewer, where)
        pick = brain.last_pick
        assert pick is not None and pick.hemi == hemi, brain.inspector.info.value
        assert "no vertex" not in brain.inspector.info.value
        # the picked vertex lies on the clicked ray: its screen coordinates are the cursor's
        cursor = np.asarray(viewer.cursor.position)
        edge = 3 * np.median(
            np.linalg.norm(np.diff(layer.data[0][layer.data[1][:, :2]], axis=1), axis=-1)
        )
        assert np.linalg.norm(_world_of(layer, pick.mesh_index)[1:] - cursor[1:]) < edge


def test_flat_view_switches_to_the_flat_patch(make_napari_viewer, model_path):
    """#9.6: "flat" shows the flat patch (never a squashed 3-D mesh) and says so."""
    from napari_factortopy.scene.brain import load_meshset

    viewer = make_napari_viewer()
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("flat")
    scene = scene_for_layer(layer)
    assert (scene.kind, scene.view, brain.mesh_choice.value) == ("flat", "flat", "flat")
    flat = load_meshset("fsaverage5", "flat")
    v = np.asarray(layer.data[0])
    np.testing.assert_allclose(np.ptp(v[:, 0]), 0, atol=1e-4)
    lh = v[: flat.n("lh")]
    # the patch's own x, y (up to placement): same extent as the file's
    np.testing.assert_allclose(np.ptp(lh[:, 2]), np.ptp(flat.vertices["lh"][:, 0]), rtol=1e-5)
    np.testing.assert_allclose(np.ptp(lh[:, 1]), np.ptp(flat.vertices["lh"][:, 1]), rtol=1e-5)
    brain.mesh_choice.value = "inflated"  # leaving the patch leaves the flat view
    assert (scene.kind, scene.view) == ("inflated", "lateral")
    assert np.ptp(np.asarray(layer.data[0])[:, 0]) > 10


def test_flat_view_is_disabled_without_a_patch(make_napari_viewer, model_path, tiny_model):
    from napari_factortopy._napari._layers import surface_kwargs
    from napari_factortopy.scene.brain import BrainScene

    from .conftest import synthetic_loader

    loader = synthetic_loader(400)

    def no_flat(name, kind):
        if kind == "flat":
            from napari_factortopy.data.surfaces import SurfaceError

            raise SurfaceError("no flat patch here")
        return loader(name, kind)

    model = __import__("tests.napari.conftest", fromlist=["make_model"]).make_model(
        vertex_ids=np.r_[np.arange(50), np.arange(50)], n_lh=50
    )
    scene = BrainScene(model, loader=no_flat)
    viewer = make_napari_viewer()
    viewer.add_surface(scene.layer_data(), **surface_kwargs(scene, "synthetic"))
    brain = dock(viewer, "Brain maps")
    flat_button = brain.view_buttons[-1]
    assert flat_button.text == "flat" and not flat_button.enabled
    assert "no flat patch" in flat_button.tooltip
    brain._on_view("flat")
    assert scene.view == "lateral" and scene.kind == "inflated"


def test_recomputed_clusters_show_in_the_panel(make_napari_viewer, model_path, tiny_model, qtbot):
    """#9.10: the clusters button repaints the surface and the Brain maps panel follows."""
    viewer = make_napari_viewer()
    layer = open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    compare = dock(viewer, "Clusters and compare")
    assert brain.map_choice.value == "layer"
    legend_before = np.array(brain.legend.value)
    compare.n_clusters.value = 5
    compare._on_clusters()  # on a worker thread
    qtbot.waitUntil(lambda: compare.worker is None, timeout=30_000)
    labels = scene_for_layer(compare.model_choice.layer).clusters
    want = channel_clusters(tiny_model.beta, 5, n_kmeans=min(1000, tiny_model.n_vertices)).labels
    np.testing.assert_array_equal(labels, want)
    scene = scene_for_layer(layer)
    np.testing.assert_allclose(
        layer.vertex_colors[scene.mesh_index()], colours.cluster_rgba(labels), atol=1e-6
    )
    assert brain.map_choice.value == "clusters"
    assert np.asarray(brain.legend.value).shape != legend_before.shape or not np.array_equal(
        brain.legend.value, legend_before
    )


@pytest.mark.parametrize("state", ["not_converged", "converged"])
def test_unfinished_model_says_so(make_napari_viewer, tmp_path, tiny_model, state):
    from dataclasses import replace

    line = "stopped by the time budget at epoch 3; validation R² still rising"
    conv = {"state": state, "reason": "budget", "line": line}
    path = replace(tiny_model, summary={"convergence": conv}).save(tmp_path / "m.ftopy")
    viewer = make_napari_viewer()
    layer = open_model(viewer, path)
    brain = dock(viewer, "Brain maps")
    if state == "not_converged":
        assert layer.name == "m [unfinished]"
        assert not brain.banner.native.isHidden() and line in brain.banner.value
        shown = " ".join(viewer.text_overlay.text.split())  # wrapped to the canvas (#22.11)
        assert viewer.text_overlay.visible and line in shown
    else:
        assert layer.name == "m" and brain.banner.native.isHidden()
        assert not viewer.text_overlay.visible


def _naive_differences(a, b):
    """Differences by a plain loop over A's vertices (independent of core.compare)."""
    rows_b = {}
    for i in range(b.n_vertices):
        rows_b[(i >= b.n_lh, int(b.vertex_ids[i]))] = i
    out = {k: np.full(a.n_vertices, np.nan) for k in ("pos", "scale", "space")}
    for i in range(a.n_vertices):
        j = rows_b.get((i >= a.n_lh, int(a.vertex_ids[i])))
        if j is None:
            continue
        la = sum(a.layer[i, k] * k for k in range(a.n_layers)) / (a.n_layers - 1)
        lb = sum(b.layer[j, k] * k for k in range(b.n_layers)) / (b.n_layers - 1)
        out["pos"][i] = la - lb
        out["scale"][i] = a.scale[i] - b.scale[j]
        out["space"][i] = np.hypot(*(a.space[i] - b.space[j]))
    return out


def test_model_against_truth_without_scores(make_napari_viewer, tmp_path, model_path, tiny_model):
    """#9.5: a truth file without scores compares on every selector; the panel says the
    score difference is left out. Clicks work on the side-by-side (translated) layers."""
    from dataclasses import replace

    from .conftest import make_model

    truth = replace(make_model(seed=3), scores={})
    truth_path = truth.save(tmp_path / "truth.ftopy")
    viewer = make_napari_viewer(show=True)
    open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    compare = dock(viewer, "Clusters and compare")
    compare.file_a.value, compare.file_b.value = str(model_path), str(truth_path)
    _a_layer, b_layer, d_layer = compare._on_compare()
    assert "left out: r2_test A − B (model B has no r2_test scores)" in compare.status.value
    want = _naive_differences(tiny_model, truth)
    scene = scene_for_layer(d_layer)
    assert set(compare.difference.choices) == {
        "layer position A − B", "layer selector distance", "scale A − B", "space distance"
    }  # fmt: skip
    for name, key in (("layer position A − B", "pos"), ("scale A − B", "scale"),
                      ("space distance", "space")):  # fmt: skip
        compare.difference.value = name
        np.testing.assert_allclose(scene.custom[name].values, want[key], atol=1e-9)
        vals = d_layer.metadata["factortopy"]["values"][scene.mesh_index()]
        np.testing.assert_allclose(vals, want[key], atol=1e-9)
    # every difference is also a map of the difference layer in Brain maps
    brain.model_choice.value = d_layer.name
    assert "space distance" in brain.map_choice.choices
    assert brain.map_choice.value == "space distance"
    # a click on model B's surface (translated to the side) inspects B
    n_lh = scene_for_layer(b_layer).meshes().n("lh")
    paint_hemispheres(b_layer, n_lh, lh=(0.0, 1.0, 0.0), rh=(0.0, 1.0, 0.0))
    shot = canvas_shot(viewer)
    where = colour_centroid(shot, (0, 255, 0))
    click(viewer, where)
    assert brain.model_choice.value == b_layer.name
    pick = brain.last_pick
    assert pick is not None, brain.inspector.info.value
    cursor = np.asarray(viewer.cursor.position)
    assert abs(_world_of(b_layer, pick.mesh_index)[2] - cursor[2]) < 10


def _moved(model_path, old_prefix, new_prefix, out):
    """The model file with its dataset record rewritten as if trained under ``new_prefix``."""
    from napari_factortopy.core.fitted_model import FittedModel

    model = FittedModel.load(model_path)
    rec = dict(model.extra["dataset"])
    for key in ("root", "cache", "responses"):
        if isinstance(rec.get(key), str):
            rec[key] = rec[key].replace(str(old_prefix), str(new_prefix))
    model.extra = {**model.extra, "dataset": rec}
    return model.save(out)


def test_moved_model_finds_its_data(
    make_napari_viewer, phantom_model_path, phantom_root, tmp_path, monkeypatch
):
    """#9.3: a model file and its data folder moved together still predict; a model
    moved alone says once where its data was, and "locate data folder…" fixes it."""
    import shutil

    import napari.utils.notifications as notifications

    from napari_factortopy.app.predict import predict_image
    from napari_factortopy.core.fitted_model import FittedModel

    told = []
    monkeypatch.setattr(notifications, "show_warning", told.append)
    gone = "/nowhere/demo-out"  # where it was trained: not on this machine any more
    assert not __import__("os").path.exists(gone)
    moved = tmp_path / "moved"
    shutil.copytree(phantom_root, moved / phantom_root.name)
    path = _moved(phantom_model_path, phantom_root.parent, gone, moved / "model.ftopy")
    want, _ = predict_image(FittedModel.load(phantom_model_path), 6)

    viewer = make_napari_viewer()
    open_model(viewer, path)
    stim = dock(viewer, "Stimuli and predictions")
    assert stim.index.max == 63 and stim.locate_button.native.isHidden()
    stim.index.value = 6
    stim._on_predict(block=True)
    np.testing.assert_allclose(stim.last[0], want, rtol=1e-5, atol=1e-6)
    assert told == []

    alone = tmp_path / "alone"
    alone.mkdir()
    lone = _moved(phantom_model_path, phantom_root.parent, gone, alone / "lone.ftopy")
    lone_layer = open_model(viewer, lone)  # "lone [degenerate]": 3 steps chose nothing
    stim.model_choice.value = lone_layer.name
    stim._on_predict(block=True)
    stim._on_model()
    recorded = f"{gone}/{phantom_root.name}"
    assert sum(recorded in str(t) for t in told) == 1, told  # said once, naming the path
    assert not stim.locate_button.native.isHidden()
    assert "cannot predict" in stim.status.value
    assert stim._on_data_folder(moved / phantom_root.name) == []
    stim._on_predict(block=True)
    np.testing.assert_allclose(stim.last[0], want, rtol=1e-5, atol=1e-6)


def test_resolve_path_order(tmp_path):
    from napari_factortopy.data.stimuli import resolve_path

    (tmp_path / "m" / "phantom").mkdir(parents=True)
    (tmp_path / "abs").mkdir()
    model_dir = tmp_path / "m"
    assert resolve_path(tmp_path / "abs", [model_dir]) == tmp_path / "abs"  # exists as is
    assert resolve_path("phantom", [model_dir]) == model_dir / "phantom"  # relative
    assert resolve_path("/old/demo-out/phantom", [model_dir]) == model_dir / "phantom"  # tail
    assert resolve_path("/old/demo-out/other", [model_dir]) is None


def test_screenshot_is_framed_as_on_screen(make_napari_viewer, model_path, tmp_path):
    """#9.9: a 3000 px canvas screenshot shows the brain as large as the screen does."""

    def extent(image):
        lit = image[..., :3].max(-1) > 10
        cols, rows = np.nonzero(lit.any(0))[0], np.nonzero(lit.any(1))[0]
        width = (cols.max() - cols.min() + 1) / image.shape[1]
        return width, (rows.max() - rows.min() + 1) / image.shape[0]

    viewer = make_napari_viewer(show=True)
    open_model(viewer, model_path)
    brain = dock(viewer, "Brain maps")
    brain._on_view("lateral")
    export = dock(viewer, "Export figure")
    export.out.value = str(tmp_path / "fig.png")
    zoom = viewer.camera.zoom
    on_screen = extent(canvas_shot(viewer))
    shot = export._on_screenshot()
    assert abs(shot.shape[1] - 3000) <= 2
    np.testing.assert_allclose(extent(shot), on_screen, atol=0.02)
    assert on_screen[0] > 0.6
    assert viewer.camera.zoom == zoom  # the view is left as it was
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fig-canvas.png")), shot)


def test_switching_models_keeps_each_models_map(make_napari_viewer, model_path, tmp_path):
    """A map only one model has (a prediction) does not leak into, or repaint, another."""
    from napari_factortopy.scene.brain import CustomMap

    from .conftest import make_model

    other = make_model(seed=11).save(tmp_path / "other.ftopy")
    viewer = make_napari_viewer()
    first = open_model(viewer, model_path)
    second = open_model(viewer, other)
    brain = dock(viewer, "Brain maps")
    brain.model_choice.value = first.name
    scene = scene_for_layer(first)
    scene.custom["prediction"] = CustomMap.from_values(np.linspace(-1, 1, scene.model.n_vertices))
    brain._on_map("prediction")
    brain.model_choice.value = second.name
    assert brain.map_choice.value == "layer" and "prediction" not in brain.map_choice.choices
    assert scene_for_layer(second).map_name == "layer"
    brain.model_choice.value = first.name
    assert brain.map_choice.value == "prediction" and scene.map_name == "prediction"


def test_trained_phantom_against_its_truth_file(
    make_napari_viewer, phantom_model_path, phantom_root
):
    """#9.5 with the phantom's own truth.ftopy (kind phantom-truth, no scores)."""
    from napari_factortopy.core.fitted_model import FittedModel

    viewer = make_napari_viewer()
    compare = dock(viewer, "Clusters and compare")
    truth_path = phantom_root / "truth.ftopy"
    compare.file_a.value, compare.file_b.value = str(phantom_model_path), str(truth_path)
    layers = compare._on_compare()
    assert layers is not None and len(viewer.layers) == 3
    assert "left out: r2_test A − B (model B has no r2_test scores)" in compare.status.value
    model, truth = FittedModel.load(phantom_model_path), FittedModel.load(truth_path)
    want = _naive_differences(model, truth)
    scene = scene_for_layer(layers[2])
    np.testing.assert_allclose(scene.custom["space distance"].values, want["space"], atol=1e-9)
    np.testing.assert_allclose(scene.custom["scale A − B"].values, want["scale"], atol=1e-9)


def test_export_offers_the_models_own_maps(make_napari_viewer, model_path, tmp_path):
    """A prediction (or a difference) shown on a model can be exported like any map."""
    from napari_factortopy._napari._common import apply_scene
    from napari_factortopy.scene.brain import CustomMap

    viewer = make_napari_viewer()
    layer = open_model(viewer, model_path)
    export = dock(viewer, "Export figure")
    scene = scene_for_layer(layer)
    custom = CustomMap.from_values(np.ones(scene.model.n_vertices), label="predicted response")
    scene.custom["prediction"] = custom
    apply_scene(layer, scene)
    viewer.add_points(np.zeros((1, 3)))  # napari refreshes the docked panels' choices
    assert "prediction" in export.maps.choices
    export.maps.value = ["prediction"]
    export.views.value = ["posterior"]
    export.width_px.value = 1200
    export.out.value = str(tmp_path / "pred.png")
    image = export._on_export()
    top = np.round(custom.rgba[0, :3] * 255).astype(int)
    hits = (np.abs(image[..., :3].astype(int) - top).sum(-1) <= 6).sum()
    assert hits > 500, hits


def test_compared_models_switch_view_together(make_napari_viewer, model_path, tmp_path):
    """A view switch on one compared surface applies to all three, still side by side."""
    from .conftest import make_model

    other = make_model(seed=12).save(tmp_path / "other.ftopy")
    viewer = make_napari_viewer()
    brain = dock(viewer, "Brain maps")
    compare = dock(viewer, "Clusters and compare")
    compare.file_a.value, compare.file_b.value = str(model_path), str(other)
    layers = compare._on_compare()
    brain.model_choice.value = layers[1].name
    brain._on_view("posterior")
    spans = []
    for ly in layers:
        scene = scene_for_layer(ly)
        assert scene.view == "posterior"
        np.testing.assert_array_equal(np.asarray(ly.data[0]), scene.layer_data()[0])
        world = np.asarray(ly.data[0])[:, 2] + np.asarray(ly.translate)[2]
        spans.append((world.min(), world.max()))
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # no overlap
