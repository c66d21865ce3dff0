"""Timings of the napari workbench on an fsaverage-sized mesh (issue 4's targets).

Run under a display (``xvfb-run -a .venv/bin/python bench/bench_napari.py``). A
synthetic mesh of 163,842 vertices per hemisphere stands in for fsaverage; the model
has ``--vertices`` modelled vertices (default 40,000, about NSD's nsdgeneral).

Prints, in milliseconds:

- drop → shown map: ``viewer.open(model.ftopy)`` until the first frame is drawn
  (target < 2000);
- map switch and mesh/view switch, until drawn (target < 200), split into the work
  before the draw (plugin + napari model) and the draw (vispy re-uploads the mesh
  unrolled per face, then one software-rendered frame under Xvfb), with the number of
  frames drawn per switch;
- click → inspected vertex (target < 100), first click (builds the KD-tree) apart;
- figure export (issue 9): a 4-view × 2-map, 3000-px figure of the model
  (``figure_image``, PNG written), drawn by the package's pyvista renderer (first
  export with the plotter's first render, then a warm one) and, in the same run, by
  the matplotlib rasteriser it replaced (``scene/render.py`` as of commit
  ``OLD_RENDER_COMMIT``, loaded from git history for this comparison only;
  ``--no-old-figure`` skips it);
- sample data, first open (``--sample-data``, run on its own): File → Open Sample →
  FactorTopy → Phantom subject with an empty sample cache (``$FACTORTOPY_CACHE`` set to
  a fresh folder): how long ``open_sample`` holds the UI, the longest stall of the
  event loop while the worker builds the phantom and trains (a 20 ms timer's largest
  gap), until the model layer is shown; then the second open (cached).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numpy as np

import napari_factortopy  # noqa: F401  (Mesa/triton guard)


def synthetic_meshset(n: int, name: str, kind: str):
    """Two hemispheres of ``n`` vertices: an ellipsoid triangulated by its convex hull."""
    from scipy.spatial import ConvexHull

    from napari_factortopy.scene.brain import MeshSet

    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    unit = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    faces = ConvexHull(unit).simplices.astype(np.int64)
    normal = np.cross(unit[faces[:, 1]] - unit[faces[:, 0]], unit[faces[:, 2]] - unit[faces[:, 0]])
    flip = (normal * unit[faces].mean(1)).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    scale = np.array([100.0, 100.0, 100.0]) if kind == "sphere" else np.array([35.0, 100.0, 70.0])
    verts = (unit * scale).astype(np.float32)
    curv = np.sin(5 * theta) * np.sin(4 * phi)
    return MeshSet(
        name,
        kind,
        {"lh": verts, "rh": verts},
        {"lh": faces, "rh": faces},
        {"lh": curv, "rh": curv},
    )


#: The last commit whose scene/render.py drew surfaces with matplotlib (painter's
#: algorithm); the bench loads that file from git to time the old path.
OLD_RENDER_COMMIT = "110ab67"


def old_matplotlib_surface_figure():
    """``surface_figure`` of the matplotlib renderer, from git history (bench only)."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "show", f"{OLD_RENDER_COMMIT}:napari_factortopy/scene/render.py"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    src = src.replace("from ..core.atomic import", "from napari_factortopy.core.atomic import")
    module = types.ModuleType("old_matplotlib_render")
    exec(compile(src, "old_matplotlib_render.py", "exec"), module.__dict__)

    def surface_figure(*args, lighting=None, **kwargs):
        return module.surface_figure(*args, shading=lighting == "shaded", **kwargs)

    return surface_figure


@contextlib.contextmanager
def renderer_swapped(surface_figure):
    """Let ``figure_image`` draw through another ``surface_figure`` for a while."""
    from napari_factortopy.scene import render

    saved = render.surface_figure
    render.surface_figure = surface_figure
    try:
        yield
    finally:
        render.surface_figure = saved


