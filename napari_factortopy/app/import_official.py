"""The paper's released model file → an ordinary ``.ftopy`` model.

:func:`import_steps` is the job (a generator of progress records, for the CLI's
``factortopy import-official``, the napari reader and Python): read the checkpoint
safely, check every key and shape, find the modelled vertices (a ``.npy`` of joint
fsaverage indices, or an Algonauts subject's ROI masks), build their coordinates the
release's way from the fsaverage sphere, map the weights onto our
:class:`~napari_factortopy.core.model.FactorTopy` (the encoding's columns permuted),
evaluate the selectors and write the model atomically. Every check runs before anything
is written: a bad file leaves no output. :func:`import_official` runs it to the end.

The model records its backbone as the paper's (``open_clip ViT-B-16 @
datacomp_l_s1b_b8k`` in the release's token convention and preprocessing, local tokens
on the release's 8×8 grid) unless told otherwise, and ``extra["imported"]`` says where
it came from (``factortopy info`` prints it). torch and open_clip are imported inside
functions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.official import PAPER, CheckpointError, check_release_state, release_to_state

__all__ = ["find_beside", "import_official", "import_steps", "official_backbone_record"]

#: Files beside a checkpoint that the reader takes as its vertex indices.
VERTEX_FILES = ("{stem}.vertices.npy", "vertices.npy")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def official_backbone_record(spec: str, layers: tuple[str, ...], widths: tuple[int, ...]) -> dict:
    """The ``backbone`` record of an imported model: the named backbone's layers that the
    checkpoint's layer keys pick, checked against the checkpoint's widths.

    The paper's backbone is known without building it; any other is built with random
    weights (architecture only: nothing is downloaded, no weights are needed to import).

    Parameters
    ----------
    spec : str
        A backbone name (:func:`~napari_factortopy.data.backbones.load_backbone`).
    layers : tuple of str
        The release's layer keys (block numbers, ``"0"`` … ``"11"``).
    widths : tuple of int
        The checkpoint's channel width per layer.

    Returns
    -------
    dict
        As :meth:`~napari_factortopy.data.backbones.Backbone.describe`, without the random
        weights in ``source``.

    Raises
    ------
    napari_factortopy.data.backbones.BackboneError
        Layer keys that are not block numbers of the backbone, or other widths.
    """
    from ..data.backbones import BackboneError, load_backbone
    from ..data.backbones.open_clip_family import PAPER_BACKBONE, paper_backbone_record

    if spec in ("paper", PAPER_BACKBONE):  # known: no need to build the network
        if not all(k.isdigit() for k in layers):
            raise BackboneError(
                f"backbone {PAPER_BACKBONE}: expected the checkpoint's layer keys to be block "
                f"numbers 0..11; found {list(layers)}"
            )
        record = paper_backbone_record([int(k) for k in layers])
        if record["widths"] != list(widths):
            raise BackboneError(
                f"backbone {PAPER_BACKBONE}: expected the checkpoint's channel widths "
                f"{list(widths)}; the paper's ViT-B-16 has {record['widths']}: give the "
                "backbone it was trained on (--backbone)"
            )
        return record
    bb = load_backbone(spec, weights="random")
    picked = []
    for k in layers:
        if not k.isdigit() or int(k) >= bb.n_layers:
            raise BackboneError(
                f"backbone {bb.name}: expected the checkpoint's layer keys to be block numbers "
                f"0..{bb.n_layers - 1}; found {k!r}"
            )
        picked.append(int(k))
    names = [bb.layer_names[i] for i in picked]
    got = [int(bb.widths[i]) for i in picked]
    if got != list(widths):
        raise BackboneError(
            f"backbone {bb.name}: expected the checkpoint's channel widths {list(widths)} at "
            f"blocks {list(layers)}; found {got}: give the backbone it was trained on "
            "(--backbone)"
        )
    record = bb.describe()
    record["layer_names"] = names
    record["widths"] = got
    record["source"] = {k: v for k, v in record["source"].items() if k != "weights"}
    return record


def find_beside(checkpoint: str | os.PathLike) -> dict[str, Path]:
    """What the napari reader can find beside a checkpoint on its own.

    Returns
    -------
    dict
        ``{"vertices": path}`` for ``<stem>.vertices.npy`` or ``vertices.npy`` in its
        folder, else ``{"algonauts_subject": folder}`` for a folder holding
        ``roi_masks/`` (the folder itself, or a ``subjNN`` inside it); empty if neither.
    """
    path = Path(checkpoint)
    folder = path.parent
    for pattern in VERTEX_FILES:
        cand = folder / pattern.format(stem=path.stem)
        if cand.is_file():
            return {"vertices": cand}
    for cand in [folder, *sorted(folder.glob("subj[0-9][0-9]"))]:
        if (cand / "roi_masks" / "lh.all-vertices_fsaverage_space.npy").is_file():
            return {"algonauts_subject": cand}
    return {}


def import_steps(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    vertices: str | os.PathLike | None = None,
    algonauts_subject: str | os.PathLike | None = None,
    subjects_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    backbone: str | None = None,
    grid: tuple[int, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Import the release's checkpoint, as a generator of progress records.

    Parameters
    ----------
    checkpoint : path
        The release's ``.pth`` (bare state dict) or a Lightning ``.ckpt`` of its module.
    out : path, optional
        Where to write the ``.ftopy`` (atomically, after every check); None: not written.
    vertices : path, optional
        A ``.npy`` of joint fsaverage indices (0..327,683, left first) in the
        checkpoint's row order.
    algonauts_subject : path, optional
        An Algonauts 2023 subject folder: the vertices are its challenge space minus RSC
        (the release's nsdgeneral), with the paper's ROI groups as ROI labels.
    subjects_dir, allow_download
        Where the fsaverage sphere is (:func:`~napari_factortopy.data.surfaces.load_mesh`).
    backbone : str, optional
        The backbone the checkpoint was trained on (default: the paper's,
        ``open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper``).
    grid : (h, w), optional
        The local-token grid (default: the backbone preset's; the release's is 8×8).

    Yields
    ------
    dict
        ``{"stage": str, "text": str}`` per step, then ``{"stage": "done", "model":
        FittedModel, "path": Path | None, "seconds": float}``.

    Raises
    ------
    FileNotFoundError, ValueError
        Bad inputs (one line naming the file, what was expected and what was found);
        nothing is written.
    """
    import time

    from ..data.backbones.open_clip_family import PAPER_BACKBONE, PAPER_GRID

    t0 = time.perf_counter()
    path = Path(checkpoint)
    ck, shapes, verts, coords = _read_release(
        path, vertices, algonauts_subject, subjects_dir, allow_download
    )
    spec = backbone or PAPER_BACKBONE
    record = official_backbone_record(spec, shapes.layers, shapes.widths)
    # every check has passed: report, then build and write
    yield {
        "stage": "read",
        "text": f"{path.name}: {ck.kind} checkpoint of the release's FactorTopy, "
        f"{len(shapes.layers)} layers × {shapes.widths[0]}, D={shapes.bottleneck}, "
        f"V={shapes.n_vertices}",
    }
    yield {"stage": "vertices", "text": f"vertices: {verts.source}"}
    yield {"stage": "sphere", "text": "coordinates: fsaverage sphere, joined as the release"}
    grid = tuple(int(g) for g in (grid or record.get("grid") or PAPER_GRID))
    module = _release_module(ck, coords, shapes, grid)
    model = _imported_model(module, path, ck, shapes, verts, record)
    yield {"stage": "selectors", "text": f"backbone {record['name']}, grid {list(grid)}"}
    written = None
    if out is not None:
        written = model.save(out)
        yield {"stage": "write", "text": f"wrote {written}"}
    yield {
        "stage": "done",
        "model": model,
        "path": written,
        "seconds": time.perf_counter() - t0,
    }


