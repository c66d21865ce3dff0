"""napari reader for FactorTopy model files (``*.ftopy``) and the paper's checkpoint.

Declared in ``napari.yaml`` as the command ``napari-factortopy.read_ftopy``. A dropped
``.pth``/``.ckpt`` is claimed only when it is a FactorTopy checkpoint of the paper's
release (read with ``torch.load(weights_only=True)``, keys and shapes checked); it is
imported (:mod:`napari_factortopy.app.import_official`) into ``<name>.ftopy`` beside it
(reused when it is already there for the same file) and opened as any model. What the
file does not hold is looked for beside it (a ``vertices.npy``, an Algonauts subject
folder with ``roi_masks/``) and the fsaverage sphere where the CLI looks; what cannot be
found is named in one message (no layer, no traceback).

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
#: Checkpoint suffixes the reader looks into (the paper's release is a ``.pth``).
CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".pt")


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
    if len(paths) == 1 and _is_official_checkpoint(paths[0]):
        return read_official
    if not paths or not all(_is_model_file(p) for p in paths):
        return None
    return read_ftopy


def _is_official_checkpoint(path: PathLike) -> bool:
    """True for a ``.pth``/``.ckpt`` holding the release's FactorTopy (safely loaded)."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.lower().endswith(CHECKPOINT_SUFFIXES):
        return False
    if not os.path.isfile(text):
        return False
    try:
        from napari_factortopy.core.official import check_release_state
        from napari_factortopy.data.official import load_checkpoint

        check_release_state(load_checkpoint(text).state)
    except Exception:  # another model's checkpoint, or no torch: not ours
        return False
    return True


def _tell(message: str) -> None:
    from napari_factortopy._napari._layers import _notify

    _notify(message)


def read_official(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Import the paper's checkpoint beside itself and open it; or say what is missing.

    Returns
    -------
    list of layer data tuples
        The model's layers, or napari's "nothing to add" sentinel ``[(None,)]`` after
        one message naming what could not be found (vertex indices, the sphere) and the
        ``factortopy import-official`` command that imports it.
    """
    from pathlib import Path

    from napari_factortopy.app.import_official import find_beside, import_steps

    p = Path(os.fspath(path if isinstance(path, str | os.PathLike) else next(iter(path))))
    out = p.with_suffix(SUFFIX)
    if _same_import(out, p):
        return read_ftopy(out)
    found = find_beside(p)
    command = (
        f"factortopy import-official {p.name} --algonauts-subject DIR (or --vertices "
        f"FILE.npy) --out {out.name}"
    )
    if not found:
        _tell(
            f"{p.name} is the paper's FactorTopy model, but the file does not hold its vertex "
            "indices: put the Algonauts subject folder (subjNN with roi_masks/) or a "
            f"vertices.npy beside it and drop it again, or run `{command}`"
        )
        return [(None,)]
    try:
        for _rec in import_steps(p, out, **found):
            pass
    except (ValueError, FileNotFoundError, OSError) as exc:
        _tell(f"{p.name} cannot be opened: {exc}. Import it with `{command}`")
        return [(None,)]
    return read_ftopy(out)


def _same_import(model: Any, checkpoint: Any) -> bool:
    """Whether ``model`` is an import of exactly this checkpoint (same SHA-256)."""
    if not model.is_file():
        return False
    try:
        from napari_factortopy.app.import_official import _sha256
        from napari_factortopy.core.fitted_model import FittedModel

        imported = FittedModel.load(model).extra.get("imported") or {}
        return imported.get("sha256") == _sha256(checkpoint)
    except Exception:
        return False


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
