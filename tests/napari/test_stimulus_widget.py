"""Stimulus panel: browse stimuli, predicted response map, ROI top-channel images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from napari_factortopy._napari._layers import model_layers
from napari_factortopy._napari._stimulus_widget import StimulusWidget
from napari_factortopy.app.predict import predict_array, predict_image
from napari_factortopy.core import colours
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.data.phantom import phantom_images


def test_prediction_matches_core_predict(phantom_model_path):
    import torch

    from napari_factortopy.core.feature_source import feature_source
    from napari_factortopy.core.training import predict
    from napari_factortopy.data.cache import FeatureCache

    model = FittedModel.load(phantom_model_path)
    response, tops = predict_image(model, 5)
    cache = FeatureCache.open(f"{model.extra['dataset']['root']}/features.zarr")
    want = predict(
        model.to_module("cpu"),
        feature_source(cache, np.array([5]), "cpu"),
        np.array([5]),
        amp=False,
    )[0]
    np.testing.assert_allclose(response, want, rtol=1e-3, atol=1e-4)
    assert set(tops) == {"V1", "V2/V3", "OPA", "EBA"}
    assert all(t.shape == (64, 64, 3) and 0 <= t.min() and t.max() <= 1 for t in tops.values())
    assert torch is not None


def test_widget_shows_stimulus_and_prediction(make_napari_viewer, phantom_model_path):
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(phantom_model_path)
    layer = viewer.add_surface(data, **kwargs)
    widget = StimulusWidget(viewer)
    assert widget.index.max == 63
    widget.index.value = 7
    np.testing.assert_array_equal(viewer.layers["stimulus"].data, phantom_images([7], 64, 0)[0])
    widget.rois.value = ["V1", "EBA"]
    widget._on_predict(block=True)
    response, tops = widget.last
    assert list(tops) == ["V1", "EBA"]
    assert "top channels V1" in viewer.layers and "top channels EBA" in viewer.layers
    from napari_factortopy._napari._layers import scene_for_layer

    scene = scene_for_layer(layer)
    lim = np.abs(response).max()
    np.testing.assert_allclose(
        layer.vertex_colors[scene.mesh_index()],
        colours.weight_rgba(response, -lim, lim, "coolwarm"),
        atol=1e-6,
    )


def test_demo_style_records_are_understood(phantom_model_path, phantom_root):
    from napari_factortopy.data.stimuli import dataset_info, stimulus_loader

    model = FittedModel.load(phantom_model_path)
    model.extra = {"phantom": str(phantom_root)}  # as `factortopy demo` writes it
    info = dataset_info(model)
    assert info["kind"] == "phantom" and info["config"]["image_size"] == 64
    load, n = stimulus_loader(model)
    assert n == 64
    np.testing.assert_array_equal(load(np.array([3]))[0], phantom_images([3], 64, 0)[0])
    response, _ = predict_image(model, 3)
    assert response.shape == (model.n_vertices,)
    model.extra = {"cache": str(phantom_root / "features.zarr")}  # as `factortopy train`
    want = {"kind": "cache", "root": str(phantom_root / "features.zarr"), "missing": []}
    assert dataset_info(model) == want
    assert stimulus_loader(model) is None


def test_any_image_file_is_predicted_through_the_models_backbone(
    make_napari_viewer, phantom_model_path, tmp_path
):
    """An opened PNG of dataset image 5 predicts what the cached features of image 5 do."""
    from PIL import Image

    model = FittedModel.load(phantom_model_path)
    assert model.backbone["name"] == "efficientnet_lite0"
    assert model.backbone["preprocessing"]["input_size"] == 64
    want, want_tops = predict_image(model, 5, ["V1", "EBA"])
    png = tmp_path / "stimulus.png"
    Image.fromarray(phantom_images([5], 64, 0)[0]).save(png)

    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(phantom_model_path)
    viewer.add_surface(data, **kwargs)
    widget = StimulusWidget(viewer)
    widget.file.value = png
    np.testing.assert_array_equal(viewer.layers["stimulus"].data, phantom_images([5], 64, 0)[0])
    widget.rois.value = ["V1", "EBA"]
    widget._on_predict(block=True)
    response, tops = widget.last
    assert "stimulus.png" in widget.status.value
    lim = np.abs(want).max()
    # the cache holds float16 tokens; the file path keeps float32
    np.testing.assert_allclose(response, want, rtol=2e-2, atol=2e-2 * lim)
    assert list(tops) == ["V1", "EBA"]
    for roi in tops:
        assert tops[roi].shape == want_tops[roi].shape == (64, 64, 3)
        np.testing.assert_allclose(tops[roi], want_tops[roi], atol=5e-2)
    assert "top channels EBA" in viewer.layers
    # the backbone is loaded once per widget, not once per prediction
    (bb,) = widget._backbones.values()
    widget._on_predict(block=True)
    assert widget._backbones == {next(iter(widget._backbones)): bb}
    # moving the slider goes back to the dataset's (cached) images
    widget.index.value = 5
    assert widget.file_image is None
    widget._on_predict(block=True)
    np.testing.assert_array_equal(widget.last[0], want)


def test_a_shipped_sample_stimulus_is_opened_and_predicted(make_napari_viewer, phantom_model_path):
    """The "or a sample" list opens a shipped photograph like any file; Predict runs the
    model's backbone on it and equals predict_array on the same pixels."""
    from napari_factortopy.core.resources import sample_stimuli

    model = FittedModel.load(phantom_model_path)
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(phantom_model_path)
    viewer.add_surface(data, **kwargs)
    widget = StimulusWidget(viewer)
    assert widget.sample.choices == ("—", *sample_stimuli())
    widget.sample.value = "coffee"
    pixels = np.asarray(Image.open(sample_stimuli()["coffee"]))
    np.testing.assert_array_equal(viewer.layers["stimulus"].data, pixels)
    assert widget.file_name == "coffee.png"
    widget.rois.value = ["V1"]
    widget._on_predict(block=True)
    response, _ = widget.last
    want, _ = predict_array(model, pixels, widget.backbone(model), ["V1"])
    np.testing.assert_allclose(response, want, rtol=1e-5, atol=1e-6)
    assert response.shape == (model.n_vertices,) and np.std(response) > 0