def _read_release(
    path: Path,
    vertices: str | os.PathLike | None,
    algonauts_subject: str | os.PathLike | None,
    subjects_dir: str | os.PathLike | None,
    allow_download: bool,
):
    """Read and check the release's checkpoint and its vertices (arguments as in
    :func:`import_steps`): the state's shapes, one row per vertex, the stored
    coordinates (when the checkpoint has them) matching the vertices' sphere.

    Returns
    -------
    ck : the loaded checkpoint
    shapes : its shapes (:func:`check_release_state`)
    verts : the vertices (joint fsaverage indices, ids, ROIs, source)
    coords : array of shape (V, 3)
        The release-style sphere coordinates.
    """
    from ..data.official import (
        algonauts_release_vertices,
        load_checkpoint,
        read_joint_vertices,
        release_coordinates,
    )

    if (vertices is None) == (algonauts_subject is None):
        raise ValueError(
            f"{path}: the checkpoint does not hold its vertex indices: give exactly one of "
            "--vertices FILE.npy or --algonauts-subject DIR"
        )
    ck = load_checkpoint(path)
    try:
        shapes = check_release_state(ck.state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    verts = (
        read_joint_vertices(vertices)
        if vertices is not None
        else algonauts_release_vertices(algonauts_subject)
    )
    try:
        check_release_state(ck.state, n_vertices=len(verts.joint))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc} ({verts.source})") from None
    coords = release_coordinates(
        verts.joint, subjects_dir=subjects_dir, allow_download=allow_download
    )
    if ck.coords is not None:
        if ck.coords.shape != coords.shape:
            raise CheckpointError(
                f"{path}: coords: expected shape {coords.shape} (one row per vertex); found "
                f"{ck.coords.shape}"
            )
        diff = float(np.abs(ck.coords.astype(np.float64) - coords).max())
        if diff > 1e-3:
            raise CheckpointError(
                f"{path}: coords: expected the vertices' release-style sphere coordinates; "
                f"found coordinates up to {diff:.3g} away: the vertex indices are not this "
                "checkpoint's, or not in its row order"
            )
    return ck, shapes, verts, coords


