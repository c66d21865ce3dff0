"""The modelled vertices of a subject, and the checks responses must pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .responses import ResponseRows, row_blocks

__all__ = ["Subject", "check_responses"]

#: Bytes of responses :func:`check_responses` looks at at once (a block of rows).
CHECK_BLOCK_BYTES = 64 * 2**20


@dataclass
class Subject:
    """The modelled vertices of a subject.

    Attributes
    ----------
    vertex_ids : array of shape (V,)
        Per-hemisphere mesh indices, left hemisphere first.
    n_lh : int
    sphere : array of shape (V, 3)
        Registered-sphere coordinates of the vertices (per hemisphere, unshifted).
    mesh : str
    roi : array of shape (V,), optional
    roi_names : list of str
    """

    vertex_ids: np.ndarray
    n_lh: int
    sphere: np.ndarray
    mesh: str = "fsaverage5"
    roi: np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        v = len(self.vertex_ids)
        if np.shape(self.sphere) != (v, 3):
            raise ValueError(
                f"sphere coordinates must have shape ({v}, 3) for {v} vertex ids; "
                f"found {np.shape(self.sphere)}"
            )
        if self.roi is not None and len(self.roi) != v:
            raise ValueError(f"roi has {len(self.roi)} labels for {v} vertices")

    @property
    def n_vertices(self) -> int:
        return len(self.vertex_ids)

    def joint_coords(self) -> np.ndarray:
        """(V, 3) coordinates with the right sphere shifted (METHOD.md §1)."""
        from .encoding import joint_sphere_coordinates

        return joint_sphere_coordinates(self.sphere[: self.n_lh], self.sphere[self.n_lh :])


def check_responses(responses: Any, n_images: int, n_vertices: int, source: str) -> None:
    """Stop on responses that cannot be trained on, naming ``source``.

    Checks the shape (n_images, n_vertices), NaN/inf values and constant vertices,
    a block of rows at a time (an array (N, V) or a
    :class:`~napari_factortopy.core.responses.ResponseRows` read from its files).
    """
    y = responses if isinstance(responses, ResponseRows) else np.asarray(responses)
    if y.ndim != 2:
        raise ValueError(
            f"{source}: responses must be a 2-D (images, vertices) array; found shape {y.shape}"
        )
    if y.shape[0] != n_images:
        raise ValueError(
            f"{source}: expected responses for {n_images} images (the feature "
            f"cache's count); found {y.shape[0]}"
        )
    if y.shape[1] != n_vertices:
        raise ValueError(
            f"{source}: expected {n_vertices} vertices (the subject's vertex "
            f"ids); found {y.shape[1]}"
        )
    n_bad, first, lo, hi = 0, None, None, None
    for rows, block in row_blocks(y, CHECK_BLOCK_BYTES):
        bad = ~np.isfinite(block)
        if bad.any():
            n_bad += int(bad.sum())
            if first is None:
                r, c = np.nonzero(bad)
                first = (rows.start + int(r[0]), int(c[0]))
            continue
        if n_bad:
            continue
        b_lo, b_hi = block.min(axis=0), block.max(axis=0)
        lo = b_lo if lo is None else np.minimum(lo, b_lo)
        hi = b_hi if hi is None else np.maximum(hi, b_hi)
    if n_bad:
        raise ValueError(
            f"{source}: {n_bad} NaN/inf responses (first at image "
            f"{first[0]}, vertex {first[1]}); expected finite values"
        )
    const = np.flatnonzero(lo == hi) if lo is not None else np.arange(y.shape[1])
    if len(const):
        raise ValueError(
            f"{source}: {len(const)} vertices have constant responses (first: "
            f"vertex {const[0]}); expected varying responses — drop them"
        )
