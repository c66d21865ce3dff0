"""Screenshots of the whole napari window with every FactorTopy panel docked (issue 22,
item 2), on a 1920×1200 and a 1440×900 screen, into docs/images/.

Run under a display as large as the largest screen::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/layout_screenshots.py

Uses ``--model FILE`` or the sample data's phantom model (trained into the user cache
the first time; ``--quick`` trains a smaller one in a temporary folder instead). The
panels are docked through the Plugins menu's path in the manifest's order, the
window resized to the screen; prints the window's and the canvas's sizes.

Writes ``docs/images/layout-1920x1200.png`` and ``docs/images/layout-1440x900.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml

import napari_factortopy  # noqa: F401  (Mesa/triton guard)

ROOT = Path(__file__).resolve().parents[1]
SCREENS = ((1920, 1200), (1440, 900))


def _settle(app, rounds: int = 20) -> None:
    import time

    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--model", help="a model file (default: the sample data's)")
    parser.add_argument("--quick", action="store_true", help="a small model in a temp folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.model:
        path = Path(args.model)
    else:
        from napari_factortopy._napari import _sample_data

        quick = {}
        if args.quick:
            os.environ["FACTORTOPY_CACHE"] = tempfile.mkdtemp()
            from napari_factortopy.core.config import TrainConfig
            from napari_factortopy.data.phantom import PhantomConfig

            quick = {
                "phantom_config": PhantomConfig(n_vertices=1000, n_images=96, image_size=64),
                "train": TrainConfig(steps_per_epoch=20, max_epochs=2, log_every=10),
            }
        path = _sample_data.sample_model_path(**quick)
    print(f"model: {path}")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_factortopy.scene.figure import save_png

    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    panels = [w["display_name"] for w in manifest["contributions"]["widgets"]]
    for width, height in SCREENS:
        viewer = napari.Viewer(ndisplay=3, show=True, title="napari-factortopy")
        viewer.window.resize(width, height)
        viewer.open(str(path), plugin="napari-factortopy")
        app = QApplication.instance()
        docked = {}
        for name in panels:
            _dock, docked[name] = viewer.window.add_plugin_dock_widget("napari-factortopy", name)
            _settle(app, 3)
        docked["Brain maps"]._on_view("posterior")
        _settle(app)
        window = viewer.window._qt_window
        canvas = viewer.window._qt_viewer.canvas.native
        print(
            f"screen {width}x{height}: window {window.width()}x{window.height()}, "
            f"canvas {canvas.width()}x{canvas.height()}"
        )
        file = out / f"layout-{width}x{height}.png"
        save_png(viewer.screenshot(canvas_only=False), file)
        print(file)
        viewer.close()


if __name__ == "__main__":
    main()
