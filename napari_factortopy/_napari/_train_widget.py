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
asks for a "step" record every step on the CPU (every :data:`GPU_LOG_EVERY` steps on
an accelerator, where a record's loss read-out costs a device sync): the progress bar
moves with every record and Pause / Stop act within one record's time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui import widgets

from napari_factortopy._napari._common import StatusText, fit_window
from napari_factortopy.app.jobs import PausableClock, TrainJob, training_job
from napari_factortopy.core.config import TrainConfig, recipe_settings

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget"]

_DEFAULT_OUT = str(Path.home() / "factortopy" / "model.ftopy")
#: What each control does (its tooltip).
TIPS = {
    "source": "train on a phantom subject or on a feature cache with responses",
    "phantom": "phantom subject folder (built first when empty)",
    "cache": "feature cache (zarr) made by 'factortopy extract'",
    "responses": "responses .npy, shape (images, vertices), in the cache's image order",
    "subject": "subject .npz: vertex_ids (V,), n_lh, optionally roi (V,)",
    "mesh": "mesh the subject's vertex ids refer to",
    "layers": "comma-separated backbone layers; empty = all",
    "lr": "AdamW learning rate (paper: 1e-3)",
    "weight_decay": "AdamW weight decay (paper: 1e-2)",
    "batch_size": "images per step (paper: 8)",
    "steps_per_epoch": "steps between validations (paper: 1000)",
    "recipe": "paper: the settings as given (the paper's by default); auto (needs a time "
    "budget): the run measures its speed and chooses batch size, learning rate, steps per "
    "epoch and T to fit the budget, keeping any of them you set; its choices appear in the "
    "controls and under 'auto recipe'",
    "reg_weight": "λ: weight of the selector regulariser (paper: 0.1). Early in training it "
    "keeps each vertex's layer weights spread out (entropy) and its scale away from 0 and 1, "
    "so the softmax does not collapse onto one layer before the readout has learnt; "
    "0 = no regulariser",
    "reg_decay_steps": "T: steps over which λ falls linearly to 0 (paper: 6000); after T the "
    "selectors are free to sharpen",
    "clip_norm": "gradient-norm clipping (paper: 0.5)",
    "top_k": "best checkpoints kept for the soup (paper: 10)",
    "soup": "greedy soup of the top-k checkpoints on the validation split (off: the best one)",
    "amp": "bf16 mixed precision on CUDA (off: fp32; no effect on the CPU)",
    "calibrate": "after training, choose the layer softmax's sharpness on the validation "
    "split and refit the readout on the training split (ours): the layer map's confidence "
    "then says what the validation data support, where a short run leaves it too flat; "
    "the argmax layer, space and scale maps are unchanged. auto: on with the auto recipe, "
    "off with paper",
    "seed": "seed of the initialisation, the batches and the image split",
    "max_epochs": "most epochs (training stops earlier on patience)",
    "patience": "epochs without a better validation score before stopping",
    "bottleneck": "readout dimension D (paper: 128)",
    "max_minutes": "wall-clock budget of the run; 0 = none",
    "device": "where to train; auto = CUDA, then MPS, then CPU",
    "out": "the .ftopy model file to write (opened when saved)",
    "start_button": "start training in the background",
    "pause_button": "pause / resume (acts at the next step)",
    "stop_button": "stop training now (acts at the next step), then validate, soup and "
    "save the best model; press again (Discard) to abandon the run unsaved",
    "progress": "how far the run is: with a time budget, the share of the budget used "
    "(or of the schedule, if that ends first); without, the steps done of max epochs × "
    "steps per epoch",
}
#: Tooltip of the settings the auto recipe chooses while it is on (until they are set).
AUTO_TIP = (
    "chosen by the run (auto recipe): it measures its speed and fits this to the budget; "
    "set it to keep your value"
)
#: Tooltip of a setting the user set while the auto recipe is on.
GIVEN_TIP = "given: the auto recipe keeps your value and chooses the others around it"
#: TrainConfig fields the auto recipe resolves (app.cli_train.AUTO_RESOLVED) → control.
AUTO_CONTROLS = {
    "batch_size": "batch_size",
    "lr": "lr",
    "steps_per_epoch": "steps_per_epoch",
    "reg_decay_steps": "reg_decay_steps",
}
#: The calibration control's choices → ``TrainConfig.calibrate``.
CALIBRATE_CHOICES = {"auto": None, "on": True, "off": False}
#: Steps between progress records on an accelerator (1 on the CPU).
GPU_LOG_EVERY = 10
#: Units of the progress bar in a budget run (it follows the clock, not the steps).
BUDGET_TICKS = 1000
#: The status from Stop until the model opens (the run's phase is added in brackets).
STOPPING = "stopping: validating, then saving the best model…"


def _log_every(device: str) -> int:
    """Steps between "step" records for a device name (``"auto"`` is resolved)."""
    if device == "cpu":
        return 1
    try:
        from napari_factortopy.core.runtime import resolve_device

        return 1 if resolve_device(device).type == "cpu" else GPU_LOG_EVERY
    except (RuntimeError, ValueError, ImportError):
        return 1


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
        d = TrainConfig()  # METHOD §3 defaults, as `factortopy train` has them
        self.recipe = widgets.ComboBox(
            label="recipe", choices=["paper", "auto"], value="paper", enabled=False
        )
        self.lr = widgets.FloatSpinBox(
            label="learning rate", value=d.lr, step=1e-5, min=1e-7, max=0.999
        )
        self.weight_decay = widgets.FloatSpinBox(
            label="weight decay", value=d.weight_decay, step=1e-4, min=0, max=10
        )
        self.batch_size = widgets.SpinBox(label="batch size", value=d.batch_size, min=1, max=4096)
        self.steps_per_epoch = widgets.SpinBox(
            label="steps / epoch", value=d.steps_per_epoch, min=1, max=10**6
        )
        self.max_epochs = widgets.SpinBox(label="max epochs", value=d.max_epochs, min=1, max=10**6)
        self.patience = widgets.SpinBox(label="patience", value=d.patience, min=1, max=10**6)
        self.reg_weight = widgets.FloatSpinBox(
            label="regulariser λ", value=d.reg_weight, step=0.01, min=0, max=100
        )
        self.reg_decay_steps = widgets.SpinBox(
            label="regulariser decay T", value=d.reg_decay_steps, min=1, max=10**8
        )
        self.clip_norm = widgets.FloatSpinBox(
            label="gradient clipping", value=d.clip_norm, step=0.1, min=1e-6, max=1e6
        )
        self.top_k = widgets.SpinBox(label="top-k checkpoints", value=d.top_k, min=1, max=1000)
        self.soup = widgets.CheckBox(text="greedy soup", value=d.soup)
        self.amp = widgets.CheckBox(text="mixed precision (bf16 on CUDA)", value=d.amp)
        self.calibrate = widgets.ComboBox(
            label="calibration", choices=list(CALIBRATE_CHOICES), value="auto"
        )
        self.seed = widgets.SpinBox(label="seed", value=d.seed, min=0, max=2**31 - 1)
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
        self.status = StatusText(label="status", value="idle")
        self.recipe_info = StatusText(label="auto recipe", value="", visible=False)
        self.result = StatusText(label="result", value="", visible=False)
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
                self.max_minutes,
                self.recipe,
                self.lr,
                self.weight_decay,
                self.batch_size,
                self.steps_per_epoch,
                self.max_epochs,
                self.patience,
                self.reg_weight,
                self.reg_decay_steps,
                self.clip_norm,
                self.top_k,
                self.soup,
                self.amp,
                self.calibrate,
                self.seed,
                self.bottleneck,
                self.device,
                self.out,
                buttons,
                self.progress,
                self.status,
                self.recipe_info,
                self.result,
            ]
        )
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
        fit_window(viewer)  # docked: scrolls, tabbed with the other panels

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
        for field, name in AUTO_CONTROLS.items():
            tip = (GIVEN_TIP if field in self.given else AUTO_TIP) if auto else ""
            getattr(self, name).tooltip = TIPS[name] + (f" — {tip}" if tip else "")
        self.recipe.tooltip = TIPS["recipe"] + (
            "" if self.recipe.enabled else " — set a time budget to choose auto"
        )

    def _auto(self) -> bool:
        return self.recipe.value == "auto" and float(self.max_minutes.value) > 0

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` the controls describe — the one ``factortopy train``
        builds from the same choices (``log_every`` aside: the panel's suits its device)."""
        minutes = float(self.max_minutes.value)
        auto = self._auto()
        values = {
            "lr": float(self.lr.value),
            "batch_size": int(self.batch_size.value),
            "steps_per_epoch": int(self.steps_per_epoch.value),
            "reg_decay_steps": int(self.reg_decay_steps.value),
        }
        # as `factortopy train`: the paper recipe uses every value; auto the given ones
        given = [k for k in AUTO_CONTROLS if k in self.given]
        return TrainConfig(
            **{k: v for k, v in values.items() if not auto or k in given},
            given=tuple(given),
            weight_decay=float(self.weight_decay.value),
            clip_norm=float(self.clip_norm.value),
            max_epochs=int(self.max_epochs.value),
            patience=int(self.patience.value),
            top_k=int(self.top_k.value),
            reg_weight=float(self.reg_weight.value),
            soup=bool(self.soup.value),
            seed=int(self.seed.value),
            max_seconds=60.0 * minutes if minutes > 0 else None,
            amp=bool(self.amp.value),
            recipe="auto" if auto else "paper",
            calibrate=CALIBRATE_CHOICES[self.calibrate.value],
            log_every=_log_every(self.device.value),
        )

    def job(self) -> TrainJob:
        """The :class:`TrainJob` the controls describe."""
        train = self.train_config()
        layers = tuple(s.strip() for s in self.layers.value.split(",") if s.strip()) or None
        common = {
            "out": str(self.out.value),
            "train": train,
            "layers": layers,
            "bottleneck": int(self.bottleneck.value),
            "device": self.device.value,
            "seed": int(self.seed.value),
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
        if self._budget is None:
            if step is not None:
                self.progress.value = min(step, self.progress.max)
            return
        done = (step or 0) / self._total_steps
        if elapsed is not None and elapsed == elapsed:
            done = max(done, elapsed / self._budget)
        self.progress.value = max(self.progress.value, round(BUDGET_TICKS * min(done, 1.0)))

    def _on_record(self, rec: dict) -> None:
        kind = rec["kind"]
        if kind == "phantom":
            self._say(f"building the phantom: {rec.get('stage', '')}")
        elif kind == "start":
            self._show_preview(rec["preview"])
            self.progress.value = 0
            self.progress.max = BUDGET_TICKS if self._budget else self._total_steps
            self._say("training")
        elif kind == "step":
            self._show_progress(rec["step"], rec.get("elapsed"))
            if (self.worker is None or not self.worker.is_paused) and not self._stopping():
                eta = rec.get("eta")
                left = f" · {_clock(eta)} left" if eta is not None and eta == eta else ""
                self.status.value = f"step {rec['step']} · loss {rec['loss']:.4f}{left}"
        elif kind == "validating":
            self._say(f"validating: {rec['done']} of {rec['total']} images")
        elif kind == "calibrating":
            self._say(f"calibrating the layer sharpness: {rec['stage']}…")
        elif kind == "calibrated":
            from napari_factortopy.core.calibration import calibration_line

            self._say(f"calibration: {calibration_line(rec)}")
        elif kind == "souping":
            self._say(f"soup: checkpoint {rec['tried']} of {rec['total']} tried")
        elif kind == "validation":
            self._show_progress(rec.get("step"), rec.get("elapsed"))
            self._say(
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
        text = recipe_settings(config)
        if "step_seconds" in info:
            text += f" ({info['step_seconds'] * 1e3:.0f} ms/step"
            text += f", ~{info['planned_steps']} steps)" if "planned_steps" in info else ")"
        self.recipe_info.value, self.recipe_info.visible = text, True
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


def _clock(seconds: float) -> str:
    """Seconds as ``m:ss`` (or ``h:mm:ss``)."""
    m, sec = divmod(round(float(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
