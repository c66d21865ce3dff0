"""Sharpness calibration of a trained FactorTopy (ours; the ``auto`` recipe's last step).

Why: the regulariser holds the layer softmax near uniform early in training and, once it
has decayed, nothing pulls the softmax sharp again; neighbouring layers of a network
predict almost equally well, so under a time budget the fitted layer weights stay
flatter than the validation data support (measured on mismatch phantoms: BENCHMARKS.md,
issue 8). The calibration asks the validation split directly:

1. For temperatures ``τ`` in :data:`TEMPERATURES` the layer weights become
   ``softmax(τ · logits)``; on a random probe of vertices the readout ``(β, b)`` is
   refitted in closed form (ridge per vertex on the training images, penalty
   ``λ · mean(diag(FᵀF))`` for ``λ`` in :data:`RIDGES`) and scored on the validation
   images.
2. The best ``(τ, λ)`` is kept only if it beats the trained model's own readout on the
   same probe; then ``τ`` is folded into the layer MLP's last linear layer (it has no
   bias, so ``softmax((τW)h) = softmax(τ·Wh)`` exactly) and the readout of every vertex
   is refitted at ``λ``. The result is still a FactorTopy model of the same shape.

Argmax layers, space and scale are untouched (``τ > 0``); only the layer confidence
(map brightness) and the readout change. The test split is never used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .convergence import calibration_line
from .metrics import r2_score
from .model import FactorTopy, Selectors
from .responses import ResponseRows

__all__ = [
    "N_PROBE",
    "RIDGES",
    "TEMPERATURES",
    "OutOfTime",
    "calibrate",
    "calibration_line",
    "refit_work",
    "ridge_readout",
    "val_r2_per_vertex",
]


class OutOfTime(Exception):
    """The calibration's deadline passed (the model is left as it was)."""


