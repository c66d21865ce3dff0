"""Sample data: trained once into the cache folder, then reopened without training."""

from __future__ import annotations

import numpy as np

from napari_factortopy._napari import _sample_data
from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.data.phantom import PhantomConfig


def test_sample_is_trained_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORTOPY_CACHE", str(tmp_path))
    monkeypatch.setattr(
        _sample_data, "SAMPLE_PHANTOM", PhantomConfig(n_vertices=200, n_images=64, image_size=64)
    )
    monkeypatch.setattr(
        _sample_data, "SAMPLE_TRAIN", TrainConfig(steps_per_epoch=3, max_epochs=1, log_every=1)
    )
    kinds = []
    path = _sample_data.sample_model_path(progress=lambda r: kinds.append(r["kind"]))
    assert path.parent.parent == tmp_path and kinds[-1] == "saved" and "phantom" in kinds
    stamp = path.stat().st_mtime_ns
    ((_data, kwargs, kind),) = _sample_data.phantom_model()
    assert kind == "surface" and path.stat().st_mtime_ns == stamp  # no retraining
    model = FittedModel.load(path)
    assert model.n_vertices == 200
    assert np.all(np.isfinite(kwargs["vertex_colors"]))
