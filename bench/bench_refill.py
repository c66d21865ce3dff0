"""What refilling the bound colour buffer, instead of binding a new one, saves a map
switch (issue 22, item 6: map switch ≤ 150 ms, no freeze over 200 ms).

``_mesh_update._send_unrolled`` refills the vertex buffer already bound to the mesh
visual (``glBufferSubData`` into its storage); the other arm binds a new buffer each
switch, as vispy does on a full update and as this plugin did before (fresh storage of
≈ 31 MB at fsaverage7, allocated by the driver). Each arm is a fresh Python process
with ``bench_feel.py``'s workbench (every panel docked, the model opened through the
reader, 6 s idle for the warm-ups): the first switch to each of three maps is timed,
then both arms take turns in the same viewer for ``--switches`` switches::

    SUBJECTS_DIR=FS7/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_refill.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("new buffer", "refill")
MAPS = ("space", "scale", "score", "layer")


def child(arm: str, switches: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_feel as feel
    import numpy as np

    from napari_factortopy._napari import _mesh_update

    refill = _mesh_update._send_unrolled

    def new_buffer(node, attribute, values):
        from vispy.gloo import VertexBuffer

        corners = _mesh_update._corners(node.mesh_data)
        node.shared_program.vert[attribute] = VertexBuffer(np.take(values, corners, axis=0))

    sends = dict(zip(ARMS, (new_buffer, refill), strict=True))
    _mesh_update._send_unrolled = sends[arm]
    args = feel.make_parser().parse_args(["--freesurfer"])
    _viewer, loop, panels, _layer, _opened, path = feel.open_workbench(args)
    brain = panels["Brain maps"]
    end = time.perf_counter() + 6
    loop.until(lambda: time.perf_counter() > end)
    for name in MAPS[:3]:
        t = loop.timed(lambda n=name: setattr(brain.map_choice, "value", n))
        print(f"FIRST {name} {t[0]:.4f} {t[1]:.4f}", flush=True)
    for i in range(switches):
        turn = ARMS[i % 2]
        _mesh_update._send_unrolled = sends[turn]
        brain.map_choice.value = MAPS[i % 4]
        loop.until(lambda: True)
        t = loop.timed(lambda n=MAPS[(i + 1) % 4]: setattr(brain.map_choice, "value", n))
        print(f"TURN {ARMS.index(turn)} {t[0]:.4f} {t[1]:.4f}", flush=True)
    import os

    feel.remove_bench_model(path)
    os._exit(0)  # napari's workers would outlive a plain close


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--switches", type=int, default=24, help="alternating switches per process")
    p.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.switches)
        return
    first = {a: {m: [] for m in MAPS[:3]} for a in ARMS}
    turns = {a: [] for a in ARMS}
    for i in range(args.rounds):
        for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
            cmd = [sys.executable, __file__, "--child", arm, "--switches", str(args.switches)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                words = line.split()
                if words[:1] == ["FIRST"]:
                    first[arm][words[1]].append([float(x) for x in words[2:]])
                elif words[:1] == ["TURN"]:
                    turns[ARMS[int(words[1])]].append([float(x) for x in words[2:]])
    for arm in ARMS:
        cells = []
        for name, runs in first[arm].items():
            cells.append(
                f"{name} {statistics.median(1000 * r[0] for r in runs):.0f} "
                f"(freeze ≤ {max(1000 * r[1] for r in runs):.0f})"
            )
        print(f"first switch, {arm:<10}: " + ", ".join(cells) + " ms")
    for arm in ARMS:
        total = [1000 * t[0] for t in turns[arm]]
        freeze = sorted(1000 * t[1] for t in turns[arm])
        print(
            f"switches taking turns, {arm:<10}: median {statistics.median(total):.0f} ms, "
            f"freeze median {statistics.median(freeze):.0f}, longest {freeze[-1]:.0f} ms "
            f"({len(total)} switches)"
        )


if __name__ == "__main__":
    main()
