"""What importing the open's modules ahead, on a thread, saves the first open of a model
(issue 22, item 6: open → map ≤ 2 s).

A docked model panel starts ``_background.import_in_background`` (pandas, nibabel, the
plugin's reader and the map panel's checks: ``OPEN_PATH_MODULES``). Each arm is a fresh
Python process (the imports happen once per process) with ``bench_feel.py``'s
workbench: every panel docked, a pause as a user's hand goes to File → Open, then the
model opened through the reader, timed until drawn and idle. The arms alternate::

    SUBJECTS_DIR=FS7/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_open_warm.py --rounds 4

Arms: ``ahead`` (as shipped) and ``on the open`` (the warm-up replaced by nothing, so
the open imports them on the UI thread, as before). With ``--warm units`` the arms
differ in pint's unit registry instead (``_background.units_in_background``: built on
a worker and installed ahead, or built by napari's first layer on the UI thread); the
imports are ahead in both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("on the open", "ahead")


def child(arm: str, pause: float, warm: str = "imports") -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_feel as feel

    if arm == "on the open":
        from napari_factortopy._napari import _common

        name = {"imports": "import_in_background", "units": "units_in_background"}[warm]
        setattr(_common, name, lambda *a: None)
    timed = feel.Loop.timed
    first = [True]

    def paused(self, action, done=None):
        if first[0]:  # the open is the bench's first timed action
            first[0] = False
            end = time.perf_counter() + pause
            self.until(lambda: time.perf_counter() > end)
        return timed(self, action, done)

    feel.Loop.timed = paused
    args = feel.make_parser().parse_args(["--freesurfer"])
    _viewer, _loop, _panels, _layer, opened, path = feel.open_workbench(args)
    print(f"RESULT {opened[0]:.4f} {opened[1]:.4f}", flush=True)
    import os

    feel.remove_bench_model(path)
    os._exit(0)  # napari's workers would outlive a plain close


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--pause", type=float, default=1.0, help="seconds from docking to the open")
    p.add_argument(
        "--warm",
        choices=("imports", "units"),
        default="imports",
        help="what the arms differ in: the open's imports, or pint's unit registry",
    )
    p.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.pause, args.warm)
        return
    times = {a: [] for a in ARMS}
    for i in range(args.rounds):
        for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
            cmd = [sys.executable, __file__, "--child", arm, "--pause", str(args.pause)]
            cmd += ["--warm", args.warm]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            line = next(s for s in out.splitlines() if s.startswith("RESULT"))
            times[arm].append([float(x) for x in line.split()[1:]])
    for arm in ARMS:
        total = [1000 * t[0] for t in times[arm]]
        freeze = [1000 * t[1] for t in times[arm]]
        print(
            f"open → map, {args.warm} {arm:<12} median {statistics.median(total):5.0f} ms "
            f"(runs {', '.join(f'{t:.0f}' for t in total)}); longest freeze "
            f"{max(freeze):.0f} ms"
        )


if __name__ == "__main__":
    main()
