"""Evaluated phantom models against their truth (issue 23): significance, the R² split,
RF standard errors, and two hierarchy slopes (selector weights vs R²-weighted).

For each phantom folder given (built by ``build_phantom`` or ``build_mismatch_phantom``,
holding a model trained and evaluated there: ``factortopy train … --out P/m.ftopy``,
``factortopy evaluate P/m.ftopy``; or ``--model NAME`` for another file name), prints
one Markdown row:

- the share of vertices significant at FDR 0.05;
- exact layer agreement with the truth's argmax, of the selector's argmax and of the
  layer carrying most R² (``R² layer``);
- the hierarchy slope (paper Table 2) of the selector weights π (what ``info`` prints),
  of the positive R² split normalised per vertex (where the explained variance sits),
  and of the truth's layer weights;
- RF: the median centre error, Spearman's ρ between the standard error and the error,
  and the median error of the unlocated (SE ≥ 0.5) and of the sharp (SE < 0.1) RFs.

Nothing is fitted or tuned here: it reads the model files and the truths.

    python bench/bench_trust.py WORK/phantom:../seed0.ftopy WORK/project21 …
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _row(root: Path, model_path: Path) -> dict:
    from scipy.stats import spearmanr

    from napari_factortopy.core.analyses import hierarchy_levels, hierarchy_slope
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.variance_split import dominant_layer
    from napari_factortopy.data.phantom import load_phantom

    ph = load_phantom(root)
    m = FittedModel.load(model_path)
    truth_layer = np.asarray(ph.truth["layer"], np.float64)
    truth_space = np.asarray(
        ph.truth.get("space_centroid", ph.truth["space"]), np.float64
    )  # a mismatch phantom's field's centre of mass
    lev = hierarchy_levels(m.roi, m.roi_names)
    split = np.asarray(m.evaluation["r2_split"], np.float64)
    pos = np.clip(split, 0, None)
    tot = pos.sum(1, keepdims=True)
    w = np.where(tot > 0, pos / np.where(tot > 0, tot, 1), 1.0 / m.n_layers)
    r2_layer, _ = dominant_layer(split)
    t_arg = truth_layer.argmax(1)
    se = np.asarray(m.evaluation["space_se"], np.float64)
    err = np.linalg.norm(np.asarray(m.space, np.float64) - truth_space, axis=1)
    fin = np.isfinite(se)
    ev = m.summary["evaluation"]
    return {
        "phantom": f"{ph.generator} {root.name}",
        "significant": ev["share_significant"],
        "exact_selector": float(np.mean(m.layer.argmax(1) == t_arg)),
        "exact_r2": float(np.mean(r2_layer == t_arg)),
        "slope_selector": hierarchy_slope(m.layer, lev).slope,
        "slope_r2": hierarchy_slope(w, lev).slope,
        "slope_truth": hierarchy_slope(truth_layer, lev).slope,
        "rf_median": float(np.median(err)),
        "rho": float(spearmanr(se[fin], err[fin]).correlation),
        "err_unlocated": float(np.median(err[se >= 0.5])) if (se >= 0.5).any() else None,
        "n_unlocated": int((se >= 0.5).sum()),
        "err_sharp": float(np.median(err[se < 0.1])) if (se < 0.1).any() else None,
    }


def _f(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phantoms", nargs="+", help="phantom folders (FOLDER or FOLDER:MODEL)")
    p.add_argument("--model", default="m.ftopy", help="model file name inside each folder")
    args = p.parse_args()
    print(
        "| phantom | significant | exact: π argmax / R² layer | slope: π / R²-weighted / truth "
        "| RF median | ρ(SE, error) | error: unlocated (n) / SE < 0.1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for spec in args.phantoms:
        folder, _, name = spec.partition(":")
        root = Path(folder)
        r = _row(root, root / (name or args.model))
        if name:
            r["phantom"] += f" ({Path(name).stem})"
        print(
            f"| {r['phantom']} | {_f(r['significant'], '.2f')} | {_f(r['exact_selector'])} / "
            f"{_f(r['exact_r2'])} | {_f(r['slope_selector'])} / {_f(r['slope_r2'])} / "
            f"{_f(r['slope_truth'])} | {_f(r['rf_median'])} | {_f(r['rho'], '.2f')} | "
            f"{_f(r['err_unlocated'])} ({r['n_unlocated']}) / {_f(r['err_sharp'])} |"
        )


if __name__ == "__main__":
    main()
