"""Greedy soup (METHOD.md §3): a uniform average of the best checkpoints, grown
best-first while its validation score does not drop.

The average is a running float64 sum of the members' parameters (the same sums, in
the same order, as summing the members afresh for every trial), so a trial holds the
sum, the candidate and the trial's weights, never every kept state at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .checkpoint import parameter_names
from .kept import load_kept
from .model import FactorTopy

__all__ = ["final_soup", "greedy_soup", "soup_trials"]


def _add(
    total: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor], keys: set[str]
) -> dict[str, torch.Tensor]:
    """``total + state`` in float64 over ``keys`` (``0 + state`` when ``total`` is None)."""
    if total is None:
        return {k: v.double() for k, v in state.items() if k in keys}
    return {k: total[k] + v.double() for k, v in state.items() if k in keys}


def _mean(total: dict[str, torch.Tensor], n: int, like: dict[str, torch.Tensor]) -> dict:
    """``total / n`` in ``like``'s dtypes, with ``like``'s entries where ``total`` has none
    (the fixed buffers: the same in every state, so their mean is themselves)."""
    return {k: total[k].div(n).to(v.dtype) if k in total else v for k, v in like.items()}


def greedy_soup(
    model: FactorTopy,
    candidates: list[tuple[float, dict[str, torch.Tensor]]],
    score_fn,
    has_time: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], list[int], float]:
    """Greedy soup (ours: on validation): add checkpoints best-first to a running
    uniform average while its validation score does not drop.

    Parameters
    ----------
    model : FactorTopy
        Used to evaluate averages (its weights are left set to the soup).
    candidates : list of (validation score, state dict or file)
        The kept states (:mod:`.kept`: a file's is read when its trial comes).
    score_fn : callable
        ``score_fn(model) -> float`` validation score of the model's current weights.
    has_time : callable, optional
        ``has_time() -> bool``, asked before each trial: when it says no, the soup
        ends with the members it has (a budget's deadline).

    Returns
    -------
    state : dict
        The soup's weights.
    members : list of int
        Positions (in best-first order) of the checkpoints in the soup.
    score : float
        Its validation score.
    """
    trials = soup_trials(model, candidates, score_fn, has_time)
    while True:
        try:
            next(trials)
        except StopIteration as done:
            return done.value


def soup_trials(
    model: FactorTopy,
    candidates: list[tuple[float, dict[str, torch.Tensor]]],
    score_fn,
    has_time: Callable[[], bool] | None = None,
) -> Iterator[dict]:
    """:func:`greedy_soup` as a generator: yields ``{"kind": "souping", "tried",
    "total"}`` after each trial and returns ``(state, members, score)``."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
    members = [order[0]]
    best_state = load_kept(candidates[order[0]][1], model)
    best = candidates[order[0]][0]
    params = parameter_names(model)
    total = None  # the members' parameters summed in float64, in the order they joined
    for k, i in enumerate(order[1:], start=1):
        if has_time is not None and not has_time():
            break
        if total is None:
            total = _add(None, best_state, params)
        # one candidate read at a time: kept states on disk stay there
        trial_total = _add(total, load_kept(candidates[i][1], model), params)
        trial = _mean(trial_total, len(members) + 1, best_state)
        model.load_state_dict(trial)
        score = score_fn(model)
        if score >= best:
            members.append(i)
            best, best_state, total = score, trial, trial_total
        del trial_total, trial
        yield {"kind": "souping", "tried": k, "total": len(order) - 1}
    model.load_state_dict(best_state)
    ranks = [order.index(m) for m in members]
    return best_state, ranks, best


def final_soup(
    model: FactorTopy,
    kept: list[tuple[float, dict[str, torch.Tensor]]],
    score_fn,
    soup: bool = True,
    has_time: Callable[[], bool] | None = None,
) -> Iterator[dict]:
    """A run's final weights: the greedy soup of its kept checkpoints (``soup`` and more
    than one kept), else the best one.

    Yields :func:`soup_trials`' records and ``{"kind": "soup", "members", "val_score"}``;
    returns ``(state, val_score, members)``. The model is left set to ``state``.
    """
    if soup and len(kept) > 1:
        final, members, score = yield from soup_trials(model, kept, score_fn, has_time=has_time)
        yield {"kind": "soup", "members": members, "val_score": score}
    else:
        final, score, members = load_kept(kept[0][1], model), kept[0][0], [0]
        model.load_state_dict(final)
    return final, score, members
