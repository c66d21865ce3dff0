"""``factortopy evaluate MODEL``: the permutation null of the score map with FDR control
and the per-layer split of R², on the model's test split (:mod:`.evaluate`); and the
lines ``factortopy info`` prints for an evaluated model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.metrics import format_number as _num
from ._progress import progress_bar

__all__ = ["add_evaluate_parser", "evaluation_lines", "run_evaluate"]


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``evaluate`` to a sub-parser set."""
    from .cli_data import add_dataset_arguments

    e = subparsers.add_parser(
        "evaluate",
        help="which vertices beat chance (permutation null, FDR) and which layer carries "
        "their R², on the test split",
        description="Predict the model's test images once and (1) test each vertex's score "
        "against a permutation null (the images' order of the predictions shuffled against "
        "the responses; one permutation shared by all vertices), with Benjamini-Hochberg "
        "FDR control across vertices; (2) split each vertex's test R² over the layers "
        "(product measure: the parts add up to R²). The results are written into the model "
        "file: napari and `factortopy figure` then grey the vertices that are not "
        "significant and offer the 'R² layer' map; `info` and the ROI table summarise them.",
    )
    e.add_argument("model", help="a .ftopy model file (FactorTopy or a phantom's truth)")
    e.add_argument("--out", help="write the evaluated model here (default: update MODEL in place)")
    e.add_argument("--phantom", help="the phantom folder (default: the model's own record)")
    e.add_argument("--cache", help="feature cache (default: the model's own record)")
    add_dataset_arguments(e, required=False)
    e.add_argument("--subjects-dir", help="FreeSurfer subjects folder (default $SUBJECTS_DIR)")
    e.add_argument("--allow-download", action="store_true", help="let nilearn fetch a mesh")
    e.add_argument(
        "--permutations",
        type=int,
        default=1000,
        help="shuffles of the null (default 1000; the smallest p-value is 1/(1+P))",
    )
    e.add_argument(
        "--alpha", type=float, default=0.05, help="FDR level of the greying (default 0.05)"
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the permutations")
    e.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda', 'auto'")
    e.set_defaults(func=run_evaluate)
    return e


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``factortopy evaluate``: 0 ok, 2 bad input (no model, data not the model's)."""
    from ..core.fitted_model import FittedModel
    from ..core.modelfile import ModelFileError
    from ..core.runtime import resolve_device
    from .cli_train import check_output_path
    from .evaluate import evaluate_model, evaluation_inputs

    if args.permutations < 19:
        raise ValueError(
            f"--permutations must be at least 19 (p can then reach 0.05); found "
            f"{args.permutations}"
        )
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must lie in (0, 1); found {args.alpha}")
    out = check_output_path(args.out or args.model)
    t0 = time.perf_counter()
    try:
        model = FittedModel.load(args.model)
    except ModelFileError as exc:
        raise ValueError(str(exc)) from None
    if model.kind not in ("factortopy", "phantom-truth"):
        raise ValueError(
            f"{args.model}: a {model.kind!r} file cannot be evaluated (it has no weights to run;"
            " evaluate each model, then group them)"
        )
    source = {}
    if args.phantom:
        source = {"phantom": args.phantom}
    elif args.dataset:
        from .cli_data import dataset_from_args

        source = {"dataset": dataset_from_args(args)}
    dev = resolve_device(args.device)
    inputs = evaluation_inputs(
        model,
        args.model,
        source=source,
        cache=args.cache,
        device=dev,
        subjects_dir=args.subjects_dir,
        allow_download=args.allow_download,
    )
    bar = None
    result = None
    try:
        for rec in evaluate_model(
            model, inputs, n_permutations=args.permutations, alpha=args.alpha,
            seed=args.seed, device=dev,
        ):  # fmt: skip
            if rec["kind"] == "predict":
                bar = bar or progress_bar(rec["total"], "test rows", "row")
                bar.n = rec["done"]
                bar.refresh()
            elif rec["kind"] == "done":
                result = rec
    finally:
        if bar is not None:
            bar.close()
    path = result["model"].save(out)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s: {result['line']}")
    ev = result["model"].summary["evaluation"]
    need = ev["p_min"] * ev["n_tested"] / args.alpha
    if need > 1:
        print(
            f"note: with {args.permutations} permutations no p-value is below "
            f"{ev['p_min']:.2g}; at FDR {args.alpha:g} a vertex can pass only with at least "
            f"{need:.0f} vertices at that p: raise --permutations for sparse effects",
            file=sys.stderr,
        )
    drift = ev.get("r2_recomputed_max_difference")
    if drift is not None and drift > 1e-3:
        print(
            f"warning: the recomputed test R² differs from the one in {Path(args.model).name}"
            f" by up to {drift:.3g}: are these the data it was trained on?",
            file=sys.stderr,
        )
    return 0


def evaluation_lines(m) -> list[str]:
    """``factortopy info``'s lines on ``summary["evaluation"]``; [] when not evaluated."""
    ev = (m.summary or {}).get("evaluation")
    if not ev:
        return []
    share = ev.get("share_significant")
    lines = [
        f"  significance {ev.get('n_significant')} of {ev.get('n_tested')} vertices at FDR "
        f"{_num(ev.get('alpha'), 'g')} ({_num(None if share is None else 100 * share, '.1f')} %; "
        f"{ev.get('n_significant_uncorrected')} at uncorrected p ≤ {_num(ev.get('alpha'), 'g')});"
        f" {ev.get('permutations')} permutations of {ev.get('test_images')} test images, "
        f"{ev.get('fdr')}; maps grey the rest",
    ]
    names = list(m.backbone.get("layer_names") or []) or [
        f"layer {i + 1}" for i in range(m.n_layers)
    ]
    split = ev.get("r2_split_mean") or []
    if split:
        top = sorted(range(len(split)), key=lambda i: -(split[i] or -1e9))[:3]
        parts = ", ".join(f"{names[i]} {_num(split[i], '.4f')}" for i in top)
        lines.append(
            f"  R² split    mean R² per layer, largest: {parts}; mean offset "
            f"{_num(ev.get('r2_offset_mean'), '.4f')}"
        )
    h = ev.get("hierarchy_r2")
    if h:
        lines.append(
            f"  slope (R²)  a={_num(h.get('slope'), '.3f')}, b={_num(h.get('intercept'), '.3f')}: "
            "layer position weighted by each layer's share of the vertex's R² (the "
            "selector's slope is below; it is pulled toward the middle by soft tails)"
        )
    rf = ev.get("rf")
    if rf:
        lines.append(
            f"  RF location standard error median {_num(rf.get('se_median'), '.3f')} (grid units, "
            f"image = 2; a lower bound); {rf.get('n_unlocated')} unlocated (≥ "
            f"{_num(rf.get('unlocated_se'), 'g')}), drawn dark in the space map"
        )
    rows = ev.get("roi") or []
    if rows:
        lines.append("  ROI         significant  R² mostly from (share)      RF SE  unlocated")
        for r in rows:
            sig, unl = r.get("share_significant"), r.get("share_unlocated")
            head = f"{r.get('r2_layer', '')} ({_num(r.get('r2_layer_share'), '.2f')})"
            lines.append(
                f"  {r['roi']:<10} {_num(None if sig is None else 100 * sig, '.0f'):>10} %  "
                f"{head:<24} {_num(r.get('rf_se_median'), '.3f'):>6}  "
                f"{_num(None if unl is None else 100 * unl, '.0f'):>7} %"
            )
    return lines
