"""What skipping a closed brain's far faces saves a switch, paired in one viewer.

The machine's speed drifts by tens of per cent between runs, more than the effect, so
the two arms alternate switch by switch in one process: the plugin's choice of faces
(``_culling.cull_side``) against every face drawn (the same function answering
False, as napari draws). Same setting as ``bench_feel.py`` (its options, e.g.
``--freesurfer``)::

    SUBJECTS_DIR=FS7/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_culling.py --freesurfer --repeats 8

Printed: the median and the longest freeze of each arm for map switches (the four
maps in turn), view switches (lateral ↔ ventral) and camera turns (4°, a drag's frame;
the 200-ms mark printed with it is the no-freeze target), and how many canvas pixels
the two arms' pictures differ by after the last switch.
"""

from __future__ import annotations

import time

import bench_feel as feel  # this folder, as the script's own, is on sys.path
import numpy as np


def main() -> None:
    args = feel.make_parser(__doc__.splitlines()[0]).parse_args()
    viewer, loop, panels, layer, _opened, _path = feel.open_workbench(args)
    brain = panels["Brain maps"]

    from napari_factortopy._napari import _culling
    from napari_factortopy._napari._layers import scene_for_layer
    from napari_factortopy._napari._mesh_update import mesh_visual

    other = viewer.add_points(np.zeros((1, 3)), name="a selected points layer", size=1)
    viewer.layers.selection.active = other
    scene = scene_for_layer(layer)
    # the orientation is measured on a worker after the open, as a user's pause allows
    loop.until(lambda: scene.orientation(measure=False) is not None)
    pause = time.perf_counter() + 1.0
    loop.until(lambda: time.perf_counter() > pause)
    brain.map_choice.value = "space"  # the first switch puts the check in place
    loop.until(lambda: True)
    node = mesh_visual(viewer, layer)
    rule = _culling.cull_side
    print(f"orientation {scene.orientation()}; faces skipped: {rule(layer, node)!r}")

    def arm(name: str) -> None:
        _culling.cull_side = rule if name == "culled" else (lambda *_: False)

    arms = ("every face", "culled")
    maps = {a: [] for a in arms}
    views = {a: [] for a in arms}
    turns = {a: [] for a in arms}
    buttons = {b.text: b for b in brain.view_buttons}
    shots = {}
    for i in range(args.repeats):
        for a in arms if i % 2 == 0 else arms[::-1]:
            arm(a)
            for name in ("space", "scale", "score", "layer"):
                brain.map_choice.value = "score" if name == "layer" else "layer"
                loop.until(lambda: True)
                maps[a].append(loop.timed(lambda n=name: setattr(brain.map_choice, "value", n)))
            for view in ("ventral", "lateral"):
                views[a].append(loop.timed(buttons[view].native.click))
            for step in (4.0, -4.0) * 2:  # a drag's frames: the camera turned a little
                angles = tuple(np.add(viewer.camera.angles, (0.0, step, 0.0)))
                turns[a].append(loop.timed(lambda t=angles: setattr(viewer.camera, "angles", t)))
            shots[a] = viewer.screenshot(canvas_only=True, flash=False)
    _culling.cull_side = rule
    for a in arms:
        print(feel._row(f"map switch, {a}", maps[a], 150))
    for a in arms:
        print(feel._row(f"view switch, {a}", views[a], 300))
    for a in arms:  # no target of its own: a frame of a drag
        print(feel._row(f"camera turn, {a}", turns[a], 200))
    first, second = (shots[a] for a in arms)
    differ = int((first != second).any(-1).sum())
    print(f"pictures differ in {differ} of {first.shape[0] * first.shape[1]:,} pixels")
    viewer.close()


if __name__ == "__main__":
    main()
