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


def test_sample_opens_in_3d_and_builds_in_a_worker(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    """#9.8: the first open returns at once (placeholder + progress), the model opens in 3-D."""
    import time

    from napari_factortopy._napari._layers import META_KEY

    monkeypatch.setenv("FACTORTOPY_CACHE", str(tmp_path))
    monkeypatch.setattr(
        _sample_data, "SAMPLE_PHANTOM", PhantomConfig(n_vertices=200, n_images=64, image_size=64)
    )
    monkeypatch.setattr(
        _sample_data, "SAMPLE_TRAIN", TrainConfig(steps_per_epoch=4, max_epochs=2, log_every=1)
    )
    viewer = make_napari_viewer()
    assert viewer.dims.ndisplay == 2
    t0 = time.perf_counter()
    (placeholder,) = viewer.open_sample("napari-factortopy", "phantom")
    returned_after = time.perf_counter() - t0
    path = tmp_path / "sample" / "phantom-model.ftopy"
    assert not path.exists()  # returned before the model was built: the UI is not blocked
    assert returned_after < 5.0, returned_after
    assert viewer.dims.ndisplay == 3
    assert placeholder.name == _sample_data.PLACEHOLDER
    history = placeholder.metadata["progress"]
    worker = placeholder.metadata["worker"]
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.waitUntil(lambda: any(META_KEY in ly.metadata for ly in viewer.layers), timeout=30_000)
    assert _sample_data.PLACEHOLDER not in viewer.layers
    assert viewer.dims.ndisplay == 3 and path.is_file()
    steps = [h["step"] for h in history if h["kind"] == "step"]
    assert steps == list(range(1, 9))  # every step record reached the progress bar
    assert history[-1]["kind"] == "saved"
