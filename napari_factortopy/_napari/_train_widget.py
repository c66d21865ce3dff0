"""The train panel: fit FactorTopy without leaving the viewer.

Runs :func:`~napari_factortopy.app.jobs.training_job` in a napari
``thread_worker``: a progress bar, the layer map on the cortex redrawn at every
validation, pause and stop, errors as notifications, and the saved ``.ftopy`` opened
at the end.

Stop ends training as a budget would: the current weights are validated, the best
checkpoints go into the soup, the result is scored on the test split and saved (its
summary and the map's banner say "stopped by the user"). Validation and soup report
every batch, so the panel shows them; meanwhile the button reads "Discard", which
abandons the run without saving anything.

The worker can only pause or stop where the training generator yields, so the panel
asks for a "step" record every step on the CPU (every
:data:`~napari_factortopy.app.train_form.GPU_LOG_EVERY` steps on an accelerator, where a
record's loss read-out costs a device sync): the progress bar moves with every record
and Pause / Stop act within one record's time.

The form's logic (tooltips, the controls' values → TrainConfig and TrainJob) is in
:mod:`napari_factortopy.app.train_form`, the records' reading (status lines, progress)
in :mod:`napari_factortopy.app.train_progress`; this module lays out and wires.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from magicgui import widgets

from napari_factortopy._napari._common import StatusText, fit_window
from napari_factortopy.app.jobs import PausableClock, TrainJob, training_job
from napari_factortopy.app.train_form import (
    AUTO_CONTROLS,
    TIPS,
    VALUE_CONTROLS,
    control_specs,
    is_auto,
    recipe_line,
    recipe_tooltips,
    train_config,
    train_job,
)
from napari_factortopy.app.train_progress import (
    BUDGET_TICKS,
    STOPPING,
    progress_ticks,
    status_line,
)
from napari_factortopy.core.config import TrainConfig

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget"]

#: The widget class of each kind of control in :func:`~.train_form.control_specs`.
_KINDS = {
    "combo": widgets.ComboBox,
    "file": widgets.FileEdit,
    "line": widgets.LineEdit,
    "float": widgets.FloatSpinBox,
    "int": widgets.SpinBox,
    "check": widgets.CheckBox,
}
#: The panel's rows, top to bottom (``_buttons``: Train, Pause and Stop in one row).
LAYOUT = (
    "source", "phantom", "cache", "responses", "subject", "mesh", "layers", "max_minutes",
    "recipe", "lr", "weight_decay", "batch_size", "steps_per_epoch", "max_epochs",
    "patience", "reg_weight", "reg_decay_steps", "clip_norm", "top_k", "soup", "amp",
    "calibrate", "seed", "bottleneck", "device", "out", "_buttons", "progress", "status",
    "recipe_info", "result",
)  # fmt: skip


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
        self._stop_event: threading.Event | None = None
        self._clock: PausableClock | None = None
        self._budget: float | None = None  # seconds of the running job's budget
        self._total_steps = 1  # its schedule: max epochs × steps per epoch
        #: the values the auto recipe overwrote (control name → value), put back
        #: when the recipe goes back to paper
        self._before_auto: dict[str, object] = {}
        self.preview_layer = None
        self.saved_path: str | None = None
        self.resolved: TrainConfig | None = None
        #: settings of AUTO_CONTROLS the user set (kept by the auto recipe)
        self.given: set[str] = set()
        self._showing = False  # the panel itself is writing the resolved values
        for name, (kind, kwargs) in control_specs().items():
            setattr(self, name, _KINDS[kind](**kwargs))
        self._buttons = self._run_controls()
        self.extend([getattr(self, name) for name in LAYOUT])
        self._connect()
        fit_window(viewer)  # docked: scrolls, tabbed with the other panels

    # ---------------------------------------------------------------- controls
    def _run_controls(self) -> widgets.Container:
        """Train / Pause / Stop (returned in one row), the progress bar and the status
        lines."""
        self.start_button = widgets.PushButton(text="Train")
        self.pause_button = widgets.PushButton(text="Pause", enabled=False)
        self.stop_button = widgets.PushButton(text="Stop", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = StatusText(label="status", value="idle")
        self.recipe_info = StatusText(label="auto recipe", value="", visible=False)
        self.result = StatusText(label="result", value="", visible=False)
        buttons = widgets.Container(
            layout="horizontal",
            labels=False,
            widgets=[self.start_button, self.pause_button, self.stop_button],
        )
        return buttons

    def _connect(self) -> None:
        """Tooltips, and each control's signal to its slot."""
        for name, tip in TIPS.items():
            getattr(self, name).tooltip = tip
        self.source.changed.connect(self._on_source)
        self.max_minutes.changed.connect(self._on_budget)
        self.recipe.changed.connect(self._on_recipe)
        for field, name in AUTO_CONTROLS.items():
            getattr(self, name).changed.connect(lambda _=None, f=field: self._on_given(f))
        self._on_recipe()
        self.start_button.changed.connect(self._on_start)
        self.pause_button.changed.connect(self._on_pause)
        self.stop_button.changed.connect(self._on_stop)

    # ------------------------------------------------------------------ slots
    def _on_source(self, value: str | None = None) -> None:
        phantom = (value or self.source.value) == "phantom"
        self.phantom.visible = phantom
        for w in (self.cache, self.responses, self.subject, self.mesh):
            w.visible = not phantom

    def _on_budget(self, value: float | None = None) -> None:
        """A budget enables the auto recipe (and turns it on, as `factortopy train`
        does with ``--max-seconds``); no budget means the paper recipe."""
        minutes = float(self.max_minutes.value if value is None else value)
        had = self.recipe.enabled
        self.recipe.enabled = minutes > 0
        if minutes > 0 and not had:
            self.recipe.value = "auto"
        elif minutes <= 0:
            self.recipe.value = "paper"
        self._on_recipe()

    def _on_given(self, field: str) -> None:
        """A setting the user changed is given: the auto recipe keeps it."""
        if not self._showing:
            self.given.add(field)
            self._on_recipe()

    def _on_recipe(self, _=None) -> None:
        """The auto recipe chooses batch, lr, steps per epoch and T unless they were set:
        the tooltips say which. Back on the paper recipe, the values an auto run wrote
        into the controls are replaced by those they had before (the paper's, or the
        user's), except the ones set since."""
        auto = self._auto()
        if not auto and self._before_auto and self.worker is None:
            self._showing = True
            try:
                for name, value in self._before_auto.items():
                    if name not in self.given:
                        getattr(self, name).value = value
            finally:
                self._showing = False
            self._before_auto = {}
        for name, tip in recipe_tooltips(auto, self.given, self.recipe.enabled).items():
            getattr(self, name).tooltip = tip

    def _auto(self) -> bool:
        return is_auto(self.recipe.value, self.max_minutes.value)

    def values(self) -> dict[str, object]:
        """Every setting control's value, by control name (what :mod:`.train_form`
        reads)."""
        return {name: getattr(self, name).value for name in VALUE_CONTROLS}

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` the controls describe — the one ``factortopy train``
        builds from the same choices (``log_every`` aside: the panel's suits its device)."""
        return train_config(self.values(), self.given)

    def job(self) -> TrainJob:
        """The :class:`TrainJob` the controls describe."""
        return train_job(self.values(), self.train_config())

    def _on_start(self, _=None, job: TrainJob | None = None, start: bool = True):
        """Start training in a worker thread; returns the worker.

        With ``start=False`` the worker is returned unstarted (connect, then call
        ``worker.start()``), as tests do to see every record.
        """
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return self.worker
        job = job or self.job()
        stop = threading.Event()
        self._stop_event = stop
        self._clock = PausableClock()
        self._budget = job.train.max_seconds
        self._total_steps = max(job.train.max_epochs * job.train.steps_per_epoch, 1)
        worker = thread_worker(_training, start_thread=False, ignore_errors=True)(
            job, stop.is_set, self._clock
        )
        worker.yielded.connect(self._on_record)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        worker.paused.connect(self._on_paused)
        worker.resumed.connect(self._on_resumed)
        self.worker = worker
        self._busy(True)
        self.status.value = "starting…"
        self.result.value, self.result.visible = "", False
        self.recipe_info.value, self.recipe_info.visible = "", False
        if start:
            worker.start()
        return worker

    def _on_pause(self, _=None) -> None:
        """Pause at the next step (the budget's clock stops while paused), or resume."""
        if self.worker is None:
            return
        pausing = self.pause_button.text == "Pause"
        if not pausing and self._clock is not None:
            self._clock.resume()
        self.worker.toggle_pause()
        self.pause_button.text = "Resume" if pausing else "Pause"
        self.status.value = "pausing…" if pausing else "training"

    def _on_paused(self) -> None:
        if self._clock is not None and self.worker is not None and self.worker.is_paused:
            self._clock.pause()
        self.status.value = "paused"

    def _on_resumed(self) -> None:
        if self._clock is not None:
            self._clock.resume()
        if not self._stopping():
            self.status.value = "training"

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _on_stop(self, _=None) -> None:
        """First press: finish with the best model so far; second press: discard."""
        if self.worker is None:
            return
        if self._stop_event is not None and not self._stop_event.is_set():
            self._stop_event.set()
            if self.worker.is_paused:  # a paused run cannot reach its next check
                if self._clock is not None:
                    self._clock.resume()
                self.worker.resume()
                self.pause_button.text = "Pause"
            self.pause_button.enabled = False
            self.status.value = STOPPING
            self.stop_button.text = "Discard"
            self.stop_button.tooltip = "abandon the run now; nothing is saved"
            return
        self.status.value = "discarding…"
        self.worker.quit()

    def _say(self, line: str) -> None:
        """A progress line in the status; after Stop, in brackets after "stopping…"
        (which stays until the model opens)."""
        self.status.value = f"{STOPPING} ({line})" if self._stopping() else line

    def _show_progress(self, step: int | None = None, elapsed: float | None = None) -> None:
        """Without a budget the bar counts the schedule's steps; with one it follows the
        clock (the budget's share used, or the schedule's if that is ahead)."""
        bar = self.progress
        bar.value = progress_ticks(
            bar.value, bar.max, step, elapsed, self._budget, self._total_steps
        )

    def _on_record(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind in ("step", "validation"):
            self._show_progress(rec.get("step"), rec.get("elapsed"))
        line = status_line(rec)
        if kind == "start":
            self._show_preview(rec["preview"])
            self.progress.value = 0
            self.progress.max = BUDGET_TICKS if self._budget else self._total_steps
            self._say("training")
        elif kind == "step":
            if (self.worker is None or not self.worker.is_paused) and not self._stopping():
                self.status.value = line
        elif line is not None:
            self._say(line)
        if kind == "validation" and "selectors" in rec:
            self._update_preview(rec["selectors"])
        elif kind == "diverged":
            from napari.utils.notifications import show_warning

            show_warning(
                f"training diverged at step {rec['step']} (loss {rec['loss']}); "
                "keeping the last good checkpoint"
            )
        elif kind == "recipe":
            self._show_recipe(rec["config"], rec.get("info") or {})
        elif kind == "saved":
            self.saved_path = rec["path"]
            self.status.value = f"saved {rec['path']}"
            conv = (rec["model"].summary or {}).get("convergence") or {}
            if conv.get("line"):
                self.result.value = str(conv["line"])
                self.result.visible = True

    def _show_recipe(self, config: TrainConfig, info: dict) -> None:
        """The auto recipe's resolved values, each marked given or chosen: in its line
        and in the controls."""
        self.recipe_info.value = recipe_line(config, info)
        self.recipe_info.visible = True
        self.resolved = config
        self._showing = True
        try:
            for field, name in AUTO_CONTROLS.items():
                control = getattr(self, name)
                if field not in self.given:  # put back when the recipe is paper again
                    self._before_auto.setdefault(name, control.value)
                try:
                    control.value = getattr(config, field)
                except ValueError:  # outside the control's range: the line says it
                    pass
        finally:
            self._showing = False
        self._total_steps = max(int(config.max_epochs * config.steps_per_epoch), 1)
        if self._budget is None:
            self.progress.max = self._total_steps

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {exc}"
        show_error(f"training failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._stop_event = None
        self._clock = None
        self._busy(False)
        self.pause_button.text = "Pause"
        self.stop_button.text = "Stop"
        self.stop_button.tooltip = TIPS["stop_button"]
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.viewer.layers.remove(self.preview_layer)
        self.preview_layer = None
        if self.saved_path:
            self.progress.value = self.progress.max  # a budget may end it before the plan
            self.viewer.open(self.saved_path, plugin="napari-factortopy")
        elif not self.status.value.startswith("failed"):
            self.status.value = "discarded: nothing saved"

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


def _training(job: TrainJob, should_stop=None, clock=None):
    """:func:`training_job`, after loading the live map's mesh in this (worker) thread.

    The first mesh load imports nilearn (seconds); done here, the viewer stays live
    and the "start" record finds the mesh cached.
    """
    from napari_factortopy.data.surfaces import SurfaceError
    from napari_factortopy.scene.brain import load_meshset

    try:
        load_meshset(job.mesh, "inflated")
    except (SurfaceError, OSError, ValueError):
        pass  # the preview says so when it is shown
    yield from training_job(job, should_stop, clock=clock)
