"""The train panel: fit FactorTopy without leaving the viewer.

Runs :func:`~napari_factortopy.app.jobs.training_job` in a napari
``thread_worker``: a progress bar, the layer map on the cortex redrawn at every
validation, pause and stop, errors as notifications, and the saved ``.ftopy`` opened
at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui import widgets

from napari_factortopy.app.jobs import TrainJob, training_job
from napari_factortopy.core.config import TrainConfig

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget"]

_DEFAULT_OUT = str(Path.home() / "factortopy" / "model.ftopy")


class TrainWidget(widgets.Container):
    """Data, hyper-parameters (paper defaults), device; train / pause / stop.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker = None
        self.preview_layer = None
        self.saved_path: str | None = None
        self.source = widgets.ComboBox(
            label="data", choices=["phantom", "feature cache"], value="phantom"
        )
        self.phantom = widgets.FileEdit(
            label="phantom folder", mode="d", value=str(Path.home() / "factortopy" / "phantom")
        )
        self.cache = widgets.FileEdit(label="feature cache", mode="d", visible=False)
        self.responses = widgets.FileEdit(label="responses (.npy)", filter="*.npy", visible=False)
        self.subject = widgets.FileEdit(label="subject (.npz)", filter="*.npz", visible=False)
        self.mesh = widgets.ComboBox(
            label="mesh", visible=False, choices=["fsaverage5", "fsaverage6", "fsaverage"]
        )
        self.layers = widgets.LineEdit(
            label="layers", value="", tooltip="comma-separated backbone layers; empty = all"
        )
        self.lr = widgets.FloatSpinBox(label="learning rate", value=1e-3, step=1e-5, min=0, max=1)
        self.weight_decay = widgets.FloatSpinBox(
            label="weight decay", value=1e-2, step=1e-4, min=0, max=10
        )
        self.batch_size = widgets.SpinBox(label="batch size", value=8, min=1, max=4096)
        self.steps_per_epoch = widgets.SpinBox(label="steps / epoch", value=1000, min=1, max=10**6)
        self.max_epochs = widgets.SpinBox(label="max epochs", value=1000, min=1, max=10**6)
        self.patience = widgets.SpinBox(label="patience", value=20, min=1, max=10**6)
        self.bottleneck = widgets.SpinBox(label="bottleneck D", value=128, min=1, max=4096)
        self.max_minutes = widgets.FloatSpinBox(
            label="time budget (min, 0 = none)", value=0.0, min=0, max=10**6
        )
        self.device = widgets.ComboBox(
            label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto"
        )
        self.out = widgets.FileEdit(
            label="save as", mode="w", filter="*.ftopy", value=_DEFAULT_OUT
        )
        self.start_button = widgets.PushButton(text="Train")
        self.pause_button = widgets.PushButton(text="Pause", enabled=False)
        self.stop_button = widgets.PushButton(text="Stop", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = widgets.Label(label="status", value="idle")
        buttons = widgets.Container(
            layout="horizontal",
            labels=False,
            widgets=[self.start_button, self.pause_button, self.stop_button],
        )
        self.extend(
            [
                self.source,
                self.phantom,
                self.cache,
                self.responses,
                self.subject,
                self.mesh,
                self.layers,
                self.lr,
                self.weight_decay,
                self.batch_size,
                self.steps_per_epoch,
                self.max_epochs,
                self.patience,
                self.bottleneck,
                self.max_minutes,
                self.device,
                self.out,
                buttons,
                self.progress,
                self.status,
            ]
        )
        self.source.changed.connect(self._on_source)
        self.start_button.changed.connect(self._on_start)
        self.pause_button.changed.connect(self._on_pause)
        self.stop_button.changed.connect(self._on_stop)

    # ------------------------------------------------------------------ slots
    def _on_source(self, value: str | None = None) -> None:
        phantom = (value or self.source.value) == "phantom"
        self.phantom.visible = phantom
        for w in (self.cache, self.responses, self.subject, self.mesh):
            w.visible = not phantom

    def job(self) -> TrainJob:
        """The :class:`TrainJob` the controls describe."""
        minutes = float(self.max_minutes.value)
        train = TrainConfig(
            lr=float(self.lr.value),
            weight_decay=float(self.weight_decay.value),
            batch_size=int(self.batch_size.value),
            steps_per_epoch=int(self.steps_per_epoch.value),
            max_epochs=int(self.max_epochs.value),
            patience=int(self.patience.value),
            max_seconds=60.0 * minutes if minutes > 0 else None,
        )
        layers = tuple(s.strip() for s in self.layers.value.split(",") if s.strip()) or None
        common = {
            "out": str(self.out.value),
            "train": train,
            "layers": layers,
            "bottleneck": int(self.bottleneck.value),
            "device": self.device.value,
        }
        if self.source.value == "phantom":
            return TrainJob(phantom=str(self.phantom.value), **common)
        return TrainJob(
            cache=str(self.cache.value),
            responses=str(self.responses.value),
            subject=str(self.subject.value),
            mesh=self.mesh.value,
            **common,
        )

    def _on_start(self, _=None, job: TrainJob | None = None, start: bool = True):
        """Start training in a worker thread; returns the worker.

        With ``start=False`` the worker is returned unstarted (connect, then call
        ``worker.start()``), as tests do to see every record.
        """
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return self.worker
        job = job or self.job()
        worker = thread_worker(training_job, start_thread=False, ignore_errors=True)(job)
        worker.yielded.connect(self._on_record)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._busy(True)
        self.status.value = "starting…"
        if start:
            worker.start()
        return worker

    def _on_pause(self, _=None) -> None:
        if self.worker is None:
            return
        self.worker.toggle_pause()
        paused = self.pause_button.text == "Pause"
        self.pause_button.text = "Resume" if paused else "Pause"
        self.status.value = "paused" if paused else "training"

    def _on_stop(self, _=None) -> None:
        if self.worker is not None:
            self.status.value = "stopping…"
            self.worker.quit()

    def _on_record(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "phantom":
            self.status.value = f"building the phantom: {rec.get('stage', '')}"
        elif kind == "start":
            self._show_preview(rec["preview"])
            self.progress.max = max(int(rec["total_steps"]), 1)
            self.status.value = "training"
        elif kind == "step":
            self.progress.value = min(rec["step"], self.progress.max)
            self.status.value = f"step {rec['step']} · loss {rec['loss']:.4f}"
        elif kind == "validation":
            self.status.value = (
                f"epoch {rec['epoch']} · val R² {rec['val_score']:.4f} "
                f"(best {rec['best_score']:.4f})"
            )
            if "selectors" in rec:
                self._update_preview(rec["selectors"])
        elif kind == "diverged":
            from napari.utils.notifications import show_warning

            show_warning(
                f"training diverged at step {rec['step']} (loss {rec['loss']}); "
                "keeping the last good checkpoint"
            )
        elif kind == "saved":
            self.saved_path = rec["path"]
            self.status.value = f"saved {rec['path']}"

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {exc}"
        show_error(f"training failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._busy(False)
        self.pause_button.text = "Pause"
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.viewer.layers.remove(self.preview_layer)
        self.preview_layer = None
        if self.saved_path:
            self.viewer.open(self.saved_path, plugin="napari-factortopy")
        elif not self.status.value.startswith("failed"):
            self.status.value = "stopped"

    # ---------------------------------------------------------------- helpers
    def _busy(self, busy: bool) -> None:
        self.start_button.enabled = not busy
        self.pause_button.enabled = busy
        self.stop_button.enabled = busy

    def _show_preview(self, model) -> None:
        from napari_factortopy._napari._layers import load_scene, surface_kwargs

        self.saved_path = None
        self._scene = load_scene(model)
        verts, faces = self._scene.layer_data()
        kwargs = surface_kwargs(self._scene, "training (live)")
        self.preview_layer = self.viewer.add_surface((verts, faces), **kwargs)
        self.viewer.dims.ndisplay = 3

    def _update_preview(self, selectors: dict) -> None:
        from napari_factortopy._napari._brain_widget import apply_scene

        if self.preview_layer is None:
            return
        m = self._scene.model
        m.space, m.layer, m.scale = selectors["space"], selectors["layer"], selectors["scale"]
        apply_scene(self.preview_layer, self._scene)
