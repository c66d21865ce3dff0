"""Where a model's stimuli come from (no Qt).

A model records its dataset in ``model.extra["dataset"]``:
``{"kind": "phantom", "root": ..., "config": PhantomConfig dict}`` (the phantom's
stimuli are regenerated from the seed), or ``{"kind": "folder", "root": ...}`` (image
files in sorted order). Any image file can also be opened directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "dataset_info", "read_image", "stimulus_loader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path) -> np.ndarray:
    """An image file as uint8 RGB, shape (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def dataset_info(model) -> dict:
    """The model's dataset record (empty when it has none).

    Also understands the records of ``factortopy demo`` (``extra["phantom"]``: the
    phantom folder) and ``factortopy train`` (``extra["cache"]``: the feature cache).
    """
    extra = model.extra or {}
    info = dict(extra.get("dataset") or {})
    if info:
        return info
    if isinstance(extra.get("phantom"), str):
        root = Path(extra["phantom"])
        info = {"kind": "phantom", "root": str(root)}
        try:
            import json

            info["config"] = json.loads((root / "phantom.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            pass
        return info
    if isinstance(extra.get("cache"), str):
        return {"kind": "cache", "root": extra["cache"]}
    return {}


def stimulus_loader(model) -> tuple[Callable[[np.ndarray], np.ndarray], int] | None:
    """A function ``indices (n,) → images (n, H, W, 3) uint8`` and the number of images.

    Returns None when the model does not say where its stimuli are (or they are gone).
    """
    info = dataset_info(model)
    kind = info.get("kind")
    if kind == "phantom" and "config" in info:
        from napari_factortopy.data.phantom import PhantomConfig, phantom_images

        cfg = PhantomConfig.from_dict(info["config"])

        def load(idx):
            return phantom_images(np.asarray(idx), cfg.image_size, cfg.seed)

        return load, cfg.n_images
    if kind == "folder" and info.get("root") and Path(info["root"]).is_dir():
        files = sorted(
            p for p in Path(info["root"]).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            return None

        def load(idx):
            return np.stack([read_image(files[int(i)]) for i in np.atleast_1d(idx)])

        return load, len(files)
    return None
