"""What one canvas frame of two fsaverage7-sized hemispheres costs, and what of it
depends on faces or on pixels (the probes behind "The far side of a closed brain is not
drawn" in BENCHMARKS.md).

Both hemispheres' ``?h.inflated`` from ``$SUBJECTS_DIR/fsaverage/surf`` (write them with
``bench/build_algonauts_subject.py --out DIR --meshes-only``) as two plain napari
Surface layers with random opaque vertex colours, no panels; each frame is a redraw
asked of both mesh visuals, timed until the canvas has drawn. The arms alternate in
one viewer::

    SUBJECTS_DIR=FS7/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_frame.py --window 1920x1200
    SUBJECTS_DIR=FS7/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_frame.py --window 640x480

Arms: ``every face`` (as napari draws), ``culled`` (the faces turned away from the
camera skipped, OpenGL's front faces for this mesh and camera; the picture is compared
with every face's), ``empty`` (both layers hidden: the clear and the window's
composition alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", default="1920x1200")
    parser.add_argument("--frames", type=int, default=6, help="frames per arm and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import napari_factortopy  # noqa: F401  (the Mesa/triton guard, before napari)

    width, height = (int(v) for v in args.window.split("x"))
    import napari
    import nibabel.freesurfer as fs
    from qtpy.QtWidgets import QApplication

    surf = Path(os.environ["SUBJECTS_DIR"]) / "fsaverage" / "surf"
    viewer = napari.Viewer(ndisplay=3, show=True)
    viewer.window.resize(width, height)
    app = QApplication.instance()
    rng = np.random.default_rng(0)
    layers = []
    for hemi, offset in (("lh", -50.0), ("rh", 50.0)):
        vertices, faces = fs.read_geometry(str(surf / f"{hemi}.inflated"))
        vertices[:, 0] += offset
        colours = rng.random((len(vertices), 4)).astype(np.float32)
        colours[:, 3] = 1.0
        layers.append(viewer.add_surface((vertices, faces), vertex_colors=colours))
    canvas = viewer.window._qt_viewer.canvas
    frames = [0]
    canvas._scene_canvas.events.draw.connect(lambda _e: frames.__setitem__(0, frames[0] + 1))
    nodes = [canvas.layer_to_visual[layer].node for layer in layers]

    def settle(seconds: float = 0.3) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()

    def frame() -> float:
        before = frames[0]
        t0 = time.perf_counter()
        for node in nodes:
            node.update()
        canvas._scene_canvas.update()
        while frames[0] == before:
            app.processEvents()
        return time.perf_counter() - t0

    def arm(name: str) -> None:
        for layer, node in zip(layers, nodes, strict=True):
            layer.visible = name != "empty"
            node._vshare.gl_state["cull_face"] = "front" if name == "culled" else False
        settle()

    settle(1.0)
    arms = ("every face", "culled", "empty")
    times = {a: [] for a in arms}
    shots = {}
    for _ in range(args.rounds):
        for a in arms:
            arm(a)
            frame()
            times[a] += [frame() for _ in range(args.frames)]
            shots[a] = viewer.screenshot(canvas_only=True, flash=False)
    size = canvas._scene_canvas.size
    n_faces = len(nodes[0].mesh_data.get_faces())
    print(f"window {args.window}, canvas {size[0]}x{size[1]}, 2 × {n_faces:,} faces")
    for a in arms:
        print(f"{a:<12} {1000 * statistics.median(times[a]):6.0f} ms per frame (median)")
    differ = int((shots["culled"] != shots["every face"]).any(-1).sum())
    on = int((shots["every face"][..., :3].astype(int).sum(-1) > 60).sum())
    print(f"culled vs every face: {differ} pixels differ ({on:,} on the brain)")
    viewer.close()


if __name__ == "__main__":
    main()