def _release_module(ck, coords: np.ndarray, shapes, grid: tuple[int, ...]):
    """The checkpoint's weights in a :class:`~napari_factortopy.core.model.FactorTopy`
    (eval mode) on ``coords``, with the local-token ``grid``."""
    import torch

    from ..core.config import FactorTopyConfig
    from ..core.model import FactorTopy

    config = FactorTopyConfig(
        widths=shapes.widths,
        grid=grid,
        bottleneck=shapes.bottleneck,
        hidden=shapes.hidden,
        n_freqs=shapes.n_freqs,
    )
    state = release_to_state(ck.state, coords, shapes)
    module = FactorTopy(coords, config)
    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    sd["encoding"] = module.encoding
    module.load_state_dict(sd)
    module.eval()
    return module


def _imported_model(module, path: Path, ck, shapes, verts, record: dict):
    """The imported module as a FittedModel recording where it came from
    (``extra["imported"]``: checkpoint, sha256, format, layers, vertices, licence)."""
    from ..core.fitted_model import FittedModel

    imported = {
        "source": f"the paper's release ({PAPER['repository']})",
        "checkpoint": str(path.resolve()),
        "sha256": _sha256(path),
        "format": ck.kind,
        "layers": list(shapes.layers),
        "vertices": verts.source,
        "coordinates": "fsaverage sphere; right hemisphere shifted by the whole left "
        "sphere's x range (the release's layout)",
        "encoding": "selector inputs permuted from [axis][frequency][sin|cos]",
        "licence": PAPER["licence"],
    }
    model = FittedModel.from_module(
        module,
        vertex_ids=verts.vertex_ids,
        n_lh=verts.n_lh,
        mesh="fsaverage",
        roi=verts.roi,
        roi_names=list(verts.roi_names),
        backbone=record,
        kind="factortopy",
        extra={"imported": imported},
    )
    return model


def import_official(checkpoint: str | os.PathLike, out=None, **kwargs: Any):
    """Run :func:`import_steps` to the end; returns the :class:`FittedModel`."""
    model = None
    for rec in import_steps(checkpoint, out, **kwargs):
        if rec["stage"] == "done":
            model = rec["model"]
    return model