def bench_figures(scene, out_dir: Path, old: bool) -> None:
    """Time a 4-view × 2-map 3000-px figure export: pyvista (cold, warm) and matplotlib."""
    from napari_factortopy.scene.figure import figure_image
    from napari_factortopy.scene.render import renderer

    maps, views = ["layer", "score"], ["lateral", "medial", "ventral", "posterior"]
    n_panels = len(maps) * len(views)
    n_mesh = sum(len(v) for v in scene.meshes().vertices.values())

    def export(tag: str) -> tuple[float, np.ndarray]:
        t = time.perf_counter()
        image = figure_image(scene, maps, views, 3000, out_dir / f"figure-{tag}.png")
        return time.perf_counter() - t, image

    kind = scene.kind
    scene.kind = "inflated"  # whatever the switches above left shown
    cold = renderer().plotter is None
    first_tag = "first (with the plotter's first render)" if cold else "first"
    t_first, image = export("pyvista-first")
    vtk_s = renderer().seconds
    t_warm, _ = export("pyvista")
    vtk_s = renderer().seconds - vtk_s
    print(
        f"figure export, {len(views)} views × {len(maps)} maps, {image.shape[1]}×"
        f"{image.shape[0]} px, {n_mesh} mesh vertices: pyvista "
        f"{first_tag} "
        f"{t_first:.1f} s, warm {t_warm:.1f} s ({t_warm / n_panels:.2f} s per panel, of "
        f"which pyvista/VTK {vtk_s / n_panels:.2f} s; the rest: layout, legends, PNG)"
    )
    if old:
        with renderer_swapped(old_matplotlib_surface_figure()):
            t_old, _ = export("matplotlib")
        print(
            f"figure export, same figure, old matplotlib rasteriser ({OLD_RENDER_COMMIT}): "
            f"{t_old:.1f} s ({t_old / n_panels:.2f} s per panel); pyvista warm is "
            f"{t_old / t_warm:.1f}× faster, first {t_old / t_first:.1f}×"
        )
    scene.kind = kind
    print(f"figures written to {out_dir}")


