"""Is a fitted model's layer confidence determined by the data? (issue 8)

For a model trained on a phantom (``bench/bench_recovery.py`` writes them), the layer
weights are re-tempered, ``softmax(τ · log π)``, the readout is refitted per vertex by
ridge on the training images (λ chosen on validation from a small grid, the same for
every τ), and the validation R² is printed beside the mean confidence, the hierarchy
slope and the truth's. The last row plugs in the truth's own layer weights. Written
independently of ``core/calibration.py`` (double precision, all images at once): it
is the measurement that motivated that step, and a check of it.

    python bench/bench_confidence_profile.py --work WORK --seeds 11 12 13

reads ``WORK/model-S-t0.ftopy`` and ``WORK/phantom-S`` for each seed S.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

TAUS = (1.0, 0.5, 1.5, 2.0, 3.0, 5.0, 20.0)
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def profile(model_path: Path, phantom_root: Path) -> list[str]:
    from napari_factortopy.app.recovery import recovery_metrics
    from napari_factortopy.core.analyses import confidence
    from napari_factortopy.core.feature_source import feature_source
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.model import Selectors
    from napari_factortopy.data.cache import FeatureCache
    from napari_factortopy.data.phantom import load_phantom

    fm = FittedModel.load(model_path)
    ph = load_phantom(phantom_root)
    mod = fm.to_module().eval()
    tr, va = np.asarray(fm.split["train"]), np.asarray(fm.split["val"])
    src = feature_source(FeatureCache.open(ph.root / "features.zarr"), np.concatenate([tr, va]))
    y = ph.responses
    with torch.no_grad():
        base = mod.selectors()
    logits = torch.log(base.layer.clamp_min(1e-12))

    def feats(sel, idx):
        out = []
        for i in range(0, len(idx), 200):
            loc, glo = src.get(idx[i : i + 200])
            with torch.no_grad():
                out.append(mod.select([x.float() for x in loc], [x.float() for x in glo], sel))
        return torch.cat(out, 1).double()  # (V, n, D)

    def r2(pred, obs):
        return 1 - ((obs - pred) ** 2).sum(0) / ((obs - obs.mean(0)) ** 2).sum(0)

    def refit_score(sel):
        ft, fv = feats(sel, tr), feats(sel, va)
        yt, yv = torch.from_numpy(y[tr]).double(), torch.from_numpy(y[va]).double()
        mt, my = ft.mean(1, keepdim=True), yt.mean(0)
        fc = ft - mt
        g = fc.transpose(1, 2) @ fc
        c = fc.transpose(1, 2) @ (yt - my).T[:, :, None]
        s = g.diagonal(dim1=1, dim2=2).mean(1)[:, None, None]
        eye = torch.eye(g.shape[1], dtype=g.dtype)
        best = max(
            (r2(((fv - mt) @ torch.linalg.solve(g + lam * s * eye, c))[..., 0].T + my, yv)
             .mean().item(), lam)
            for lam in RIDGES
        )  # fmt: skip
        return best

    rows = ["| layer weights | val R² (readout refitted) | ridge λ | mean confidence | slope |",
            "|---|---|---|---|---|"]  # fmt: skip

    def row(name, layer):
        sel = Selectors(space=base.space, layer=layer, scale=base.scale)
        score, lam = refit_score(sel)
        lay = layer.numpy()
        m = recovery_metrics(lay, base.space.numpy(), base.scale.numpy(), ph.truth,
                             ph.surface.roi, fm.roi_names)  # fmt: skip
        slope = f"{m['hierarchy_slope']:.3f} (truth {m['hierarchy_slope_truth']:.3f})"
        rows.append(f"| {name} | {score:.4f} | {lam:g} | {confidence(lay).mean():.3f} | {slope} |")

    for tau in TAUS:
        row(f"fitted, τ = {tau:g}", torch.softmax(tau * logits, -1))
    row("the truth's", torch.from_numpy(ph.truth["layer"]).float())
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--model", default="model-{seed}-t0.ftopy", help="file name pattern")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for seed in args.seeds:
        model = args.work / args.model.format(seed=seed)
        print(f"\n### phantom {seed}: {model}\n")
        print("\n".join(profile(model, args.work / f"phantom-{seed}")), flush=True)


if __name__ == "__main__":
    main()
