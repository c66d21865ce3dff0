"""The workbench's feel at fsaverage7 size, as a user meets it (issue 22, item 6).

Run under a display as large as the screen it stands for::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python bench/bench_feel.py

A shown 1920×1200 viewer with **every panel docked** from the Plugins menu path, then a
37,984-vertex model on a synthetic mesh of 2 × 163,842 vertices (fsaverage7's size;
``bench_napari.synthetic_meshset``) opened through the plugin's reader. Each action
goes through the control a user touches (the map drop-down, the view buttons, the
mesh drop-down, a press on the canvas through napari's mouse handling with another
layer selected) and is timed until the canvas has drawn the result and Qt has no
work left. Printed, in milliseconds (median of ``--repeats``), with the issue's
targets:

- open → first frame of the map and the panels filled (≤ 2000);
- map switch (≤ 150), view switch and mesh switch (≤ 300);
- click → inspector: the press until the inspector's text, bars and picture are shown
  (≤ 200); the first click comes ``--pause`` s (1) after a view change, as a hand would;
- the first ``clusters`` map: until it is drawn, and the **longest freeze** of the
  event loop meanwhile (≤ 200: the clusters must be computed off the UI thread);
- for every row, the longest single stretch the event loop was blocked ("freeze");
- after the map switches, the canvas redrawn with nothing changed: the renderer's own
  frame, the floor under every switch (on a software renderer most of the 150 ms).

The same script runs on an older checkout (``--before`` commit numbers in
BENCHMARKS.md were made by running this file from ``PYTHONPATH`` set to a worktree of
that commit): it uses only the reader, the manifest's panels and their controls.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _bench_napari():
    """bench_napari.py's synthetic mesh and model (one definition of both)."""
    spec = importlib.util.spec_from_file_location("bench_napari", HERE / "bench_napari.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Loop:
    """Runs Qt's event loop in short rounds and remembers the longest one (a freeze)."""

    def __init__(self, app, canvas) -> None:
        from qtpy.QtCore import QEvent

        self.app = app
        self._deferred = QEvent.Type.DeferredDelete
        self.frames = 0
        canvas.events.draw.connect(self._drew)

    def _drew(self, _event=None) -> None:
        self.frames += 1

    def _round(self) -> None:
        """One turn of the event loop as ``app.exec()`` runs it: ``processEvents`` alone
        leaves ``deleteLater`` undone, and napari's activity spinner (started by the
        reader's progress bar, stopped when the bar is deleted) would then animate and
        repaint the window 30 times a second for the rest of the run."""
        self.app.processEvents()
        self.app.sendPostedEvents(None, self._deferred)

    def until(self, done, timeout: float = 120.0) -> list[float]:
        """Process events until ``done()`` and Qt is idle; each round's length (s)."""
        rounds, start = [], time.perf_counter()
        while True:
            t = time.perf_counter()
            self._round()
            rounds.append(time.perf_counter() - t)
            if done():
                t = time.perf_counter()
                self._round()  # what the result queued (repaints)
                rounds.append(time.perf_counter() - t)
                return rounds
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the viewer did not finish in time")
            time.sleep(0.001)

    def timed(self, action, done=None) -> tuple[float, float]:
        """(until drawn and idle, longest freeze) of ``action()``, in seconds.

        The action runs in the event-loop turn the user's input started, so it and the
        first round after it block the UI together.
        """
        f0 = self.frames
        t0 = time.perf_counter()
        action()
        blocked = time.perf_counter() - t0
        rounds = self.until(done or (lambda: self.frames > f0))
        total = time.perf_counter() - t0
        return total, max(blocked + rounds[0], max(rounds))


def _row(name: str, samples: list[tuple[float, float]], target: float) -> str:
    total = 1000 * statistics.median(s[0] for s in samples)
    freeze = 1000 * max(s[1] for s in samples)
    verdict = "met" if total <= target else "MISSED"
    return (
        f"{name:<34} {total:7.0f} ms (target ≤ {target:.0f}: {verdict}); "
        f"longest freeze {freeze:.0f} ms"
    )


def make_parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    """The options of this bench (``bench_culling.py`` takes them too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mesh-vertices", type=int, default=163842)
    parser.add_argument("--vertices", type=int, default=37984)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screen", default="1920x1200")
    parser.add_argument(
        "--model",
        help="a trained model file to open instead of the synthetic one; its meshes come "
        "from $SUBJECTS_DIR (the full-size rehearsal's subject folder)",
    )
    parser.add_argument(
        "--freesurfer",
        action="store_true",
        help="the synthetic model's meshes read from $SUBJECTS_DIR/fsaverage/surf through "
        "the plugin's reader (FreeSurfer files, as a user's fsaverage7; write them with "
        "`bench/build_algonauts_subject.py --out DIR --meshes-only`) instead of built in "
        "memory",
    )
    parser.add_argument("--screenshot", help="PNG of the window after opening")
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between the view change and a click"
    )
    return parser


def remove_bench_model(path: Path) -> None:
    """Remove the folder ``bench_napari.bench_model_path`` made for ``path`` (the model
    is in memory once opened; ``os._exit`` skips the exit handlers). A model the user
    named (``--model``) is never in such a folder and stays."""
    if path.parent.name.startswith("factortopy-bench-"):
        shutil.rmtree(path.parent, ignore_errors=True)


def open_workbench(args):
    """A shown viewer of the screen's size, every panel docked from the Plugins menu
    path, and the model opened through the reader.

    Returns
    -------
    viewer, loop, panels (display name → widget), the model's layer, the open's
    (until drawn and idle, longest freeze) in seconds, and the model file's path.
    """
    width, height = (int(v) for v in args.screen.split("x"))

    import napari_factortopy  # the Mesa/triton guard, and where the panels come from

    bn = _bench_napari()
    import napari
    import yaml
    from qtpy.QtWidgets import QApplication

    from napari_factortopy._napari import _layers
    from napari_factortopy._napari._layers import META_KEY

    root = Path(napari_factortopy.__file__).resolve().parents[1]
    print(f"package: {root}", file=sys.stderr)
    if args.model:
        path = Path(args.model)
    elif args.freesurfer:
        path = bn.bench_model(args.mesh_vertices, args.vertices).save(bn.bench_model_path())
    else:
        meshes = {
            k: bn.synthetic_meshset(args.mesh_vertices, "fsaverage", k)
            for k in ("inflated", "sphere")
        }
        _layers.load_meshset = lambda name, kind: meshes[kind]  # this machine's "fsaverage7"
        path = bn.bench_model(args.mesh_vertices, args.vertices).save(bn.bench_model_path())

    viewer = napari.Viewer(ndisplay=3, show=True)
    viewer.window.resize(width, height)
    app = QApplication.instance()
    loop = Loop(app, viewer.window._qt_viewer.canvas._scene_canvas)
    manifest = yaml.safe_load((root / "napari.yaml").read_text())
    panels = {}
    for w in manifest["contributions"]["widgets"]:
        _dock, panels[w["display_name"]] = viewer.window.add_plugin_dock_widget(
            "napari-factortopy", w["display_name"]
        )
        loop.until(lambda: True)
    brain = panels["Brain maps"]
    print(
        f"{'the model file' if args.model else f'{args.vertices:,} modelled vertices'} on "
        f"2 × {args.mesh_vertices:,}; window {width}x{height}, {len(panels)} panels docked"
    )

    layers = []
    opened = loop.timed(
        lambda: layers.extend(viewer.open(str(path), plugin="napari-factortopy")),
        done=lambda: loop.frames > 0 and brain.map_choice.value == "layer",
    )
    (layer,) = layers
    print(_row("open → map shown", [opened], 2000))
    if args.model:
        n = layer.metadata[META_KEY]["scene"].model.n_vertices
        mesh = len(layer.data[0])
        print(f"    {path.name}: {n:,} modelled vertices on a mesh of {mesh:,} vertices")
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
    return viewer, loop, panels, layer, opened, path


def main() -> None:
    args = make_parser().parse_args()
    viewer, loop, panels, layer, _opened, _path = open_workbench(args)
    brain = panels["Brain maps"]
    from vispy.app.canvas import MouseEvent

    from napari_factortopy._napari._layers import META_KEY

    # the user selects another layer; clicks still reach the brain
    other = viewer.add_points(np.zeros((1, 3)), name="a selected points layer", size=1)
    viewer.layers.selection.active = other
    loop.until(lambda: True)

    rows = []
    for name in ("space", "scale", "score", "layer"):
        samples = []
        for _ in range(args.repeats):
            brain.map_choice.value = "score" if name == "layer" else "layer"
            loop.until(lambda: True)
            samples.append(loop.timed(lambda n=name: setattr(brain.map_choice, "value", n)))
        rows.append(samples)
        print(_row(f"map switch → {name}", samples, 150))

    # the renderer's floor: the same frame redrawn with nothing changed (after the
    # switches, so the open's warm-ups have finished and the brain is drawn culled)
    scene_canvas = viewer.window._qt_viewer.canvas._scene_canvas
    floor = []
    for _ in range(args.repeats):
        loop.until(lambda: True)
        floor.append(loop.timed(scene_canvas.update))
    print(_row("redraw, nothing changed (floor)", floor, 150))

    views = [b for b in getattr(brain, "view_buttons", ())]
    texts = [b.text for b in views]
    samples = []
    for i in range(args.repeats):
        button = views[texts.index("ventral" if i % 2 == 0 else "lateral")]
        samples.append(loop.timed(button.native.click))
    print(_row("view switch lateral ↔ ventral", samples, 300))
    brain.mesh_choice.value = "sphere"  # the first use of a mesh kind fills caches
    loop.until(lambda: True)
    samples = []
    for i in range(args.repeats):
        kind = "inflated" if i % 2 == 0 else "sphere"
        samples.append(loop.timed(lambda k=kind: setattr(brain.mesh_choice, "value", k)))
    print(_row("mesh switch inflated ↔ sphere", samples, 300))
    if brain.mesh_choice.value != "inflated":
        brain.mesh_choice.value = "inflated"
    views[texts.index("lateral")].native.click()
    loop.until(lambda: True)

    # a user's hand reaches the brain a moment after the view changed
    pause = time.perf_counter() + args.pause
    loop.until(lambda: time.perf_counter() > pause)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    canvas = viewer.window._qt_viewer.canvas
    on_brain = np.argwhere(shot[..., :3].astype(int).sum(-1) > 60)
    rng = np.random.default_rng(0)
    picks = on_brain[rng.choice(len(on_brain), args.repeats + 1, replace=False)]
    inspector = brain.inspector
    samples = []
    for k, (row, col) in enumerate(picks):
        before = inspector.last_pick
        press = MouseEvent("mouse_press", pos=np.array([col, row], float), button=1, modifiers=())
        result = loop.timed(
            lambda p=press: canvas._on_mouse_press(p),
            done=lambda b=before: inspector.last_pick is not b,
        )
        if k:  # the first click after a view change builds the pick structure
            samples.append(result)
        else:
            print(_row("first click → inspector", [result], 200))
    print(_row("click → inspector", samples, 200))
    print(f"    (last: {inspector.info.value.splitlines()[0]})")

    clusters = loop.timed(
        lambda: setattr(brain.map_choice, "value", "clusters"),
        done=lambda: layer.metadata[META_KEY]["map"] == "clusters",
    )
    print(_row("first clusters map shown", [clusters], 10_000))
    print(f"    the UI's longest freeze meanwhile: {1000 * clusters[1]:.0f} ms (target ≤ 200)")
    viewer.close()


if __name__ == "__main__":
    main()
