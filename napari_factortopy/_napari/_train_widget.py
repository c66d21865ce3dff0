"""The train panel: fit FactorTopy without leaving the viewer.

Runs :func:`~napari_factortopy.app.jobs.live_training_job` in a napari
``thread_worker``: a progress bar, the layer map on the cortex redrawn at every
validation, pause and stop, errors as notifications, and the saved ``.ftopy`` opened
at the end. Stop finishes with the best model so far (see
:mod:`~napari_factortopy.app.train_progress`); pressed again (Discard) it abandons the
run unsaved. Pause and Stop act at the next "step" record: one per step on the CPU (see
:func:`~napari_factortopy.app.train_form.log_every`).

The form's logic (tooltips, the controls' values → TrainConfig and TrainJob, the auto
recipe's memory) is in :mod:`napari_factortopy.app.train_form`, a run's state and the
records' reading (status lines, progress) in :mod:`napari_factortopy.app.train_progress`;
the run's buttons and lines are a :class:`~._run_controls.RunControls`, the live map a
:class:`~._live_preview.LivePreview`; this module lays out and wires.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from magicgui import widgets

from napari_factortopy._napari._common import fit_window
from napari_factortopy._napari._live_preview import LivePreview
from napari_factortopy._napari._run_controls import RunControls, orphan_run
from napari_factortopy.app.jobs import TrainJob, live_training_job
from napari_factortopy.app.train_form import (
    AUTO_CONTROLS,
    TIPS,
    VALUE_CONTROLS,
    AutoRecipeMemory,
    budget_recipe,
    control_specs,
    is_auto,
    recipe_line,
    recipe_tooltips,
    source_rows,
    train_config,
    train_job,
)
from napari_factortopy.app.train_progress import TrainRun, diverged_warning, result_line
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
#: The panel's rows, top to bottom: the settings, then Train, Pause and Stop in one row
#: (``_buttons``), the progress bar and the status lines.
LAYOUT = (*VALUE_CONTROLS, "_buttons", "progress", "status", "recipe_info", "result")


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
        self._orphan = None  # what a close of the panel mid-run calls (orphan_run)
        self._run: TrainRun | None = None  # the running job's stop, clock and progress
        self._memory = AutoRecipeMemory()  # settings given, values the auto run wrote over
        self.preview = LivePreview(viewer)  # the live map on the cortex
        self.saved_path: str | None = None
        self.resolved: TrainConfig | None = None
        for name, (kind, kwargs) in control_specs().items():
            setattr(self, name, _KINDS[kind](**kwargs))
        self.controls = RunControls()  # Train, Pause, Stop; progress and status lines
        for name in RunControls.NAMES:  # the panel's attributes, as TIPS and LAYOUT name them
            setattr(self, name, getattr(self.controls, name))
        self._buttons = self.controls.buttons
        self.extend([getattr(self, name) for name in LAYOUT])
        self._connect()
        fit_window(viewer)  # docked: scrolls, tabbed with the other panels

    @property
    def given(self) -> set[str]:
        """Settings of AUTO_CONTROLS the user set (kept by the auto recipe)."""
        return self._memory.given

    @property
    def preview_layer(self):
        """The live map's layer while a run trains (None otherwise)."""
        return self.preview.layer

    @property
    def _scene(self):
        """The live map's scene (the last run's)."""
        return self.preview.scene

    # ---------------------------------------------------------------- controls
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
        for name, shown in source_rows(value or self.source.value).items():
            getattr(self, name).visible = shown

    def _on_budget(self, value: float | None = None) -> None:
        """A budget enables the auto recipe (and turns it on, as `factortopy train`
        does with ``--max-seconds``); no budget means the paper recipe."""
        minutes = float(self.max_minutes.value if value is None else value)
        self.recipe.enabled, recipe = budget_recipe(minutes, self.recipe.enabled)
        if recipe is not None:
            self.recipe.value = recipe
        self._on_recipe()

    def _on_given(self, field: str) -> None:
        """A setting the user changed is given: the auto recipe keeps it."""
        if self._memory.give(field):
            self._on_recipe()

    def _on_recipe(self, _=None) -> None:
        """The auto recipe chooses batch, lr, steps per epoch and T unless they were set:
        the tooltips say which. Back on the paper recipe, the values an auto run wrote
        into the controls are replaced by those they had before (the paper's, or the
        user's), except the ones set since."""
        auto = is_auto(self.recipe.value, self.max_minutes.value)
        if not auto and self.worker is None:
            self._set_quietly(self._memory.restore())
        for name, tip in recipe_tooltips(auto, self.given, self.recipe.enabled).items():
            getattr(self, name).tooltip = tip

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
        from ._workers import generator_worker

        if self.worker is not None:
            return self.worker
        job = job or self.job()
        run = self._run = TrainRun(job.train)
        worker = generator_worker(
            live_training_job, job, run.stop_event.is_set, run.clock, ignore_errors=True
        )
        slots = [
            (worker.yielded, self._on_record),
            (worker.errored, self._on_error),
            (worker.finished, self._on_finished),
            (worker.paused, self._on_paused),
            (worker.resumed, self._on_resumed),
        ]
        for signal, slot in slots:
            signal.connect(slot)
        # closing the panel mid-run stops the run cleanly and opens what it saved
        self._orphan = partial(orphan_run, worker, run, self.viewer, self.preview, slots)
        self.native.destroyed.connect(self._orphan)
        self.worker = worker
        self.controls.started()
        if start:
            worker.start()
        return worker

    def _on_pause(self, _=None) -> None:
        """Pause at the next step (the budget's clock stops while paused), or resume."""
        if self.worker is None:
            return
        pausing = self.pause_button.text == "Pause"
        if not pausing and self._run is not None:
            self._run.clock.resume()
        self.worker.toggle_pause()
        self.controls.paused(pausing)

    def _on_paused(self) -> None:
        if self._run is not None and self.worker is not None and self.worker.is_paused:
            self._run.clock.pause()
        self.status.value = "paused"

    def _on_resumed(self) -> None:
        if self._run is not None:
            self._run.clock.resume()
            if self._run.stopping:
                return
        self.status.value = "training"

    def _on_stop(self, _=None) -> None:
        """First press: finish with the best model so far; second press: discard."""
        if self.worker is None:
            return
        if self._run is not None and self._run.stop():
            if self.worker.is_paused:  # a paused run cannot reach its next check
                self._run.clock.resume()
                self.worker.resume()
                self.pause_button.text = "Pause"
            self.controls.stopping()
            return
        self.status.value = "discarding…"
        self.worker.quit()

    def _on_record(self, rec: dict) -> None:
        run, kind = self._run, rec["kind"]
        if kind in ("step", "validation"):
            self.progress.value = run.ticks(self.progress.value, self.progress.max, rec)
        if kind == "start":
            self.saved_path = None
            self.preview.show(rec["preview"])
            self.progress.value, self.progress.max = 0, run.bar_max
        paused = self.worker is not None and self.worker.is_paused
        if (line := run.status(rec, paused)) is not None:
            self.status.value = line
        if kind == "validation" and "selectors" in rec:
            self.preview.update(rec["selectors"])
        elif kind == "diverged":
            from napari.utils.notifications import show_warning

            show_warning(diverged_warning(rec))
        elif kind == "calibration_plan":  # the budget cannot hold it: said once, not only
            from napari.utils.notifications import show_info  # in a passing status line

            show_info(rec["text"])
        elif kind == "recipe":
            self._show_recipe(rec["config"], rec.get("info") or {})
        elif kind == "saved":
            self.saved_path = rec["path"]
            if (result := result_line(rec["model"])) is not None:
                self.result.value, self.result.visible = result, True

    def _show_recipe(self, config: TrainConfig, info: dict) -> None:
        """The auto recipe's resolved values, each marked given or chosen: in its line
        and in the controls (put back when the recipe is paper again)."""
        self.recipe_info.value = recipe_line(config, info)
        self.recipe_info.visible = True
        self.resolved = config
        current = {name: getattr(self, name).value for name in AUTO_CONTROLS.values()}
        self._set_quietly(self._memory.resolved(config, current))
        if (bar_max := self._run.resolved(config)) is not None:
            self.progress.max = bar_max

    def _set_quietly(self, values: dict[str, object]) -> None:
        """Write ``values`` (control name → value) into the controls without making them
        given; a value outside a control's range is left out (the recipe line says it)."""
        with self._memory.writes():
            for name, value in values.items():
                try:
                    getattr(self, name).value = value
                except ValueError:
                    pass

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {exc}"
        show_error(f"training failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._run = None
        self.native.destroyed.disconnect(self._orphan)
        self._orphan = None
        self.controls.finished()
        self.preview.remove()
        if self.saved_path:
            self.progress.value = self.progress.max  # a budget may end it before the plan
            self.viewer.open(self.saved_path, plugin="napari-factortopy")
        elif not self.status.value.startswith("failed"):
            self.status.value = "discarded: nothing saved"
