"""Can the validation data tell the fitted layer mixture from the truth's? (issue 23)

Per ROI of a phantom model, on (up to ``--per-roi``) of its vertices, the readout is
refitted in closed form (ridge per vertex on the training images, the calibration's
:func:`~napari_factortopy.core.calibration.ridge_readout`) for three sets of selectors
and scored on the validation images:

- ``fitted``: the model's own space, scale and layer weights;
- ``truth π``: the model's space and scale with the truth's layer weights;
- ``truth``: every selector the truth's.

The paired per-vertex difference of validation R² (``truth π`` − ``fitted``) with its
standard error answers the question: clearly positive, the fit missed a better mixture
(an optimisation defect that could be fixed); within noise, the data do not tell the
two mixtures apart (the per-ROI confidence is not identifiable at that precision);
clearly negative, the data prefer the fitted mixture (the model's readout differs from
the truth's, so the truth's mixture is not the best for it). Nothing is tuned here.

    python bench/bench_confidence_identifiable.py MODEL.ftopy [--per-roi 250]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--per-roi", type=int, default=250)
    parser.add_argument("--ridge", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch

    from napari_factortopy.app.evaluate import evaluation_inputs
    from napari_factortopy.core.analyses import confidence
    from napari_factortopy.core.calibration import ridge_readout, val_r2_per_vertex
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.model import Selectors
    from napari_factortopy.data.phantom import load_phantom

    m = FittedModel.load(args.model)
    inputs = evaluation_inputs(m, args.model)
    root = Path(m.extra["dataset"]["root"])
    truth = load_phantom(root).truth
    module = m.to_module("cpu").eval()
    with torch.no_grad():
        base = module.selectors()
    t_layer = torch.as_tensor(np.asarray(truth["layer"]), dtype=base.layer.dtype)
    t_space = torch.as_tensor(np.asarray(truth["space"]), dtype=base.space.dtype)
    t_scale = torch.as_tensor(np.asarray(truth["scale"]), dtype=base.scale.dtype)
    split = inputs.split
    rng = np.random.default_rng(0)
    print(f"{args.model}: ridge λ {args.ridge}, ≤ {args.per_roi} vertices per ROI")
    print(
        "| ROI | n | conf fitted / truth | R² fitted | R² truth π | Δ (truth π − fitted) ± s.e. "
        "| truth π better on | R² truth (all selectors) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, name in enumerate(m.roi_names, start=1):
        rows = np.flatnonzero(np.asarray(m.roi) == k)
        if len(rows) > args.per_roi:
            rows = np.sort(rng.choice(rows, args.per_roi, replace=False))
        r = torch.as_tensor(rows)
        sels = [
            Selectors(space=base.space[r], layer=base.layer[r], scale=base.scale[r]),
            Selectors(space=base.space[r], layer=t_layer[r], scale=base.scale[r]),
            Selectors(space=t_space[r], layer=t_layer[r], scale=t_scale[r]),
        ]
        readouts = ridge_readout(
            module,
            inputs.features,
            inputs.responses,
            split.train,
            sels,
            rows,
            (args.ridge,),
            batch_size=args.batch_size,
        )
        per_vertex = val_r2_per_vertex(
            module,
            inputs.features,
            inputs.responses,
            split.val,
            sels,
            rows,
            readouts,
            args.batch_size,
        )
        fit, tpi, tall = (per[0] for per in per_vertex)
        diff = tpi - fit
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        c_fit = float(confidence(base.layer[r].double().numpy()).mean())
        c_true = float(confidence(t_layer[r].double().numpy()).mean())
        print(
            f"| {name} | {len(rows)} | {c_fit:.3f} / {c_true:.3f} | {fit.mean():.4f} "
            f"| {tpi.mean():.4f} | {diff.mean():+.4f} ± {se:.4f} | {np.mean(diff > 0):.0%} "
            f"| {tall.mean():.4f} |"
        )


if __name__ == "__main__":
    main()
