"""Screenshots of a group file in napari (BENCHMARKS.md, issue 23): the group layer map
and the agreement map with the Brain maps panel, posterior view.

Run under a display: ``xvfb-run -a .venv/bin/python scripts/group_screenshots.py
GROUP.ftopy [--out docs/images]``. Writes ``group-layer.png`` and
``group-agreement.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari_factortopy  # noqa: F401  (Mesa/triton guard)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", help="a group file (factortopy group)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--view", default="posterior")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_factortopy._napari._brain_widget import BrainWidget
    from napari_factortopy.scene.figure import save_png

    viewer = napari.Viewer(ndisplay=3, show=True, title="napari-factortopy: group map")
    viewer.window.resize(1500, 950)
    viewer.open(str(args.group), plugin="napari-factortopy")
    brain = BrainWidget(viewer)
    viewer.window.add_dock_widget(brain, name="Brain maps", area="right")
    brain._on_view(args.view)
    for name, file in (("layer", "group-layer.png"), ("agreement", "group-agreement.png")):
        brain.map_choice.value = name
        QApplication.processEvents()
        save_png(viewer.screenshot(canvas_only=False), out / file)
        print(out / file)
    viewer.close()


if __name__ == "__main__":
    main()
