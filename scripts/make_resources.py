"""Write the generated files of the top-level ``resources/`` (deterministic; the
package's ``napari_factortopy/resources`` is a link to it).

    python scripts/make_resources.py            # into the package
    python scripts/make_resources.py --out DIR  # elsewhere (the test compares)

Writes the 2-D legend colour tables (``legend_layer_confidence.png``,
``legend_space.png``, ``legends.json``), the sample stimuli (``stimuli/*.png`` +
``stimuli/stimuli.csv``: 224 × 224 centre crops of scikit-image's bundled photographs)
and the plugin icon (``factortopy.png``). ``roi_groups.csv`` is written by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from napari_factortopy.core import colours

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
STIMULUS_SIZE = 224
#: name → (skimage.data function, licence as the function's docstring gives it)
STIMULI = {
    "astronaut": ("astronaut", "NASA Great Images, public domain (Eileen Collins)"),
    "cat": ("chelsea", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee": ("coffee", "CC0 by the photographer (Rachel Michetti)"),
    "rocket": ("rocket", "SpaceX, released into the public domain"),
    "camera": ("camera", "CC0 by the photographer (Lav Varshney)"),
    "galaxies": ("hubble_deep_field", "NASA (HubbleSite), public domain"),
}


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, optimize=False)


def _u8(rgba: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgba[..., :3], 0, 1) * 255).astype(np.uint8)


def layer_confidence_table(size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: layer position 0 → 1 along x (left = first layer, pixel
    centres), confidence 1 → 0 down the rows (top = 1)."""
    pos = (np.arange(size) + 0.5) / size
    conf = 1.0 - np.arange(size) / (size - 1)
    p2, c2 = np.broadcast_arrays(pos[None, :], conf[:, None])
    return _u8(colours._layer_colour(p2, c2, "coolwarm"))


def space_table(size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: :func:`colours.space_legend` (x right, y down, pixel
    centres of ``grid_sample`` with ``align_corners=False``)."""
    return _u8(colours.space_legend(size))


def stimulus(func: str, size: int = STIMULUS_SIZE) -> np.ndarray:
    """Centre square crop of ``skimage.data.<func>()`` resized to ``size`` (RGB uint8)."""
    from skimage import data

    img = getattr(data, func)()
    img = img[0] if isinstance(img, tuple) else img
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.uint8)
    h, w = img.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))


def icon(size: int = SIZE) -> np.ndarray:
    """(size, size, 4) uint8: a lateral hemisphere silhouette coloured like a layer map
    (early layers at the occipital pole on the right, later ones anterior)."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    inside = (xx / 0.92) ** 2 + ((yy + 0.08) / 0.62) ** 2 <= 1
    inside &= ~(((xx + 0.05) / 0.45) ** 2 + ((yy - 0.62) / 0.22) ** 2 <= 1)  # temporal notch
    inside |= ((xx + 0.15) / 0.55) ** 2 + ((yy - 0.38) / 0.2) ** 2 <= 1  # temporal lobe
    pos = np.clip((1 - xx) / 2, 0, 1)  # right = posterior = early layers
    conf = np.clip(1 - 0.6 * np.abs(yy), 0, 1)
    rgb = colours._layer_colour(pos, conf, "coolwarm")[..., :3]
    out = np.zeros((size, size, 4), np.uint8)
    out[..., :3] = np.round(rgb * 255).astype(np.uint8)
    out[..., 3] = np.where(inside, 255, 0).astype(np.uint8)
    return out


def write(out: Path) -> list[Path]:
    """Write every generated resource under ``out``; returns the paths."""
    written = []
    _png(out / "legend_layer_confidence.png", layer_confidence_table())
    _png(out / "legend_space.png", space_table())
    legends = {
        "legend_layer_confidence.png": {
            "map": "layer",
            "x": "layer position argmax_l / (L - 1), 0 (first layer) at the left edge "
            "to 1 (last) at the right, pixel centres",
            "y": "confidence 1 - H(pi)/log L, 1 in the top row to 0 in the bottom row",
            "colormap": "matplotlib coolwarm, brightness 1.2 - e^3 with e = 1 - confidence",
        },
        "legend_space.png": {
            "map": "space",
            "x": "token-grid x in [-1, 1], left to right (pixel centres)",
            "y": "token-grid y in [-1, 1], top (-1) to bottom (+1), like the image",
            "colormap": "hue = angle atan2(y, x), saturation = radius, value 1",
        },
    }
    (out / "legends.json").write_text(json.dumps(legends, indent=2) + "\n")
    written += [out / n for n in ("legend_layer_confidence.png", "legend_space.png")]
    written.append(out / "legends.json")
    rows = []
    for name, (func, licence) in STIMULI.items():
        path = out / "stimuli" / f"{name}.png"
        _png(path, stimulus(func))
        rows.append({"name": name, "file": path.name, "source": f"skimage.data.{func}()",
                     "crop": f"centre square, resized to {STIMULUS_SIZE} px",
                     "licence": licence})  # fmt: skip
        written.append(path)
    with (out / "stimuli" / "stimuli.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    written.append(out / "stimuli" / "stimuli.csv")
    Image.fromarray(icon(), "RGBA").save(out / "factortopy.png", optimize=False)
    written.append(out / "factortopy.png")
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "resources")
    args = p.parse_args(argv)
    for path in write(args.out):
        print(path)


if __name__ == "__main__":
    main()
