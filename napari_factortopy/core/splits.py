"""Seeded train/validation/test splits of images, keeping groups (repeats) together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "make_split"]


@dataclass(frozen=True)
class Split:
    """Image indices of the train, validation and test splits (disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


def make_split(
    n_images: int,
    groups: np.ndarray | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """Seeded train/val/test split by image group.

    Parameters
    ----------
    n_images : int
    groups : array of shape (n_images,), optional
        Group key of each image (e.g. the NSD image id of each trial): all images
        of a group land in the same split. Default: each image its own group.
    fractions : 3 floats summing to 1
    seed : int

    Returns
    -------
    Split
        Sorted index arrays; group counts per split are ``round`` of the fractions
        (train gets the remainder).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split fractions must be 3 non-negative numbers summing to 1; found {fractions}"
        )
    groups = np.arange(n_images) if groups is None else np.asarray(groups)
    if len(groups) != n_images:
        raise ValueError(f"groups has {len(groups)} entries; expected {n_images} (one per image)")
    keys, inverse = np.unique(groups, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val = round(fractions[1] * len(keys))
    n_test = round(fractions[2] * len(keys))
    which = np.zeros(len(keys), np.int64)  # 0 train, 1 val, 2 test
    which[order[:n_val]] = 1
    which[order[n_val : n_val + n_test]] = 2
    per_image = which[inverse]
    return Split(
        train=np.flatnonzero(per_image == 0),
        val=np.flatnonzero(per_image == 1),
        test=np.flatnonzero(per_image == 2),
        seed=seed,
        fractions=tuple(float(f) for f in fractions),
    )
