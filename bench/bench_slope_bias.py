"""Where the hierarchy slope's bias comes from (issue 23, item 1).

For each trained phantom model (``WORK/model-{seed}-t{t}.ftopy`` beside
``WORK/phantom-{seed}``, as :mod:`bench.bench_recovery` leaves them) this prints, per ROI
level: the mean layer position λ (METHOD §4: ``Σ_l π_l (l−1)/(L−1)``) of the fitted and of
the true layer weights, the fitted mass more than one layer away from the truth's argmax
("far mass"), split into the mass below and above it; and the slope of the fitted
weights re-tempered (``softmax(τ · log π)``, τ = 1, 2, 5, ∞ = the argmax), of the fitted
weights with the far mass removed (renormalised within ±1 layer of the fitted argmax),
and of the truth.

    python bench/bench_slope_bias.py --work WORK --seeds 21 22 23

The decomposition answers: is the slope compressed because the argmax is wrong (the
τ = ∞ slope is off too), because the weights are too flat near the mode (τ = 2 recovers
it), or because mass sits far from the mode (the ±1-layer slope recovers it)?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _temper(layer: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(τ · log π)`` per row; τ = inf gives the one-hot argmax."""
    if np.isinf(tau):
        out = np.zeros_like(layer)
        out[np.arange(len(layer)), layer.argmax(1)] = 1.0
        return out
    z = tau * np.log(np.clip(layer, 1e-30, None))
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _near_mode(layer: np.ndarray, width: int = 1) -> np.ndarray:
    """The weights within ``width`` layers of each row's argmax, renormalised."""
    idx = np.arange(layer.shape[1])
    keep = np.abs(idx[None, :] - layer.argmax(1)[:, None]) <= width
    w = np.where(keep, layer, 0.0)
    return w / w.sum(1, keepdims=True)


def analyse(model_path: Path, phantom_root: Path) -> dict:
    """The decomposition for one model (see the module docstring)."""
    from napari_factortopy.core.analyses import hierarchy_levels, hierarchy_slope, layer_position
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.data.phantom import load_phantom

    m = FittedModel.load(model_path)
    ph = load_phantom(phantom_root)
    fit = np.asarray(m.layer, np.float64)
    true = np.asarray(ph.truth["layer"], np.float64)
    levels = hierarchy_levels(np.asarray(ph.surface.roi), list(m.roi_names))
    lam_f, lam_t = layer_position(fit), layer_position(true)
    ta = true.argmax(1)
    idx = np.arange(fit.shape[1])
    below = np.where(idx[None, :] < (ta - 1)[:, None], fit, 0).sum(1)
    above = np.where(idx[None, :] > (ta + 1)[:, None], fit, 0).sum(1)
    per_level = {}
    for k in sorted(set(levels[levels > 0].tolist())):
        s = levels == k
        per_level[int(k)] = {
            "n": int(s.sum()),
            "lambda_fit": float(lam_f[s].mean()),
            "lambda_truth": float(lam_t[s].mean()),
            "far_below": float(below[s].mean()),
            "far_above": float(above[s].mean()),
            "exact": float((fit[s].argmax(1) == ta[s]).mean()),
        }
    slopes = {f"tau {t:g}": hierarchy_slope(_temper(fit, t), levels).slope for t in (1, 2, 5)}
    slopes["argmax"] = hierarchy_slope(_temper(fit, np.inf), levels).slope
    slopes["within ±1 of the mode"] = hierarchy_slope(_near_mode(fit), levels).slope
    slopes["truth"] = hierarchy_slope(true, levels).slope
    slopes["truth argmax"] = hierarchy_slope(_temper(true, np.inf), levels).slope
    return {
        "model": str(model_path),
        "steps": (m.summary or {}).get("steps"),
        "per_level": per_level,
        "slopes": slopes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--work", required=True, type=Path, help="bench_recovery's folder")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="phantom seeds")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:
        r = analyse(
            args.work / f"model-{seed}-t{args.train_seed}.ftopy", args.work / f"phantom-{seed}"
        )
        r["seed"] = seed
        rows.append(r)
        print(f"\n## phantom {seed} ({r['steps']} steps)\n")
        print("| level | n | λ fitted | λ truth | far mass below | far mass above | exact |")
        print("|---|---|---|---|---|---|---|")
        for k, v in r["per_level"].items():
            print(
                f"| {k} | {v['n']} | {v['lambda_fit']:.3f} | {v['lambda_truth']:.3f} | "
                f"{v['far_below']:.3f} | {v['far_above']:.3f} | {v['exact']:.2f} |"
            )
        print("\n" + ", ".join(f"{k} {v:.3f}" for k, v in r["slopes"].items()))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
