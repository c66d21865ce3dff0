"""The states a run keeps for its soup (METHOD.md §3: the ``top_k`` best validations),
held in memory or, under a memory limit, as files of their parameters.

A kept entry is ``(validation score, state)`` where the state is a state dict (in
memory: :func:`~.checkpoint.state_copy`) or the path of a file holding the state's
parameters (the buffers, the vertex positions and their encoding, never change and are
taken from the model when the file is read). At 39,548 vertices a state's parameters
are 29 MiB, so ten kept states are 0.28 GiB a streamed run need not hold.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_path
from .checkpoint import state_copy
from .model import FactorTopy

__all__ = ["keep_state", "load_kept"]


def keep_state(
    kept: list[tuple[float, dict | str]],
    score: float,
    model: FactorTopy,
    top_k: int,
    folder: str | Path | None = None,
    step: int = 0,
) -> list[str]:
    """Add ``model``'s current state to ``kept`` (best first, at most ``top_k``).

    Parameters
    ----------
    kept : list of (float, state dict or str)
        Changed in place: sorted by score, best first (a stable sort: of equal scores
        the earlier stays first), cut to ``top_k``.
    score : float
        The state's validation score.
    model : FactorTopy
    top_k : int
    folder : path, optional
        Where the state's parameters are written (``kept-step{step}.pt``, atomically)
        instead of copied in memory. Only a state that makes the ``top_k`` is written.
    step : int
        The training step (names the file; a run validates once per step).

    Returns
    -------
    list of str
        Files of entries no longer kept. The caller removes them once nothing names
        them any more (after the checkpoint that still named them is replaced).
    """
    # where a stable sort by score would put it (a NaN score last)
    rank = len(kept) if score != score else sum(1 for s, _ in kept if s >= score)
    if rank >= top_k:
        return []
    if folder is None:
        entry: dict | str = state_copy(model)
    else:
        params = {k: p.detach().cpu() for k, p in model.named_parameters()}
        path = Path(folder) / f"kept-step{step:09d}.pt"
        with atomic_path(path) as tmp:
            torch.save(params, tmp)
        entry = str(path)
    kept.insert(rank, (score, entry))
    dropped = kept[top_k:]
    del kept[top_k:]
    return [e for _, e in dropped if isinstance(e, str)]


def load_kept(entry: dict | str, model: FactorTopy) -> dict[str, torch.Tensor]:
    """A kept entry's state dict: the entry itself, or its file's parameters with
    ``model``'s (shared) buffers.

    Raises
    ------
    FileNotFoundError
        The file is gone (its path is in the message).
    """
    if isinstance(entry, dict):
        return entry
    path = Path(entry)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: a kept state of this run (one of the best validations, for the "
            "soup) is missing; it was written under the run's memory limit and removed "
            "since"
        )
    params = torch.load(path, map_location="cpu", weights_only=True)
    state = model.state_dict()
    return {k: (params[k] if k in params else v.detach().cpu()) for k, v in state.items()}
