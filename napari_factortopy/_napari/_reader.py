"""napari reader for FactorTopy model files (``*.ftopy``).

Declared in ``napari.yaml`` as the command ``napari-factortopy.read_ftopy``.

Everything heavy (the model file code, torch, the layer builders) is imported lazily
inside functions, so that napari can import this module cheaply while it collects
plugin contributions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

PathLike = str | os.PathLike
LayerDataTuple = tuple  # (data, kwargs, layer_type) as napari expects

SUFFIX = ".ftopy"


def _is_model_file(path: PathLike) -> bool:
    """True when ``path`` names a file with the ``.ftopy`` suffix that looks like one."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.lower().endswith(SUFFIX):
        return False
    if not os.path.isfile(text):
        return False
    try:
        from napari_factortopy.core.modelfile import is_ftopy
    except ImportError:
        return False
    try:
        return bool(is_ftopy(text))
    except Exception:
        return False


def get_reader(
    path: PathLike | Sequence[PathLike],
) -> Callable[[Any], list[LayerDataTuple]] | None:
    """Return a reader function for ``path``, or None when it is not a FactorTopy model.

    ``path`` may be one path or a list of paths (napari passes a list when several files
    are opened at once); a list is accepted only when every entry is a model file.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(_is_model_file(p) for p in paths):
        return None
    return read_ftopy


def read_ftopy(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Read one or more ``.ftopy`` files into napari layer data tuples."""
    from napari_factortopy._napari._layers import model_layers

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerDataTuple] = []
    for p in paths:
        layers.extend(model_layers(os.fspath(p)))
    _show_in_3d()
    return layers


def _show_in_3d() -> None:
    """Brains are 3-D surfaces: switch the current viewer (if any) to 3-D display,
    so a dropped model shows the cortex, not a 2-D slice through it."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        viewer.dims.ndisplay = 3
