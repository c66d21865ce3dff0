"""Stimulus panel: browse stimuli, predicted response map, ROI top-channel images."""

from __future__ import annotations

import numpy as np

from napari_factortopy._napari._layers import model_layers
from napari_factortopy._napari._stimulus_widget import StimulusWidget, predict_image
from napari_factortopy.core import colours
from napari_factortopy.core.fitted import FittedModel
from napari_factortopy.data.phantom import phantom_images


def test_prediction_matches_core_predict(phantom_model_path):
    import torch

    from napari_factortopy.core.features import feature_source
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
    widget._on_predict()
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
    from napari_factortopy._napari._stimuli import dataset_info, stimulus_loader

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
    assert dataset_info(model) == {"kind": "cache", "root": str(phantom_root / "features.zarr")}
    assert stimulus_loader(model) is None
