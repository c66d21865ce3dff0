"""Make the README screenshots of the napari workbench into docs/images/.

Run under a display (``xvfb-run -a .venv/bin/python scripts/screenshots.py``). Uses
``--model FILE`` (the README's images come from the demo's ``demo-out/model.ftopy``) or the
sample data's phantom model (trained into the user cache the first time, about a
minute; ``--quick`` trains a smaller one in a temporary folder instead).

Writes:

- ``docs/images/workbench-layer.png``: the viewer with the layer map and the Brain maps
  panel after a click on a vertex;
- ``docs/images/workbench-space.png``: the space map, posterior view, ROI outlines;
- ``docs/images/workbench-ventral.png``: the layer map from below (anterior up, the left
  hemisphere on the image's right), ROI outlines and names;
- ``docs/images/workbench-train.png``: the Train panel;
- ``docs/images/figure.png``: the exported figure (layer and score × lateral, ventral,
  flat), the same as ``factortopy figure`` (surfaces by the off-screen pyvista
  renderer, flat lighting).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import napari_factortopy  # noqa: F401  (Mesa/triton guard)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--quick", action="store_true", help="a small model in a temp folder")
    parser.add_argument(
        "--model",
        help="a model file to show instead of the sample data (e.g. demo-out/model.ftopy)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from napari_factortopy._napari import _sample_data

    if args.model:
        path = Path(args.model)
    elif args.quick:
        os.environ["FACTORTOPY_CACHE"] = tempfile.mkdtemp()
        from napari_factortopy.core.config import TrainConfig
        from napari_factortopy.data.phantom import PhantomConfig

        quick = {
            "phantom_config": PhantomConfig(n_vertices=1000, n_images=96, image_size=64),
            "train": TrainConfig(steps_per_epoch=20, max_epochs=2, log_every=10),
        }
    if not args.model:
        path = _sample_data.sample_model_path(
            progress=lambda r: print(r["kind"], end=" ", flush=True),
            **(quick if args.quick else {}),
        )
    print(f"\nmodel: {path}")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_factortopy._napari._brain_widget import BrainWidget
    from napari_factortopy._napari._train_widget import TrainWidget
    from napari_factortopy.scene.figure import figure_image, save_png

    viewer = napari.Viewer(ndisplay=3, show=True, title="napari-factortopy")
    viewer.window.resize(1500, 950)
    viewer.open(str(path), plugin="napari-factortopy")
    brain = BrainWidget(viewer)
    viewer.window.add_dock_widget(brain, name="Brain maps", area="right")
    brain._on_view("posterior")
    scene = brain.scene
    idx = scene.mesh_index()
    verts = np.asarray(viewer.layers[0].data[0])
    front = idx[np.argmax(verts[idx, 0])]
    brain._on_click(np.r_[1000.0, verts[front, 1:]], np.array([-1.0, 0.0, 0.0]))
    QApplication.processEvents()
    save_png(viewer.screenshot(canvas_only=False), out / "workbench-layer.png")

    brain.map_choice.value = "space"
    brain.outlines.value = True
    QApplication.processEvents()
    save_png(viewer.screenshot(canvas_only=False), out / "workbench-space.png")
    brain.map_choice.value = "layer"
    brain._on_view("ventral")
    QApplication.processEvents()
    save_png(viewer.screenshot(canvas_only=False), out / "workbench-ventral.png")
    brain.outlines.value = False
    brain._on_view("posterior")

    train = TrainWidget(viewer)
    dock = viewer.window.add_dock_widget(train, name="Train", area="right")
    QApplication.processEvents()
    save_png(viewer.screenshot(canvas_only=False), out / "workbench-train.png")
    viewer.window.remove_dock_widget(dock)

    figure_image(
        scene, ["layer", "score"], ["lateral", "ventral", "flat"], 3000, out / "figure.png"
    )
    viewer.close()
    for name in ("workbench-layer", "workbench-space", "workbench-ventral", "workbench-train",
                 "figure"):  # fmt: skip
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