#: Layer-softmax temperatures tried (1 = the trained model's sharpness).
TEMPERATURES = (0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
#: Ridge penalties tried, relative to the mean diagonal of each vertex's Gram matrix.
RIDGES = (1e-3, 1e-2, 1e-1, 1.0)
#: Vertices per product and per solve: their float32 products and the solves' copies of
#: (rows, D, D) stay near 1/16 of a Gram chunk's memory at the default budget.
SOLVE_ROWS = 512
#: Vertices (random, seeded) on which ``(τ, λ)`` is chosen (:func:`calibrate`'s default).
N_PROBE = 500


def refit_work(
    n_vertices: int, n_probe: int = N_PROBE, n_temperatures: int = len(TEMPERATURES)
) -> float:
    """The final refit's work in units of the probe pass's: the refit's Gram products
    cover every vertex at one temperature, the probe pass's ``min(n_probe, V)`` vertices
    at each of ``n_temperatures`` (both make one product of D² per vertex and image, so
    the Gram work sets their times; 13.2 at Algonauts' V 39,548)."""
    return n_vertices / max(min(n_probe, n_vertices) * n_temperatures, 1)


def _layer_logits(model: FactorTopy) -> torch.Tensor:
    """The layer softmax's logits, shape (V, L)."""
    with torch.no_grad():
        if model.config.topology:
            return model.layer_mlp(model.encoding).float()
        return model.layer_free.detach().float()


def _fold_temperature(model: FactorTopy, tau: float) -> None:
    """Scale the layer logits by ``tau`` inside the model (exact: no bias there)."""
    with torch.no_grad():
        if model.config.topology:
            model.layer_mlp[-1].weight.mul_(tau)
        else:
            model.layer_free.mul_(tau)


def _selectors(base: Selectors, logits: torch.Tensor, tau: float, rows) -> Selectors:
    """Selectors of vertices ``rows`` (the model's ``base`` selectors, shape (V, ...))
    with the layer logits (V, L) scaled by ``tau``."""
    rows = torch.as_tensor(rows, device=logits.device)
    return Selectors(
        space=base.space[rows], layer=torch.softmax(tau * logits[rows], -1), scale=base.scale[rows]
    )


def _feature_batches(
    model: FactorTopy, features: Any, indices: np.ndarray, sels: list[Selectors], batch_size: int
) -> Iterator[list[torch.Tensor]]:
    """Per batch of ``indices``: the selected features (V', B, D) float32 for each of
    ``sels``, sharing one token table per batch."""
    from .model import weighted_gather

    if model.config.select_space:
        plans = [model.gather_plan(sel) for sel in sels]
        make_table = model.token_table
    else:  # the no-space-selection ablation
        plans = [model.pooled_plan(sel) for sel in sels]
        make_table = model.pooled_table
    d = model.config.bottleneck
    was = model.training
    model.eval()
    try:
        for lo in range(0, len(indices), batch_size):
            loc, glo = features.get(indices[lo : lo + batch_size])
            with torch.no_grad():
                loc = [x.float() for x in loc]
                glo = [x.float() for x in glo]
                b = model.check_inputs(loc, glo)
                table = make_table(loc, glo)
                yield [
                    weighted_gather(index, weight, table).view(len(index), b, d).float().cpu()
                    for index, weight in plans
                ]
    finally:
        model.train(was)


def ridge_readout(
    model: FactorTopy,
    features: Any,
    responses: np.ndarray,
    train_idx: np.ndarray,
    sels: list[Selectors],
    rows: np.ndarray,
    ridges: tuple[float, ...],
    batch_size: int = 64,
    out_of_time: Callable[[], bool] | None = None,
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Closed-form ridge readouts of vertices ``rows`` for each of the selectors ``sels``.

    Per vertex v with selected features ``F_v`` (n × D, the training images) and
    responses ``y_v``: ``w = (F̃ᵀF̃ + λ·s·I)⁻¹ F̃ᵀ ỹ`` on centred ``F̃, ỹ`` with
    ``s = mean(diag(F̃ᵀF̃))``, and ``b = mean(y) − mean(F)·w``. In the model's terms
    ``β = D·w`` (the readout divides by D). One pass over the training images serves
    every selector.

    Parameters
    ----------
    sels : list of Selectors
        Each restricted to ``rows`` (shape (V', ...)).
    rows : int array of shape (V',)
        Vertex indices (columns of ``responses``).
    ridges : tuple of float
        The penalties λ.
    out_of_time : callable, optional
        Asked after every batch; True raises :class:`OutOfTime`.

    Returns
    -------
    ``out[i][k]`` = (beta, bias) for selector i and penalty k: arrays of shape (V', D)
    and (V',), float64.
    """
    d = model.config.bottleneck
    vp, n_sel = len(rows), len(sels)
    gram = [torch.zeros(vp, d, d, dtype=torch.float64) for _ in sels]
    cross = [torch.zeros(vp, d, dtype=torch.float64) for _ in sels]
    sum_f = [torch.zeros(vp, d, dtype=torch.float64) for _ in sels]
    sum_y = torch.zeros(vp, dtype=torch.float64)
    y_all = responses if isinstance(responses, ResponseRows) else np.asarray(responses)
    shift: list[torch.Tensor] = []  # the first batch's mean: float32 products stay small
    n = 0
    for fs in _feature_batches(model, features, train_idx, sels, batch_size):
        b = fs[0].shape[1]
        y = torch.from_numpy(y_all[train_idx[n : n + b]][:, rows].astype(np.float32)).T
        if not shift:
            shift = [f.mean(1, keepdim=True) for f in fs]
        for i in range(n_sel):
            f = fs[i].sub_(shift[i])  # (V', B, D), ours to change
            for lo, hi in _slices(vp, SOLVE_ROWS):  # float32 products of bounded size
                ft = f[lo:hi].transpose(1, 2)
                gram[i][lo:hi] += torch.bmm(ft, f[lo:hi])
                cross[i][lo:hi] += torch.bmm(ft, y[lo:hi, :, None])[..., 0]
            sum_f[i] += f.sum(1)
        sum_y += y.sum(1)
        n += b
        if out_of_time is not None and out_of_time():
            raise OutOfTime(f"after {n} of {len(train_idx)} training images")
    mu_y = sum_y / n
    out = []
    for i in range(n_sel):
        mu_f = sum_f[i] / n
        g_c = gram[i].baddbmm_(mu_f[:, :, None], mu_f[:, None, :], alpha=-n)  # centred, in place
        c_c = cross[i] - n * mu_f * mu_y[:, None]
        scale = g_c.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        mean_f = mu_f + shift[i][:, 0].double()  # the features' mean, unshifted
        per = []
        for lam in ridges:
            w = torch.empty(vp, d, dtype=torch.float64)
            for lo, hi in _slices(vp, SOLVE_ROWS):  # the solve's copies stay small
                a = g_c[lo:hi].clone()
                a.diagonal(dim1=1, dim2=2).add_(lam * scale[lo:hi, None])
                w[lo:hi] = torch.linalg.solve(a, c_c[lo:hi, :, None])[..., 0]
            bias = mu_y - (mean_f * w).sum(1)
            per.append(((w * d).numpy(), bias.numpy()))
        out.append(per)
        del g_c
        gram[i] = None  # type: ignore[call-overload]  # freed before the next selector's
    return out


def _slices(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` bounds of consecutive slices of ``range(n)`` of at most ``size``."""
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _val_r2(
    model, features, responses, val_idx, sels, rows, readouts, batch_size
) -> list[list[float]]:
    """Mean validation R² (over ``rows``): ``out[i][k]`` for selector i, readout k."""
    per_vertex = val_r2_per_vertex(
        model, features, responses, val_idx, sels, rows, readouts, batch_size
    )
    return [[float(np.nanmean(r2)) for r2 in per] for per in per_vertex]


def val_r2_per_vertex(
    model, features, responses, val_idx, sels, rows, readouts, batch_size
) -> list[list[np.ndarray]]:
    """Validation R² of each vertex of ``rows``: ``out[i][k]``, shape (V',), for the
    selectors ``sels[i]`` read out by ``readouts[i][k]`` (:func:`ridge_readout`'s
    ``(beta (V', D), bias (V',))``)."""
    d = model.config.bottleneck
    preds = [[np.empty((len(val_idx), len(rows))) for _ in r] for r in readouts]
    ws = [[torch.from_numpy(beta / d) for beta, _ in r] for r in readouts]
    pos = 0
    for fs in _feature_batches(model, features, val_idx, sels, batch_size):
        b = fs[0].shape[1]
        for i, f in enumerate(fs):
            f = f.double()
            for k, (_, bias) in enumerate(readouts[i]):
                pred = torch.bmm(f, ws[i][k][:, :, None])[..., 0].T.numpy()
                preds[i][k][pos : pos + b] = pred + bias
        pos += b
    y = responses[np.asarray(val_idx, np.int64)][:, rows].astype(np.float64)
    return [[r2_score(y, p) for p in per] for per in preds]


def calibrate(
    model: FactorTopy,
    features: Any,
    responses: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    temperatures: tuple[float, ...] = TEMPERATURES,
    ridges: tuple[float, ...] = RIDGES,
    n_probe: int = N_PROBE,
    batch_size: int = 64,
    max_gram_bytes: int = 2**30,
    seed: int = 0,
    time_left: Callable[[], float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[dict]:
    """Calibrate ``model`` in place (see the module docstring); a generator.

    Parameters
    ----------
    model : FactorTopy
        Trained (its final weights loaded); CPU or accelerator.
    features : FeatureSource
    responses : array of shape (N, V)
    train_idx, val_idx : int arrays
        The split's training and validation images.
    temperatures, ridges : tuples of float
        The grid, evaluated in one pass over the training and validation images.
    n_probe : int
        Vertices (random, seeded) on which ``(τ, λ)`` is chosen; all when fewer.
    batch_size : int
        Images per evaluation batch.
    max_gram_bytes : int
        Memory for the per-vertex Gram matrices (V·D²·8 bytes); the final refit runs
        over the vertices in chunks that fit. The calibration's working memory is about
        this plus one batch's selected features (chunk × batch × D × 4 bytes): products
        and solves run :data:`SOLVE_ROWS` vertices at a time, in place where they can.
    seed : int
        Seed of the probe.
    time_left : callable, optional
        Seconds left before the caller's deadline (a budget). The probe pass stops
        when it runs out, and the final refit starts only when its time, estimated
        from the probe pass, fits; otherwise the model is left unchanged and the
        result says why (``applied`` False, ``reason``).
    clock : callable

    Yields
    ------
    dict
        ``{"kind": "calibrating", "stage", "val_score"}`` after each pass.

    Returns
    -------
    dict
        ``applied`` (bool), ``tau``, ``ridge``, ``baseline_probe`` (the trained
        readout's validation R² on the probe), ``best_probe``, ``trials`` (list of
        ``{"tau", "ridge", "val_score", "confidence"}``), ``n_probe``, ``seconds``.
    """
    t0 = clock()
    if not model.config.select_layer:
        return {"applied": False, "reason": "no layer selection", "trials": []}
    v = model.n_vertices
    rng = np.random.default_rng(seed)
    probe = np.sort(rng.choice(v, size=min(n_probe, v), replace=False))
    logits = _layer_logits(model)
    with torch.no_grad():
        base = model.selectors()  # space and scale stay as trained
    train_idx = np.asarray(train_idx, np.int64)
    val_idx = np.asarray(val_idx, np.int64)
    baseline = _own_readout_score(
        model, features, responses, val_idx, base, logits, probe, batch_size
    )
    yield {"kind": "calibrating", "stage": "trained readout", "val_score": baseline}
    sels = [_selectors(base, logits, tau, probe) for tau in temperatures]
    out_of_time = None if time_left is None else (lambda: time_left() <= 0)
    t_probe = clock()
    try:
        readouts = ridge_readout(
            model, features, responses, train_idx, sels, probe, ridges, batch_size, out_of_time
        )
    except OutOfTime as exc:
        return {
            "applied": False,
            "reason": f"out of time during the probe pass ({exc})",
            "trials": [],
            "baseline_probe": baseline,
            "n_probe": len(probe),
            "seconds": clock() - t0,
        }
    probe_seconds = clock() - t_probe
    yield {"kind": "calibrating", "stage": "ridge readouts", "val_score": baseline}
    scores = _val_r2(model, features, responses, val_idx, sels, probe, readouts, batch_size)
    trials, best = _trials(temperatures, ridges, sels, scores, baseline)
    yield {"kind": "calibrating", "stage": "chosen", "val_score": best[0]}
    result, best = _choice(
        best, trials, baseline, len(probe), probe_seconds, v, len(temperatures), time_left
    )
    if best[1] is not None:
        try:
            _refit(model, features, responses, train_idx, base, logits, best[1], best[2],
                   batch_size=batch_size, max_gram_bytes=max_gram_bytes,
                   out_of_time=out_of_time)  # fmt: skip
        except OutOfTime as exc:
            result["applied"] = False
            result["reason"] = f"out of time during the refit ({exc}); not applied"
            result["seconds"] = clock() - t0
            return result
    result["seconds"] = clock() - t0
    return result


def _choice(
    best: tuple,
    trials: list[dict],
    baseline: float,
    n_probe: int,
    probe_seconds: float,
    v: int,
    n_temperatures: int,
    time_left: Callable[[], float] | None,
) -> tuple[dict, tuple]:
    """The calibration's result before the refit, and the ``(score, τ, λ)`` to refit
    with: ``τ`` and ``λ`` are ``None`` (nothing applied) when no trial beat the trained
    readout or the refit's estimated time (from the probe pass's ``probe_seconds``)
    does not fit in ``time_left()``."""
    result = {
        "applied": best[1] is not None,
        "tau": best[1] if best[1] is not None else 1.0,
        "ridge": best[2],
        "baseline_probe": baseline,
        "best_probe": best[0],
        "trials": trials,
        "n_probe": n_probe,
    }
    # the final refit: every vertex, one temperature (its Gram work scales as V / (P·T))
    refit_estimate = 1.2 * probe_seconds * refit_work(v, n_probe, n_temperatures)
    result["refit_estimate_seconds"] = refit_estimate
    if best[1] is not None and time_left is not None and time_left() < refit_estimate:
        result["applied"] = False
        result["reason"] = (
            f"no time left for the refit of every vertex (≈ {refit_estimate:.0f} s, "
            f"{max(time_left(), 0):.0f} s left); chosen ×{best[1]:g} not applied"
        )
        best = (best[0], None, None)
    return result, best


def _own_readout_score(
    model: FactorTopy,
    features: Any,
    responses: np.ndarray,
    val_idx: np.ndarray,
    base: Selectors,
    logits: torch.Tensor,
    probe: np.ndarray,
    batch_size: int,
) -> float:
    """The trained model's own readout's validation R² on the ``probe`` vertices."""
    # the trained model's own readout on the probe
    own_sel = _selectors(base, logits, 1.0, probe)
    own = (
        model.beta.detach().double().cpu().numpy()[probe],
        model.bias.detach().double().cpu().numpy()[probe],
    )
    ((baseline,),) = _val_r2(
        model, features, responses, val_idx, [own_sel], probe, [[own]], batch_size
    )
    return baseline


def _trials(temperatures, ridges, sels: list[Selectors], scores, baseline: float):
    """Every ``(τ, λ)`` trial of the grid with its validation score and confidence,
    and the best ``(score, τ, λ)`` (``(baseline, None, None)`` when none beats the
    trained readout)."""
    from .analyses import confidence

    trials = []
    best = (baseline, None, None)
    for tau, sel, per in zip(temperatures, sels, scores, strict=True):
        conf = float(confidence(sel.layer.cpu().numpy()).mean())
        for lam, s in zip(ridges, per, strict=True):
            trials.append({"tau": tau, "ridge": lam, "val_score": s, "confidence": conf})
            if s > best[0]:
                best = (s, tau, lam)
    return trials, best


def _refit(
    model: FactorTopy,
    features: Any,
    responses: np.ndarray,
    train_idx: np.ndarray,
    base: Selectors,
    logits: torch.Tensor,
    tau: float,
    lam: float,
    *,
    batch_size: int,
    max_gram_bytes: int,
    out_of_time: Callable[[], bool] | None,
) -> None:
    """Refit the ridge readout of every vertex at temperature ``tau`` and ridge
    ``lam`` (in chunks of vertices whose Gram matrices fit ``max_gram_bytes``), then
    fold ``tau`` into the layer selector and load the readout into ``model``.

    Raises
    ------
    OutOfTime
        From :func:`ridge_readout`; ``model`` is then unchanged.
    """
    v = model.n_vertices
    d = model.config.bottleneck
    chunk = max(1, int(max_gram_bytes // (d * d * 8)))
    beta = np.empty((v, d), np.float64)
    bias = np.empty(v, np.float64)
    for lo, hi in _slices(v, chunk):
        rows = np.arange(lo, hi)
        sel = _selectors(base, logits, tau, rows)
        (((b_, c_),),) = ridge_readout(
            model,
            features,
            responses,
            train_idx,
            [sel],
            rows,
            (lam,),
            batch_size,
            out_of_time,
        )
        beta[rows], bias[rows] = b_, c_
    _fold_temperature(model, tau)
    with torch.no_grad():
        dev = model.beta.device
        model.beta.copy_(torch.as_tensor(beta, dtype=model.beta.dtype, device=dev))
        model.bias.copy_(torch.as_tensor(bias, dtype=model.bias.dtype, device=dev))
