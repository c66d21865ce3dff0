"""Predicted responses of a model for images of a feature source, batch by batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .model import FactorTopy, Selectors

__all__ = ["autocast", "predict", "predict_batches", "prediction_blocks"]


def predict(
    model: FactorTopy,
    features: Any,
    indices: np.ndarray,
    batch_size: int = 64,
    amp: bool = True,
    selectors: Selectors | None = None,
) -> np.ndarray:
    """Predicted responses for images ``indices``.

    Parameters
    ----------
    model : FactorTopy
    features : FeatureSource
    indices : array of shape (n,)
    batch_size : int
    amp : bool
        bf16 autocast when the model is on CUDA.
    selectors : Selectors, optional
        Fixed selector outputs (e.g. a phantom's truth) instead of the MLPs'.

    Returns
    -------
    array of shape (n, V), float32
    """
    out = np.empty((len(indices), model.n_vertices), np.float32)
    for _ in predict_batches(model, features, indices, out, batch_size, amp, selectors):
        pass
    return out


def predict_batches(
    model: FactorTopy,
    features: Any,
    indices: np.ndarray,
    out: np.ndarray,
    batch_size: int = 64,
    amp: bool = True,
    selectors: Selectors | None = None,
) -> Iterator[int]:
    """:func:`predict` one batch at a time, so a caller can report progress or stop.

    Fills ``out`` (array of shape (n, V)) in place and yields the number of rows done
    after each batch. The model's train/eval mode is restored when the generator ends
    or is closed.
    """
    lo = 0
    for block in prediction_blocks(model, features, indices, batch_size, amp, selectors):
        out[lo : lo + len(block)] = block
        lo += len(block)
        yield lo


def prediction_blocks(
    model: FactorTopy,
    features: Any,
    indices: np.ndarray,
    batch_size: int = 64,
    amp: bool = True,
    selectors: Selectors | None = None,
) -> Iterator[np.ndarray]:
    """The predictions of ``indices``' images, one batch at a time: float32 arrays of
    shape (≤ batch_size, V), in ``indices``' order (nothing of shape (n, V) is held).
    The model's train/eval mode is restored when the generator ends or is closed."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(dev, amp):
            sel = model.selectors() if selectors is None else selectors
        for lo in range(0, len(indices), batch_size):
            with torch.no_grad(), autocast(dev, amp):
                loc, glo = features.get(indices[lo : lo + batch_size])
                block = model(loc, glo, sel).float().cpu().numpy()
            yield block
    finally:
        model.train(was_training)


def autocast(dev: torch.device, amp: bool):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")
