"""Sample data: the phantom subject with a FactorTopy model trained on the fly.

The first call builds a small phantom and trains a short model (about a minute on a
laptop CPU); both are kept in the user cache folder
(``platformdirs.user_cache_dir("napari-factortopy")``, or ``$FACTORTOPY_CACHE``), so
later calls open the saved ``.ftopy`` at once.

In the viewer the first build runs in a ``thread_worker`` (the UI stays live): the
sample returns a placeholder layer whose text and a napari progress bar follow the
build, and the model opens (in 3-D) when it is saved.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from napari_factortopy.core.config import TrainConfig
from napari_factortopy.data.phantom import PhantomConfig

__all__ = [
    "PLACEHOLDER",
    "SAMPLE_PHANTOM",
    "SAMPLE_TRAIN",
    "build_sample",
    "cache_dir",
    "phantom_model",
    "sample_model_path",
]

#: Size of the sample phantom.
SAMPLE_PHANTOM = PhantomConfig(n_vertices=1000, n_images=256, image_size=96)
#: Training recipe of the sample model: short, but long enough for its selectors to
#: choose (the demo's learning rate, the regulariser done by step 400 of 600). 200 steps
#: under the paper's 6000-step regulariser left every layer weight near uniform and a
#: test R² below 0; this one recovers the phantom's argmax layer on 38 % of vertices
#: (59 % within one layer), test R² 0.11, in about a minute on 2 cores.
SAMPLE_TRAIN = TrainConfig(
    steps_per_epoch=50, max_epochs=12, batch_size=16, lr=2e-3, reg_decay_steps=400, log_every=5
)
#: Name of the layer shown while the sample is built.
PLACEHOLDER = "phantom sample (building…)"


def cache_dir() -> Path:
    """Where the sample phantom and model are kept."""
    env = os.environ.get("FACTORTOPY_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-factortopy"))


def _model_file() -> Path:
    return cache_dir() / "sample" / "phantom-model.ftopy"


def build_sample(
    phantom_config: PhantomConfig | None = None, train: TrainConfig | None = None
) -> Iterator[dict]:
    """Build the phantom and train the sample model, yielding the job's progress records.

    Nothing is done (and nothing yielded) when the model file is already cached.
    """
    from napari_factortopy.app.jobs import TrainJob, training_job

    path = _model_file()
    if path.is_file():
        return
    job = TrainJob(
        out=path,
        phantom=path.parent / "phantom",
        phantom_config=phantom_config or SAMPLE_PHANTOM,
        train=train or SAMPLE_TRAIN,
        bottleneck=32,
        hidden=64,
        device="auto",
    )
    yield from training_job(job)


def sample_model_path(
    progress=None,
    phantom_config: PhantomConfig | None = None,
    train: TrainConfig | None = None,
) -> Path:
    """The sample model file, built and trained first when it is not cached.

    Parameters
    ----------
    progress : callable(dict), optional
        Receives the job's progress records.
    phantom_config : PhantomConfig, optional
    train : TrainConfig, optional
        Override :data:`SAMPLE_PHANTOM` / :data:`SAMPLE_TRAIN` (e.g. a quicker model).
    """
    for rec in build_sample(phantom_config, train):
        if progress is not None:
            progress(rec)
    return _model_file()


def _describe(rec: dict, total: int) -> str:
    kind = rec.get("kind")
    if kind == "phantom":
        return f"building the phantom: {rec.get('stage', '')}"
    if kind == "step":
        return f"training the sample model: step {rec['step']} of {total}"
    if kind == "validation":
        return f"training the sample model: epoch {rec['epoch']} validated"
    if kind == "saved":
        return "saved; opening"
    return "preparing…"


def _build_in_viewer(viewer) -> list[tuple]:
    """Start the build in a worker; return the placeholder layer's data."""
    import numpy as np
    from napari.utils import progress as napari_progress

    from ._workers import generator_worker

    history: list[dict] = []
    bar = napari_progress(total=1, desc="phantom sample")
    state = {"total": 1}

    def on_record(rec: dict) -> None:
        if rec.get("kind") == "start":
            state["total"] = int(rec["total_steps"])
            bar.total = state["total"]
        if rec.get("kind") == "step":
            bar.n = min(int(rec["step"]), state["total"])
            bar.refresh()
        text = _describe(rec, state["total"])
        bar.set_description(text)
        history.append({"kind": rec.get("kind"), "step": rec.get("step"), "text": text})
        if PLACEHOLDER in viewer.layers:
            viewer.layers[PLACEHOLDER].text.string = {"constant": text}

    def on_done() -> None:
        bar.close()
        if PLACEHOLDER in viewer.layers:
            viewer.layers.remove(PLACEHOLDER)
        if _model_file().is_file():
            viewer.open(str(_model_file()), plugin="napari-factortopy")

    def on_error(exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"the phantom sample could not be built: {exc}")

    worker = generator_worker(build_sample, SAMPLE_PHANTOM, SAMPLE_TRAIN)
    worker.yielded.connect(on_record)
    worker.errored.connect(on_error)
    worker.finished.connect(on_done)
    worker.start()
    text = "building the phantom sample model (about a minute the first time)…"
    kwargs = {
        "name": PLACEHOLDER,
        "text": {"string": {"constant": text}, "color": "white", "size": 14},
        "size": 0,
        "metadata": {"progress": history, "worker": worker},
    }
    return [(np.zeros((1, 3)), kwargs, "points")]


def phantom_model() -> list[tuple]:
    """npe2 sample data: layer data of the phantom's model, shown in 3-D.

    Cached: the model's layer at once. Not yet built: in a viewer, a placeholder layer
    while a worker builds it (the model opens when saved); without a viewer, built here.
    """
    from napari_factortopy._napari._layers import model_layers
    from napari_factortopy._napari._reader import _show_in_3d

    _show_in_3d()
    path = _model_file()
    if path.is_file():
        return model_layers(path)
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return model_layers(sample_model_path())
    return _build_in_viewer(viewer)
