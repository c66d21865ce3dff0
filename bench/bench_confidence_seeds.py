"""Does the spread across training seeds cover the truth's per-ROI confidence? (issue 23)

Per-ROI confidence (mean of ``1 − H(π)/log L`` over an ROI's vertices) came out up to
±0.17 off the truth on the demo's phantoms, with the validation data unable to tell
the layer mixtures' shapes apart. If that error were the optimisation's (where a seed
lands), models trained from several seeds would scatter around the truth and their
range would report it. This script reads a phantom folder and models trained on it
from different seeds (nothing is fitted here) and prints, per ROI: the truth's
confidence, each seed's, the seeds' range and whether it covers the truth, and the
mean top-three layer weights (the mixture's shape) of the truth and of each seed.

    python bench/bench_confidence_seeds.py PHANTOM MODEL_SEED0.ftopy MODEL_SEED1.ftopy …
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _top3(layer: np.ndarray) -> np.ndarray:
    """Mean of each row's three largest weights, largest first: (3,)."""
    return np.sort(layer, axis=1)[:, ::-1][:, :3].mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phantom", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()

    from napari_factortopy.core.analyses import confidence
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.data.phantom import load_phantom

    ph = load_phantom(args.phantom)
    truth = np.asarray(ph.truth["layer"], float)
    ids = np.asarray(ph.surface.vertex_ids)
    models = [FittedModel.load(p) for p in args.models]
    for m, p in zip(models, args.models, strict=True):
        if not np.array_equal(np.asarray(m.vertex_ids), ids):
            raise SystemExit(f"{p}: its vertices are not the phantom's")
    names = models[0].roi_names
    roi = np.asarray(models[0].roi)
    c_truth = confidence(truth)
    c_fit = [confidence(np.asarray(m.layer, float)) for m in models]
    print(
        f"phantom {args.phantom}, {len(models)} seeds: " + ", ".join(p.name for p in args.models)
    )
    print("| ROI | truth | seeds | range | covered | Δ mean | top-3 truth | top-3 per seed |")
    print("|---|---|---|---|---|---|---|---|")
    covered = 0
    for k, name in enumerate(names, start=1):
        sel = roi == k
        if not sel.any():
            continue
        t = float(c_truth[sel].mean())
        each = np.array([float(c[sel].mean()) for c in c_fit])
        lo, hi = float(each.min()), float(each.max())
        ok = lo <= t <= hi
        covered += ok
        shapes = " / ".join(
            "·".join(f"{x:.2f}" for x in _top3(np.asarray(m.layer)[sel])) for m in models
        )
        print(
            f"| {name} | {t:.3f} | {' '.join(f'{e:.3f}' for e in each)} | {lo:.3f}–{hi:.3f} "
            f"| {'yes' if ok else 'no'} | {each.mean() - t:+.3f} "
            f"| {'·'.join(f'{x:.2f}' for x in _top3(truth[sel]))} | {shapes} |"
        )
    print(f"covered {covered} of {len(names)} ROIs")
    # the argmax agrees? (the seeds' maps are the same map, or different ones)
    arg = [np.asarray(m.layer).argmax(1) for m in models]
    for i in range(1, len(arg)):
        print(f"argmax agreement seed 0 vs {i}: {np.mean(arg[0] == arg[i]):.3f}")
    with_truth = [round(float(np.mean(a == truth.argmax(1))), 3) for a in arg]
    print(f"argmax agreement with the truth: {with_truth}")


if __name__ == "__main__":
    main()
