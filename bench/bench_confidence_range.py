"""Does the supported confidence range cover the truth's confidence? (issue 23, item 1)

For trained phantom models, per ROI and over all vertices: the fitted mean layer
confidence, the truth's, their difference, the range the validation data support
(:mod:`napari_factortopy.core.confidence_range`, from the calibration's profile kept in
the model file) and whether it covers the truth's mean. Each argument pairs a model
file with its truth: a phantom's ``truth.ftopy`` (the demo writes one beside its model)
or a phantom folder (``bench_recovery.py``'s ``WORK/phantom-SEED``)::

    python bench/bench_confidence_range.py DEMO/model.ftopy=DEMO/truth.ftopy \\
        WORK/model-23-t0.ftopy=WORK/phantom-23

Prints one Markdown table row per model and ROI.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def truth_confidence(where: Path) -> np.ndarray:
    """The truth's per-vertex confidence (V,)."""
    from napari_factortopy.core.analyses import confidence

    if where.is_dir():
        from napari_factortopy.data.phantom import load_phantom

        truth = load_phantom(where).truth
        if "confidence" in truth:
            return np.asarray(truth["confidence"], np.float64)
        return confidence(np.asarray(truth["layer"], np.float64))
    from napari_factortopy.core.fitted_model import FittedModel

    return confidence(np.asarray(FittedModel.load(where).layer, np.float64))


def rows(model_path: Path, truth_path: Path) -> list[dict]:
    """One row per ROI (and ``all``)."""
    from napari_factortopy.core.analyses import confidence
    from napari_factortopy.core.confidence_range import model_confidence_ranges
    from napari_factortopy.core.fitted_model import FittedModel

    m = FittedModel.load(model_path)
    ranges = model_confidence_ranges(m)
    if ranges is None:
        raise SystemExit(f"{model_path}: the file keeps no calibration profile")
    t_conf = truth_confidence(truth_path)
    fit = confidence(np.asarray(m.layer, np.float64))
    roi = np.asarray(m.roi)
    out = []
    for name, r in [("all", ranges["all"]), *ranges["roi"].items()]:
        members = np.ones(len(roi), bool) if name == "all" else roi == m.roi_names.index(name) + 1
        truth = float(np.mean(t_conf[members]))
        out.append(
            {
                "model": model_path.parent.name + "/" + model_path.name,
                "roi": name,
                "fitted": float(np.mean(fit[members])),
                "truth": truth,
                "lo": r.lo,
                "hi": r.hi,
                "n_probe": r.n_probe,
                "pooled": r.pooled,
                "covered": r.lo - 1e-9 <= truth <= r.hi + 1e-9,
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", help="MODEL=TRUTH")
    args = p.parse_args()
    print("| model | ROI | fitted | truth | Δ | supported | probe | covered |")
    print("|---|---|---|---|---|---|---|---|")
    covered = total = 0
    for pair in args.pairs:
        model, truth = pair.split("=", 1)
        for r in rows(Path(model), Path(truth)):
            total += r["roi"] != "all"
            covered += r["roi"] != "all" and r["covered"]
            print(
                f"| {r['model']} | {r['roi']} | {r['fitted']:.3f} | {r['truth']:.3f} | "
                f"{r['fitted'] - r['truth']:+.3f} | {r['lo']:.3f}–{r['hi']:.3f} | "
                f"{r['n_probe']}{'*' if r['pooled'] else ''} | "
                f"{'yes' if r['covered'] else '**no**'} |"
            )
    print(f"\nper-ROI ranges covering the truth: {covered} of {total}")


if __name__ == "__main__":
    main()
