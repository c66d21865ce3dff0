"""The types every surface module shares: :class:`SurfaceError` and :class:`Mesh`.

They live apart from :mod:`.meshes` so that :mod:`.flat` (whose patches are meshes)
and :mod:`.meshes` (whose ``"flat"`` kind reads patches) can import them without an
import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SurfaceError(ValueError):
    """A surface, patch or label file is missing or malformed."""


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh of one hemisphere.

    Attributes
    ----------
    vertices : array of shape (n, 3), float32
    faces : array of shape (m, 3), int64
    """

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)
