"""Training from the widget on a tiny phantom: live map, saved model opened."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_factortopy._napari._layers import META_KEY
from napari_factortopy._napari._train_widget import TrainWidget
from napari_factortopy.app.jobs import TrainJob
from napari_factortopy.core import colours
from napari_factortopy.core.fitted_model import FittedModel

from .conftest import TINY_PHANTOM as TINY


def _job(widget, root, out):
    widget.phantom.value = str(root)
    widget.out.value = str(out)
    widget.steps_per_epoch.value = 4
    widget.max_epochs.value = 2
    widget.bottleneck.value = 8
    widget.device.value = "cpu"
    job = widget.job()
    return replace(job, phantom_config=TINY, hidden=8, train=replace(job.train, log_every=2))


def test_train_from_widget_opens_the_saved_model(
    make_napari_viewer, qtbot, tmp_path, phantom_root
):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    assert widget.lr.value == 1e-3 and widget.batch_size.value == 8  # the paper's defaults
    records = []
    job = _job(widget, phantom_root, tmp_path / "trained.ftopy")
    assert isinstance(job, TrainJob) and job.train.steps_per_epoch == 4
    worker = widget._on_start(job=job, start=False)
    worker.yielded.connect(records.append)
    live = []
    worker.yielded.connect(
        lambda r: (
            live.append(np.array(widget.preview_layer.vertex_colors))
            if r["kind"] == "validation"
            else None
        )
    )
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        worker.start()
    kinds = [r["kind"] for r in records]
    assert "start" in kinds and kinds.count("validation") == 2 and kinds[-1] == "saved"
    # the live map at the last validation shows that validation's selectors
    last = [r for r in records if r["kind"] == "validation"][-1]["selectors"]
    scene = widget._scene
    np.testing.assert_allclose(
        live[-1][scene.mesh_index()], colours.layer_rgba(last["layer"]), atol=1e-6
    )
    # saved, opened, preview removed
    saved = FittedModel.load(tmp_path / "trained.ftopy")
    assert saved.n_vertices == 200 and saved.extra["dataset"]["kind"] == "phantom"
    assert "r2_test" in saved.scores
    names = [ly.name for ly in viewer.layers]
    assert names == ["trained"], names
    assert viewer.layers["trained"].metadata[META_KEY]["path"].endswith("trained.ftopy")
    assert widget.worker is None and widget.start_button.enabled


def test_stop_and_bad_input_do_not_crash(make_napari_viewer, qtbot, tmp_path, phantom_root):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.source.value = "feature cache"
    assert not widget.cache.native.isHidden() and widget.phantom.native.isHidden()
    widget.cache.value = str(tmp_path / "missing.zarr")
    widget.responses.value = str(tmp_path / "missing.npy")
    widget.subject.value = str(tmp_path / "missing.npz")
    errors = []
    worker = widget._on_start(start=False)
    worker.errored.connect(errors.append)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        worker.start()
    assert errors and widget.status.value.startswith("failed")
    assert widget.worker is None


def test_stop_ends_training_without_saving(make_napari_viewer, qtbot, tmp_path, phantom_root):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    job = _job(widget, phantom_root, tmp_path / "stopped.ftopy")
    job = replace(job, train=replace(job.train, max_epochs=1000))
    worker = widget._on_start(job=job, start=False)
    seen = []

    def on_record(rec):
        seen.append(rec["kind"])
        if rec["kind"] == "step":
            widget._on_pause()
            assert widget.pause_button.text == "Resume"
            widget._on_pause()
            widget._on_stop()

    worker.yielded.connect(on_record)
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        worker.start()
    assert "step" in seen and "saved" not in seen
    assert not (tmp_path / "stopped.ftopy").exists()
    assert widget.status.value == "stopped" and len(viewer.layers) == 0


def test_progress_moves_every_step_and_pause_stop_act_within_a_second(
    make_napari_viewer, qtbot, tmp_path, phantom_root
):
    """#9.12: a step record per CPU step moves the bar; Pause and Stop act within 1 s."""
    import time

    viewer = make_napari_viewer()
    widget = dock_train(viewer)
    widget.phantom.value = str(phantom_root)
    widget.out.value = str(tmp_path / "long.ftopy")
    widget.steps_per_epoch.value, widget.max_epochs.value = 50, 1000
    widget.bottleneck.value, widget.device.value = 8, "cpu"
    job = widget.job()
    assert job.train.log_every == 1  # the panel asks for a record every step on the CPU
    job = replace(job, phantom_config=TINY, hidden=8)
    worker = widget._on_start(job=job, start=False)
    steps, bars, marks = [], [], {}

    def on_record(rec):
        if rec["kind"] != "step":
            return
        steps.append(rec["step"])
        bars.append(widget.progress.value)
        if len(steps) == 3 and "pause" not in marks:
            marks["pause"] = time.perf_counter()
            widget._on_pause()

    worker.yielded.connect(on_record)
    worker.paused.connect(lambda: marks.setdefault("paused", time.perf_counter()))
    with qtbot.waitSignal(worker.paused, timeout=60_000):
        worker.start()
    assert marks["paused"] - marks["pause"] < 1.0
    assert widget.status.value == "paused"
    n_paused = len(steps)
    qtbot.wait(300)
    assert len(steps) == n_paused  # no step while paused
    widget._on_pause()
    qtbot.waitUntil(lambda: len(steps) > n_paused + 5, timeout=60_000)
    assert steps == list(range(1, len(steps) + 1))
    assert bars[-1] == steps[-1]  # the bar follows every record
    worker.aborted.connect(lambda: marks.setdefault("aborted", time.perf_counter()))
    marks["stop"] = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        widget._on_stop()
    assert marks["aborted"] - marks["stop"] < 1.0  # training stopped within a second
    pause, stop = marks["paused"] - marks["pause"], marks["aborted"] - marks["stop"]
    print(f"pause {pause:.3f} s, stop {stop:.3f} s")
    assert widget.status.value == "stopped" and not (tmp_path / "long.ftopy").exists()


def dock_train(viewer):
    from ._drive import dock

    return dock(viewer, "Train")
