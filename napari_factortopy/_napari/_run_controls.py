"""The Train panel's run controls: Train, Pause and Stop in one row, the progress bar and
the status lines, and what each button and line shows as a run starts, pauses, stops
and ends.

What the status says of each record is decided in
:mod:`napari_factortopy.app.train_progress`; this module holds the widgets.
"""

from __future__ import annotations

from magicgui import widgets

from napari_factortopy._napari._common import StatusText
from napari_factortopy.app.train_form import TIPS
from napari_factortopy.app.train_progress import STOPPING

__all__ = ["RunControls", "orphan_run"]


class RunControls:
    """Train / Pause / Stop (``buttons``: one row), the progress bar, the status, the
    auto recipe's line and the result line."""

    #: The attributes holding one control each (the panel keeps them under these names).
    NAMES = (
        "start_button",
        "pause_button",
        "stop_button",
        "progress",
        "status",
        "recipe_info",
        "result",
    )

    def __init__(self) -> None:
        self.start_button = widgets.PushButton(text="Train")
        self.pause_button = widgets.PushButton(text="Pause", enabled=False)
        self.stop_button = widgets.PushButton(text="Stop", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = StatusText(label="status", value="idle")
        self.recipe_info = StatusText(label="auto recipe", value="", visible=False)
        self.result = StatusText(label="result", value="", visible=False)
        self.buttons = widgets.Container(
            layout="horizontal",
            labels=False,
            widgets=[self.start_button, self.pause_button, self.stop_button],
        )

    def busy(self, busy: bool) -> None:
        """Train is enabled while no run is; Pause and Stop while one is."""
        self.start_button.enabled = not busy
        self.pause_button.enabled = busy
        self.stop_button.enabled = busy

    def started(self) -> None:
        """A run starts: the buttons busy, "starting…", the last run's lines hidden."""
        self.busy(True)
        self.status.value = "starting…"
        self.result.value, self.result.visible = "", False
        self.recipe_info.value, self.recipe_info.visible = "", False

    def paused(self, pausing: bool) -> None:
        """Pause pressed (``pausing``) or Resume: the button offers the other one."""
        self.pause_button.text = "Resume" if pausing else "Pause"
        self.status.value = "pausing…" if pausing else "training"

    def stopping(self) -> None:
        """Stop pressed once: Pause is off, and Stop becomes Discard."""
        self.pause_button.enabled = False
        self.status.value = STOPPING
        self.stop_button.text = "Discard"
        self.stop_button.tooltip = "abandon the run now; nothing is saved"

    def finished(self) -> None:
        """The run ended: the buttons as before it."""
        self.busy(False)
        self.pause_button.text = "Pause"
        self.stop_button.text = "Stop"
        self.stop_button.tooltip = TIPS["stop_button"]


def orphan_run(worker, run, viewer, preview, slots, *_) -> None:
    """The Train panel was closed while its run went on (Qt's ``destroyed``): nothing may
    touch the panel's widgets any more. The run finishes as Stop would (validated,
    scored, saved), the live map goes, the saved model opens and a notification says so.

    Parameters
    ----------
    worker : napari's thread worker of the run
    run : TrainRun
    viewer : napari.viewer.Viewer
    preview : the panel's LivePreview (a layer of the viewer's, no widget)
    slots : list of (signal, slot)
        The panel's connections to the worker, cut here.
    """
    from napari.utils.notifications import show_info

    for signal, slot in slots:
        try:
            signal.disconnect(slot)
        except (TypeError, RuntimeError):  # already gone
            pass
    saved: list[str] = []
    worker.yielded.connect(
        lambda rec: saved.append(rec["path"]) if rec["kind"] == "saved" else None
    )

    def finished() -> None:
        preview.remove()
        if saved:
            viewer.open(saved[-1], plugin="napari-factortopy")
            show_info(f"training stopped when its panel was closed; saved {saved[-1]}")

    worker.finished.connect(finished)
    run.stop()
    if worker.is_paused:  # a paused run cannot reach its next check
        run.clock.resume()
        worker.resume()
