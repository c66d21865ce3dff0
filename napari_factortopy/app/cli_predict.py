"""``factortopy predict``: a model's responses to new images, through its own backbone.

:func:`predict_files` is the job (a generator of progress records): images are read in
the order given (a folder: its image files in sorted name order), preprocessed as the
model's backbone records, run through the backbone in batches, their local tokens
brought onto the model's grid, and the model's (N, V) float32 responses written
atomically to one ``.npy``. The weights of the backbone must be on disk (or
``--allow-download``): a missing weight is named before any image is read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import progress_bar

__all__ = ["IMAGE_SUFFIXES", "add_predict_parser", "image_paths", "predict_files", "run_predict"]

#: Files a folder contributes (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files in the order given; a folder contributes its images in sorted order.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    ValueError
        No image at all (a folder without image files).
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ValueError(
                    f"{p}: expected image files ({', '.join(IMAGE_SUFFIXES)}); found none"
                )
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    if not out:
        raise ValueError("no images given")
    return out


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ValueError(
            f"{path}: expected an image PIL can decode; cannot read it ({type(exc).__name__})"
        ) from None


def predict_files(
    model: Any,
    paths: Sequence[str | os.PathLike],
    backbone: Any,
    *,
    batch_size: int = 16,
    device: str = "auto",
) -> Iterator[dict[str, Any]]:
    """Predicted responses to image files, as a generator of progress records.

    Parameters
    ----------
    model : FittedModel
        A model with weights (its backbone record names the network and preprocessing).
    paths : sequence of N image paths
    backbone : Backbone
        The model's backbone (:func:`~napari_factortopy.app.predict.model_backbone`).
    batch_size : int
        Images per forward pass.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, …

    Yields
    ------
    dict
        ``{"done": int, "total": N}`` after each batch, then ``{"done": N, "total": N,
        "responses": array of shape (N, V), float32}``.
    """
    import torch

    from ..core.runtime import resolve_device
    from ..data.backbones import resize_tokens

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; found {batch_size}")
    dev = resolve_device(device)
    module = model.to_module(dev).eval()
    backbone.to(dev)
    grid = tuple(int(g) for g in model.config["grid"])
    n = len(paths)
    out = np.empty((n, model.n_vertices), np.float32)
    for lo in range(0, n, batch_size):
        chunk = paths[lo : lo + batch_size]
        x = backbone.preprocessing([_read(Path(p)) for p in chunk]).to(dev)
        with torch.no_grad():
            local, global_ = backbone(x)
            local = resize_tokens(local, grid, getattr(backbone, "token_resize", "antialias"))
            y = module([t.float() for t in local], [t.float() for t in global_])
        out[lo : lo + len(chunk)] = y.float().cpu().numpy()
        yield {"done": lo + len(chunk), "total": n}
    yield {"done": n, "total": n, "responses": out}


def run_predict(args: argparse.Namespace) -> int:
    from ..core.atomic import atomic_path
    from ..core.fitted_model import FittedModel
    from .predict import model_backbone

    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out {out}: expected a .npy file name; found {out.suffix or 'none'}")
    model = FittedModel.load(args.model)
    if model.kind != "factortopy":
        raise ValueError(
            f"{args.model}: expected a trained FactorTopy model; found a {model.kind!r} file "
            "(display only)"
        )
    paths = image_paths(args.images)
    backbone = model_backbone(model, weights=args.weights, allow_download=args.allow_download)
    bar = progress_bar(len(paths), "predict", "img")
    responses = None
    try:
        for rec in predict_files(
            model, paths, backbone, batch_size=args.batch_size, device=args.device
        ):
            bar.n = rec["done"]
            bar.refresh()
            responses = rec.get("responses", responses)
    finally:
        bar.close()
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, responses)
    print(
        f"wrote {out}: responses {responses.shape} float32 (rows: the {len(paths)} images in "
        f"the order given; columns: the model's {model.n_vertices} vertices)",
        file=sys.stderr,
    )
    return 0


def add_predict_parser(sub) -> argparse.ArgumentParser:
    """Register ``predict`` on the ``factortopy`` subparsers."""
    p = sub.add_parser(
        "predict",
        help="a model's responses to new images → (N, V) .npy",
        description=(
            "Predict (N, V) float32 responses for images, through the model's recorded "
            "backbone and preprocessing. A folder contributes its images in sorted name "
            "order. Backbone weights must be on disk (or --allow-download)."
        ),
    )
    p.add_argument("model", help="a .ftopy model")
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders of images (in sorted name order)",
    )
    p.add_argument("--out", required=True, help="the .npy to write: (N, V) float32")
    p.add_argument(
        "--weights",
        help="the backbone's weights file (default: found in the local open_clip / "
        "Hugging Face / torch hub cache)",
    )
    p.add_argument("--allow-download", action="store_true", help="let the backbone download")
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default 16)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.set_defaults(func=run_predict)
    return p
