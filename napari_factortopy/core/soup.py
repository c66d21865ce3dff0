"""Greedy soup (METHOD.md §3): a uniform average of the best checkpoints, grown
best-first while its validation score does not drop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .model import FactorTopy

__all__ = ["final_soup", "greedy_soup", "soup_trials"]


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype)
        for k in states[0]
    }


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
    candidates : list of (validation score, state dict)
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
    best_state = candidates[order[0]][1]
    best = candidates[order[0]][0]
    for k, i in enumerate(order[1:], start=1):
        if has_time is not None and not has_time():
            break
        trial = _average([candidates[j][1] for j in [*members, i]])
        model.load_state_dict(trial)
        score = score_fn(model)
        if score >= best:
            members.append(i)
            best, best_state = score, trial
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
        final, score, members = kept[0][1], kept[0][0], [0]
        model.load_state_dict(final)
    return final, score, members