def test_backbone_that_does_not_fit_the_model_is_refused(phantom_model_path):
    from napari_factortopy.app.predict import model_backbone
    from napari_factortopy.data.backbones import BackboneError

    model = FittedModel.load(phantom_model_path)
    model.config = {**model.config, "widths": [w + 1 for w in model.config["widths"]]}
    try:
        model_backbone(model)
    except BackboneError as exc:
        assert "widths" in str(exc) and "efficientnet_lite0" in str(exc)
    else:
        raise AssertionError("a width mismatch must be refused")
    model.backbone = {}
    try:
        model_backbone(model)
    except BackboneError as exc:
        assert "does not record its backbone" in str(exc)
    else:
        raise AssertionError("a model without a backbone record must be refused")


def test_missing_weights_become_a_notification(
    make_napari_viewer, phantom_model_path, tmp_path, monkeypatch
):
    from PIL import Image

    from napari_factortopy.data import backbones

    def no_weights(name, **kwargs):
        raise backbones.WeightsNotFoundError(f"{name} weights not found: fetch them with X")

    monkeypatch.setattr(backbones, "load_backbone", no_weights)
    shown = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_warning", lambda message: shown.append(message)
    )
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(phantom_model_path)
    viewer.add_surface(data, **kwargs)
    widget = StimulusWidget(viewer)
    png = tmp_path / "any.png"
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(png)
    widget.file.value = png
    widget._on_predict(block=True)
    assert len(shown) == 1 and "fetch them with X" in shown[0]
    assert "fetch them with X" in widget.status.value
    assert not hasattr(widget, "last")


def test_prediction_runs_in_a_worker_thread(make_napari_viewer, phantom_model_path, qtbot):
    """The Predict button does not block the viewer; the result equals the blocking one."""
    viewer = make_napari_viewer(ndisplay=3)
    ((data, kwargs, _),) = model_layers(phantom_model_path)
    viewer.add_surface(data, **kwargs)
    widget = StimulusWidget(viewer)
    widget.index.value = 3
    widget._on_predict(block=True)
    want = widget.last[0].copy()
    object.__delattr__(widget, "last")  # (a magicgui Container treats `del` as remove)
    worker = widget._on_predict()
    assert worker is not None and widget.status.value == "predicting…"
    qtbot.waitUntil(lambda: hasattr(widget, "last"), timeout=60_000)
    np.testing.assert_array_equal(widget.last[0], want)
