"""Work that takes seconds (channel clusters of 40,000 vertices, a k-means) run on a
worker thread, so the viewer never freezes, with a busy line in the panel meanwhile.

The computation itself is a plain function from ``core``/``scene``; this module only
wraps it in napari's ``create_worker`` and shows what is running.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

from magicgui import widgets

__all__ = [
    "OPEN_PATH_MODULES",
    "WARM_DELAY_MS",
    "DeferredWarmUp",
    "NamedJob",
    "busy_label",
    "clusters_in_background",
    "import_in_background",
    "run_in_background",
    "units_in_background",
    "use_units",
    "warm_in_background",
]


#: What the first model opened in a napari session imports that docking a panel has
#: not (found by listing ``sys.modules`` around an open): pandas (napari's layer
#: features table), nibabel (the FreeSurfer meshes), the plugin's reader and the checks
#: the map panel runs, ≈ 0.4 s on the UI thread during the open. Imported ahead on a
#: thread, the open took 0.3–0.4 s less (``bench/bench_open_warm.py``). pint's unit
#: registry, the other big one, is built ahead by :func:`units_in_background`.
OPEN_PATH_MODULES = (
    "pandas",
    "nibabel",
    "napari_factortopy._napari._reader",
    "napari_factortopy.core.ablations",
    "napari_factortopy.core.selector_check",
    "napari_factortopy.core.significance",
    "napari_factortopy.core.slope_range",
    "napari_factortopy.core.variance_split",
)


def import_in_background(
    names: tuple[str, ...] = OPEN_PATH_MODULES,
) -> threading.Thread | None:
    """Import the modules ``names`` not imported yet on a daemon thread; returns it
    (None when there is nothing to import).

    Python's per-module import locks make this safe: an import of the same module on
    the UI thread meanwhile waits for this one and never sees a half-run module. A
    module that fails to import here is left alone: the import that needs it raises
    its error where it belongs.
    """
    missing = [name for name in names if name not in sys.modules]
    if not missing:
        return None

    def run() -> None:
        for name in missing:
            try:
                importlib.import_module(name)
            except Exception:  # raised again where the module is needed
                continue

    thread = threading.Thread(target=run, name="factortopy-imports", daemon=True)
    thread.start()
    return thread


def _lazy_units() -> bool:
    """Whether pint's application registry is still its untouched lazy default (no unit
    made from it yet: a used lazy registry has turned into a ``UnitRegistry``)."""
    import pint

    return isinstance(pint.get_application_registry().get(), pint.LazyRegistry)


def use_units(registry) -> bool:
    """Make ``registry`` pint's application registry if the lazy default is untouched
    (UI thread). Returns whether it was installed; once any unit exists, the registry
    in use stays (units of two registries cannot be compared)."""
    import pint

    if not _lazy_units():
        return False
    pint.set_application_registry(registry)
    return True


def units_in_background(viewer=None):
    """Build pint's unit registry on a worker thread for napari's first layer.

    napari gives every layer units from pint's application registry, a lazy default
    that parses pint's definition files on first use: ≈ 0.3–0.5 s of the first model's
    open on the UI thread. Building that lazy object on another thread is a race (it
    swaps its class before it has finished), so a separate registry, configured as the
    default one (``on_redefinition="raise"``), is built on a worker and handed to the
    UI thread, which installs it (:func:`use_units`) only if nothing has used the lazy
    one meanwhile; otherwise it is dropped and nothing changes.

    Parameters
    ----------
    viewer : napari.Viewer, optional
        Its window remembers the worker, so the panels docked together start one.

    Returns
    -------
    napari.qt.threading.FunctionWorker or None
        The started worker, or None when the registry is already built or being built
        for this viewer.
    """
    if not _lazy_units():
        return None
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands panels a proxy
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is not None and getattr(window, "_factortopy_units", None) is not None:
        return None
    from napari.qt.threading import create_worker

    def build():
        import pint

        return pint.UnitRegistry(on_redefinition="raise")

    worker = create_worker(NamedJob(build, "factortopy: preparing units"), _start_thread=False)
    worker.returned.connect(use_units)
    if window is not None:
        window._factortopy_units = worker
    worker.start()
    return worker


class NamedJob:
    """``job()`` under a short name: what napari's activity dock shows for the worker.

    napari formats the function it runs into its task descriptions three times per
    worker ("… execution pending", "Executing …", "… completed"). A bound method of a
    scene or a ``partial`` over arrays formats the whole object: for a BrainScene at
    fsaverage7 that is ≈ 20 ms of array printing each time, on the UI thread, at every
    view or mesh switch. This callable prints as its name.
    """

    __slots__ = ("_job", "name")

    def __init__(self, job: Callable[[], Any], name: str) -> None:
        self._job, self.name = job, name

    def __call__(self) -> Any:
        return self._job()

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


def busy_label() -> widgets.Label:
    """A hidden, word-wrapped line for "computing …" (it must not widen the dock)."""
    label = widgets.Label(label="", value="", visible=False)
    label.native.setWordWrap(True)
    label.tooltip = "work running in the background; the viewer stays usable"
    return label


def run_in_background(
    compute: Callable[[], Any],
    done: Callable[[Any], None],
    busy: widgets.Label,
    what: str,
    finished: Callable[[], None] | None = None,
):
    """Run ``compute()`` on a worker thread; ``done(result)`` on the UI thread after.

    Parameters
    ----------
    compute : callable
        The work, without Qt (it runs on another thread).
    done : callable
        Receives compute's result, on the UI thread.
    busy : magicgui Label
        Shows "``what`` …" while the work runs, hidden again when it ends.
    what : str
        What runs, in the user's words ("computing the channel clusters").
    finished : callable, optional
        Called on the UI thread after ``done`` (or after an error).

    Returns
    -------
    napari.qt.threading.FunctionWorker
        The started worker (an error reaches the user as a warning naming ``what``).
    """
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_warning

    worker = create_worker(NamedJob(compute, what), _start_thread=False)
    busy.value = f"⏳ {what}…"
    busy.visible = True

    def _end() -> None:
        busy.visible = False
        busy.value = ""
        if finished is not None:
            finished()

    worker.returned.connect(done)
    worker.errored.connect(lambda exc: show_warning(f"{what} failed: {exc}"))
    worker.finished.connect(_end)
    worker.start()
    return worker


def warm_in_background(warm: Callable[[], None], what: str = "preparing clicks"):
    """Run a cache warm-up (a pick structure) on a worker thread, silently: nothing
    waits for it, and the work it saves is done on demand if it has not finished."""
    from napari.qt.threading import create_worker

    worker = create_worker(NamedJob(warm, f"factortopy: {what}"), _start_thread=False)
    worker.start()
    return worker


#: How long after the last view, mesh or model change the pick structure is built: the
#: new frame is drawn first, on cores the warm-up would share (measured: view switches
#: 240–325 → 200–240 ms on 2 cores), and a burst of switches builds only the last one.
WARM_DELAY_MS = 300


class DeferredWarmUp:
    """Runs the latest warm-up asked for on a worker thread, ``delay_ms`` after the last
    request (a single-shot Qt timer, restarted by each request; owned by ``parent``).

    A click that comes before the warm-up has run builds what it needs on demand.
    """

    def __init__(self, parent, delay_ms: int = WARM_DELAY_MS) -> None:
        from qtpy.QtCore import QTimer

        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(delay_ms))
        self._timer.timeout.connect(self._start)
        self._job: tuple[Callable[[], None], str] | None = None
        self.worker = None

    def request(self, warm: Callable[[], None], what: str = "preparing clicks") -> None:
        """Warm with ``warm()`` once no other request came for ``delay_ms``."""
        self._job = (warm, what)
        self._timer.start()

    def _start(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            self.worker = warm_in_background(*job)


def clusters_in_background(scene, busy: widgets.Label, done, finished):
    """The channel clusters of ``scene``'s model (20, as the paper) on a worker thread;
    ``done(scene, labels)`` on the UI thread. Returns the worker."""
    from napari_factortopy.scene.map_panel import cluster_labels

    return run_in_background(
        lambda m=scene.model: cluster_labels(m),
        lambda labels: done(scene, labels),
        busy,
        f"computing the channel clusters of {scene.model.n_vertices:,} vertices "
        "(the brain keeps its map until they are ready)",
        finished=finished,
    )
