"""Where a model's stimuli come from (no Qt).

A model records its dataset in ``model.extra["dataset"]``:
``{"kind": "phantom", "root": ..., "config": PhantomConfig dict}`` (the phantom's
stimuli are regenerated from the seed), or ``{"kind": "folder", "root": ...}`` (image
files in sorted order). Any image file can also be opened directly.

Recorded paths are absolute where the model was trained. A model file moved
together with its data folder still finds it: :func:`resolve_path` tries the path
as recorded, then relative to the model file's folder, then the path's last parts
relative to that folder (``/old/demo-out/phantom`` → ``<model folder>/phantom``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePath

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "dataset_info",
    "read_image",
    "resolve_dataset",
    "resolve_path",
    "stimulus_loader",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path) -> np.ndarray:
    """An image file as uint8 RGB, shape (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


#: How many trailing parts of a recorded path are tried beside the model file.
MAX_TAIL = 3


def resolve_path(
    recorded: str | PurePath, bases: Sequence[str | PurePath | None] = ()
) -> Path | None:
    """Where a recorded data path is on this machine, or None.

    Tried in order: the path itself when it is absolute and exists; a relative path
    under each base folder; the path's last ``MAX_TAIL`` … 1 parts under each base
    folder (the longest first).

    Parameters
    ----------
    recorded : path
        As the model file records it.
    bases : sequence of folders
        Typically the model file's folder, then a data folder the user chose.
    """
    rec = PurePath(str(recorded))
    if rec.is_absolute() and Path(rec).exists():
        return Path(rec)
    folders = [Path(b) for b in bases if b]
    if not rec.is_absolute():
        for base in folders:
            if (base / rec).exists():
                return base / rec
    parts = [p for p in rec.parts if p not in (rec.anchor, "")]
    for n in range(min(MAX_TAIL, len(parts)), 0, -1):
        for base in folders:
            cand = base.joinpath(*parts[-n:])
            if cand.exists():
                return cand
    return None


def resolve_dataset(
    info: dict, model_path: str | PurePath | None = None, data_root: str | None = None
) -> dict:
    """A dataset record with its paths found on this machine.

    ``root`` is looked for with :func:`resolve_path` (``data_root``, a folder the
    user pointed at, replaces it outright); ``cache`` and ``responses`` keep their
    place inside the found root when they were inside the recorded one, and are
    looked for on their own otherwise.

    Returns
    -------
    dict
        The record with found paths replacing recorded ones, plus ``missing``: the
        recorded ``root`` / ``cache`` paths that were not found (list of str).
    """
    out = dict(info)
    missing: list[str] = []
    base = Path(model_path).parent if model_path else None
    bases = [base, data_root]
    rec_root = info.get("root")
    root = Path(data_root) if data_root and Path(data_root).exists() else None
    if root is None and rec_root:
        root = resolve_path(rec_root, bases)
    if rec_root:
        if root is None:
            missing.append(str(rec_root))
        else:
            out["root"] = str(root)
    for key in ("cache", "responses"):
        rec = info.get(key)
        if not rec:
            continue
        found = None
        if root is not None and rec_root:
            try:
                inside = root / PurePath(str(rec)).relative_to(str(rec_root))
            except ValueError:
                inside = None
            found = inside if inside is not None and inside.exists() else None
        found = found or resolve_path(rec, bases)
        if found is not None:
            out[key] = str(found)
        elif key == "cache":
            missing.append(str(rec))
    out["missing"] = missing
    return out


def dataset_info(
    model, model_path: str | PurePath | None = None, data_root: str | None = None
) -> dict:
    """The model's dataset record with its paths found here (empty when it has none).

    Also understands the records of ``factortopy demo`` (``extra["phantom"]``: the
    phantom folder) and ``factortopy train`` (``extra["cache"]``: the feature cache).
    Paths go through :func:`resolve_dataset` (``model_path``: the model file, beside
    which moved data is looked for; ``data_root``: a folder the user chose).
    """
    info = _record(model)
    if not info:
        return {}
    out = resolve_dataset(info, model_path, data_root)
    found_root = out.get("root") and str(info.get("root")) not in out["missing"]
    if out.get("kind") == "phantom" and "config" not in out and found_root:
        try:
            import json

            text = (Path(out["root"]) / "phantom.json").read_text()
            out["config"] = json.loads(text)["config"]
        except (OSError, ValueError, KeyError):
            pass
    return out


def _record(model) -> dict:
    extra = model.extra or {}
    info = dict(extra.get("dataset") or {})
    if info:
        return info
    if isinstance(extra.get("phantom"), str):
        return {"kind": "phantom", "root": extra["phantom"]}
    if isinstance(extra.get("cache"), str):
        return {"kind": "cache", "root": extra["cache"]}
    return {}


def stimulus_loader(
    model, model_path: str | PurePath | None = None, data_root: str | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], int] | None:
    """A function ``indices (n,) → images (n, H, W, 3) uint8`` and the number of images.

    ``model_path`` and ``data_root`` help find moved data (see :func:`dataset_info`).
    Returns None when the model does not say where its stimuli are (or they are gone).
    """
    info = dataset_info(model, model_path, data_root)
    kind = info.get("kind")
    if kind == "phantom" and "config" in info:
        from napari_factortopy.data.phantom import PhantomConfig, phantom_images

        cfg = PhantomConfig.from_dict(info["config"])

        def load(idx):
            return phantom_images(np.asarray(idx), cfg.image_size, cfg.seed, cfg.photo_fraction)

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
