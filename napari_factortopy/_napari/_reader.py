"""napari reader for FactorTopy model files (``*.ftopy``) and the paper's checkpoint.

Declared in ``napari.yaml`` as the command ``napari-factortopy.read_ftopy``. A dropped
``.pth``/``.ckpt`` is claimed only when it is a FactorTopy checkpoint of the paper's
release (read with ``torch.load(weights_only=True)``, keys and shapes checked); it is
imported (:mod:`napari_factortopy.app.import_official`) into ``<name>.ftopy`` beside it
(reused when it is already there for the same file) and opened as any model. What the
file does not hold is looked for beside it (a ``vertices.npy``, an Algonauts subject
folder with ``roi_masks/``) and the fsaverage sphere where the CLI looks; what cannot be
found is named in one message (no layer, no traceback). So is what is wrong with a
damaged or foreign file named ``.ftopy`` (empty, truncated, text, an image …).

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
    """True when ``path`` names a file with the ``.ftopy`` suffix.

    Whatever it holds: a damaged or foreign file named ``.ftopy`` is claimed too, so
    that the user reads the plugin's own line on what is wrong with it (see
    :func:`read_ftopy`), not napari's "no reader" or "gave an error".
    """
    text = os.fspath(path)
    if not isinstance(text, str) or not text.lower().endswith(SUFFIX):
        return False
    return os.path.isfile(text)


#: What a file's first bytes say it is, for the message about a foreign ``.ftopy``.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x80", "a Python pickle (a PyTorch checkpoint?)"),
)


def why_unreadable(path: PathLike, exc: BaseException) -> str:
    """One line naming the file, what was expected and what was found in it.

    Parameters
    ----------
    path : path
        The ``.ftopy`` file that could not be read.
    exc : Exception
        What reading it raised (a ``ModelFileError`` names the damage).
    """
    name = os.path.basename(os.fspath(path))
    expected = "a FactorTopy model (.ftopy: safetensors with factortopy metadata)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as err:
        return f"cannot open {name}: {err.strerror or err}"
    found = None
    if not head:
        found = "an empty file (0 bytes)"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            found = kind
    text = head.decode("utf-8", "replace").rstrip("\ufffd")  # a character cut at 64
    if found is None and text and all(c.isprintable() or c in "\n\r\t" for c in text):
        found = f"a text file ({' '.join(text.split())[:30]!r}…)"
    if found is not None:
        return f"cannot open {name}: expected {expected}, found {found}"
    said = str(exc)
    for prefix in (os.fspath(path), name):  # the message names the full path first
        said = said.removeprefix(prefix).removeprefix(": ")
    return f"cannot open {name}: {said or type(exc).__name__}"


def get_reader(
    path: PathLike | Sequence[PathLike],
) -> Callable[[Any], list[LayerDataTuple]] | None:
    """Return a reader function for ``path``, or None when it is no ``.ftopy`` file (nor
    the paper's checkpoint).

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
    """Read one or more ``.ftopy`` files into napari layer data tuples.

    A file that cannot be read (empty, truncated, foreign, too new) is named in one
    warning of :func:`why_unreadable` and skipped; when no file could be read, napari's
    "nothing to add" sentinel ``[(None,)]`` is returned (no traceback toast).
    """
    from napari_factortopy._napari._layers import model_layers

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerDataTuple] = []
    for p in paths:
        try:
            layers.extend(model_layers(os.fspath(p)))
        except (ValueError, KeyError, OSError, EOFError) as exc:  # ModelFileError is one
            _tell(why_unreadable(p, exc))
    if not layers:
        return [(None,)]
    _show_in_3d()
    return layers


def _show_in_3d() -> None:
    """Brains are 3-D surfaces: switch the current viewer (if any) to 3-D display,
    so a dropped model shows the cortex, not a 2-D slice through it; models shown
    side by side get their names (:func:`~napari_factortopy._napari._names.label_models`)."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        viewer.dims.ndisplay = 3
        from napari_factortopy._napari._names import label_models

        label_models(viewer)  # two models or more: each one's name above it