def bench_model_path() -> Path:
    """Where a bench writes its synthetic model: a fresh temporary folder, removed when
    the process ends (a folder per run used to stay behind: 159 runs had left 3.8 GB).
    A child process that leaves with ``os._exit`` removes it itself
    (``bench_feel.remove_bench_model``)."""
    folder = tempfile.mkdtemp(prefix="factortopy-bench-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder) / "bench.ftopy"


def bench_model(n_mesh: int, n_vertices: int, n_layers: int = 12, d: int = 128):
    from napari_factortopy.core.fitted_model import FittedModel

    rng = np.random.default_rng(0)
    half = n_vertices // 2
    ids = np.r_[
        np.sort(rng.choice(n_mesh, half, replace=False)),
        np.sort(rng.choice(n_mesh, n_vertices - half, replace=False)),
    ]
    logits = rng.normal(size=(n_vertices, n_layers)) * 3
    layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    import torch

    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy

    # a complete state dict (the model file checks every tensor), random readout
    torch.manual_seed(0)
    cfg = FactorTopyConfig((8,) * n_layers, (8, 8), bottleneck=d, hidden=8, n_freqs=4)
    module = FactorTopy(rng.normal(size=(n_vertices, 3)), cfg)
    state = {k: t.detach().float().numpy() for k, t in module.state_dict().items()}
    state.pop("encoding", None)
    state["beta"] = rng.normal(size=(n_vertices, d)).astype(np.float32)
    return FittedModel(
        config=module.config.to_dict(),
        state=state,
        space=rng.uniform(-1, 1, (n_vertices, 2)),
        layer=layer,
        scale=rng.uniform(0, 1, n_vertices),
        vertex_ids=ids,
        n_lh=half,
        mesh="fsaverage",
        roi=rng.integers(0, 5, n_vertices),
        roi_names=["V1", "V2", "V3", "hV4"],
        scores={"r2_test": rng.uniform(0, 0.5, n_vertices).astype(np.float32)},
    )


def bench_sample_data() -> None:
    """The sample's first open (built in a worker) and its second (cached)."""
    import os

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    os.environ["FACTORTOPY_CACHE"] = tempfile.mkdtemp(prefix="factortopy-sample-")
    from napari_factortopy._napari._sample_data import PLACEHOLDER, _model_file

    viewer = napari.Viewer(ndisplay=2, show=True)
    app = QApplication.instance()
    app.processEvents()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    viewer.open_sample("napari-factortopy", "phantom")
    held = time.perf_counter() - t0
    names = [ly.name for ly in viewer.layers]
    print(f"sample data, first open: open_sample returned after {1000 * held:.0f} ms "
          f"(layers {names}, ndisplay {viewer.dims.ndisplay})")  # fmt: skip
    deadline = time.perf_counter() + 900
    while not any(ly.name.startswith("phantom-model") for ly in viewer.layers):
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() > deadline:
            raise SystemExit("the sample model was not shown within 15 min")
    shown = time.perf_counter() - t0
    timer.stop()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([np.nan])
    print(
        f"sample data, first open: model shown after {shown:.1f} s (built and trained in a "
        f"worker; placeholder gone: {PLACEHOLDER not in viewer.layers}); event loop "
        f"stalls: longest {1000 * np.nanmax(gaps):.0f} ms, 99th percentile "
        f"{1000 * np.nanpercentile(gaps, 99):.0f} ms ({len(ticks)} ticks of 20 ms)"
    )
    viewer.layers.clear()
    app.processEvents()
    t0 = time.perf_counter()
    viewer.open_sample("napari-factortopy", "phantom")
    app.processEvents()
    print(f"sample data, second open (cached {_model_file().name}): "
          f"{1000 * (time.perf_counter() - t0):.0f} ms to the shown model")  # fmt: skip
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-vertices", type=int, default=163842)
    parser.add_argument("--vertices", type=int, default=40000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-old-figure", action="store_true", help="skip the old matplotlib figure export"
    )
    parser.add_argument("--figure-only", action="store_true", help="only the figure export rows")
    parser.add_argument(
        "--sample-data", action="store_true", help="only the sample data's first open"
    )
    args = parser.parse_args()
    if args.sample_data:
        bench_sample_data()
        return

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_factortopy._napari import _layers
    from napari_factortopy._napari._brain_widget import BrainWidget

    t0 = time.perf_counter()
    meshes = {
        k: synthetic_meshset(args.mesh_vertices, "fsaverage", k) for k in ("inflated", "sphere")
    }
    print(
        f"synthetic mesh: 2 × {args.mesh_vertices} vertices, "
        f"{2 * len(meshes['inflated'].faces['lh'])} faces "
        f"(built in {time.perf_counter() - t0:.1f} s, not timed below)"
    )
    _layers.load_meshset = lambda name, kind: meshes[kind]  # this machine's "fsaverage"
    path = bench_model(args.mesh_vertices, args.vertices).save(bench_model_path())
    folder = path.parent  # the figures go beside it, removed with it

    viewer = napari.Viewer(ndisplay=3, show=True)
    app = QApplication.instance()

    canvas = viewer.window._qt_viewer.canvas._scene_canvas

    def drawn() -> None:
        app.processEvents()  # napari's updates and the canvas repaint (one frame)

    drawn()
    t = time.perf_counter()
    viewer.open(str(path), plugin="napari-factortopy")
    drawn()
    drop = time.perf_counter() - t
    print(f"drop → shown layer map: {1000 * drop:.0f} ms (target < 2000)")

    widget = BrainWidget(viewer)
    drawn()
    if args.figure_only:
        bench_figures(widget.scene, folder, old=not args.no_old_figure)
        viewer.close()
        return

    frames = [0]
    canvas.events.draw.connect(lambda _e: frames.__setitem__(0, frames[0] + 1))

    def timed(action) -> str:
        """Median of: whole switch, the work before the draw, the draw; frames drawn."""
        total, work, n_frames = [], [], []
        for _ in range(args.repeats):
            frames[0] = 0
            t = time.perf_counter()
            action()
            t_work = time.perf_counter()
            drawn()
            total.append(time.perf_counter() - t)
            work.append(t_work - t)
            n_frames.append(frames[0])
        w, a = 1000 * statistics.median(work), 1000 * statistics.median(total)
        return (
            f"{a:.0f} ms (work {w:.0f} ms + draw {a - w:.0f} ms, "
            f"{max(n_frames)} frame{'s' if max(n_frames) != 1 else ''})"
        )

    t = time.perf_counter()
    for _ in range(args.repeats):
        canvas.render()
    frame = 1000 * (time.perf_counter() - t) / args.repeats
    print(f"one frame of this canvas (OpenGL draw alone): {frame:.0f} ms")
    for name in ("space", "scale", "score", "layer"):
        print(f"map switch → {name}: {timed(lambda n=name: widget._on_map(n))} (target < 200)")
    widget.mesh_choice.value = "sphere"  # first use of a mesh kind fills the caches
    widget.mesh_choice.value = "inflated"
    drawn()

    def toggle_mesh() -> None:
        other = "sphere" if widget.mesh_choice.value == "inflated" else "inflated"
        widget.mesh_choice.value = other

    def toggle_view() -> None:
        widget._on_view("ventral" if widget.scene.view == "lateral" else "lateral")

    print(f"mesh switch inflated ↔ sphere: {timed(toggle_mesh)} (target < 200)")
    widget._on_view("ventral")
    widget._on_view("lateral")
    print(f"view preset lateral ↔ ventral: {timed(toggle_view)}")

    scene = widget.scene
    verts, _ = scene.geometry()
    rng = np.random.default_rng(1)
    targets = verts[rng.choice(len(verts), 20, replace=False)]
    direction = np.array([-1.0, 0.0, 0.0])
    scene._cache.pop(("tree", scene.kind, scene.view), None)
    t = time.perf_counter()
    widget._on_click(np.r_[1000.0, targets[0, 1:]], direction)
    first = time.perf_counter() - t
    clicks = []
    for target in targets[1:]:
        t = time.perf_counter()
        widget._on_click(np.r_[1000.0, target[1:]], direction)
        clicks.append(time.perf_counter() - t)
    print(
        f"click → inspected vertex: median {1000 * statistics.median(clicks):.1f} ms, "
        f"max {1000 * max(clicks):.1f} ms (target < 100); first click after a mesh/view "
        f"change (builds the KD-tree): {1000 * first:.0f} ms"
    )
    bench_figures(widget.scene, folder, old=not args.no_old_figure)
    viewer.close()


if __name__ == "__main__":
    main()
