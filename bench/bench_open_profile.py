"""Where the time of opening one model in napari goes (issue 22, item 6).

A shown 1920×1200 viewer with the Brain maps panel docked; the model is opened through
the plugin's reader under cProfile until Qt has drawn it. Prints the wall time and the
profile's top entries by cumulative time::

    SUBJECTS_DIR=WORK/subject/subjects xvfb-run -a -s "-screen 0 1920x1200x24" \\
        .venv/bin/python bench/bench_open_profile.py MODEL.ftopy [--top 25]

Run it from a worktree's ``PYTHONPATH`` to time an older checkout the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import napari
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-factortopy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1920, 1200)
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Brain maps")
    panel.reset_choices()
    QApplication.processEvents()
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    viewer.open(args.model, plugin=PLUGIN)
    QApplication.processEvents()
    profile.disable()
    print(f"open → drawn: {time.perf_counter() - t0:.2f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
    viewer.close()


if __name__ == "__main__":
    main()
