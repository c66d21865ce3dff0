"""``factortopy compare-methods``: FactorTopy, its ablations and the baselines side by side.

Every method trains on the same inputs and split (:func:`~.inputs.training_inputs`)
with the same budget; see :mod:`napari_factortopy.app.compare_methods` for what is
measured and written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_compare_parser", "run_compare"]


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``compare-methods`` to a sub-parser set."""
    from .cli_data import DEVICE_HELP, add_dataset_arguments
    from .cli_train import _positive_float, _positive_int

    p = subparsers.add_parser(
        "compare-methods",
        help="FactorTopy, its ablations and the baselines on one split → table + model files",
        description="Train FactorTopy, its ablations (no topology, no layer/space/scale "
        "selection, 3 space samples) and the baselines (classToken, patchComp, GNet-style, "
        "per-layer ridge) on the same split with the same budget each; write "
        "comparison.csv/.md/.json and one .ftopy per method into --out.",
    )
    p.add_argument("--cache", help="feature cache (zarr folder; a phantom has its own)")
    p.add_argument("--phantom", help="a phantom subject folder (responses and subject)")
    add_dataset_arguments(p, required=False)
    p.add_argument("--subjects-dir", help="FreeSurfer subjects folder holding the dataset's mesh")
    p.add_argument("--allow-download", action="store_true", help="let nilearn fetch a mesh")
    p.add_argument(
        "--methods",
        default="factortopy,ablations,classToken,patchComp,gnet,ridge",
        help="comma-separated: factortopy, ablations (= no_topology, no_layer_sel, "
        "no_space_sel, no_scale_sel, multi_sample) or any of them, classToken, "
        "patchComp, gnet, ridge, baselines (the last four)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=60.0,
        help="wall-clock budget of each torch method (auto recipe; default 60)",
    )
    p.add_argument("--bottleneck", type=_positive_int, default=128, help="D (default 128)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="selector MLP width")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of every method")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument(
        "--ridge-components",
        type=_positive_int,
        default=256,
        help="ridge: PCA dimension per layer (fitted on the training images; default 256)",
    )
    p.add_argument(
        "--ridge-pool",
        type=_positive_int,
        default=2,
        help="ridge: local tokens average-pooled to an N×N grid (default 2)",
    )
    p.add_argument(
        "--ridge-backend",
        choices=("numpy", "torch"),
        default="numpy",
        help="himalaya backend of the ridge baseline, on the CPU (default numpy)",
    )
    p.set_defaults(func=run_compare)
    return p


def run_compare(args: argparse.Namespace) -> int:
    """Run ``factortopy compare-methods``; returns the exit status."""
    from ..core.runtime import resolve_device
    from ._progress import progress_bar
    from .compare_methods import CompareOptions, compare_methods, expand_methods
    from .inputs import training_inputs

    t0 = time.perf_counter()
    methods = expand_methods(args.methods)  # unknown names stop here, before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder")
    dev = resolve_device(args.device)
    ceiling = truth = None
    if args.phantom:
        from ..data.phantom import load_phantom

        source = {"phantom": args.phantom}
        ph = load_phantom(Path(args.phantom))
        ceiling, truth = ph.truth.get("ceiling"), ph.truth
    elif args.dataset:
        from .cli_data import dataset_from_args

        ds = dataset_from_args(args)
        source = {"dataset": ds}
        ceiling = ds.noise_ceiling
    else:
        raise ValueError("compare-methods needs --phantom DIR or --dataset PATH")
    inputs = training_inputs(
        args.cache,
        **source,
        split_seed=args.split_seed,
        device=dev,
        subjects_dir=args.subjects_dir,
        allow_download=args.allow_download,
    )
    for note in inputs.notes:
        print(note, file=sys.stderr)
    opts = CompareOptions(
        methods=methods,
        max_seconds=args.max_seconds,
        bottleneck=args.bottleneck,
        hidden=args.hidden,
        device=str(dev),
        seed=args.seed,
        ridge_pool=(args.ridge_pool, args.ridge_pool),
        ridge_components=args.ridge_components,
        ridge_backend=args.ridge_backend,
    )
    bar = None
    done = None
    try:
        for rec in compare_methods(inputs, out, opts, noise_ceiling=ceiling, truth=truth):
            if rec["kind"] == "method" and rec["status"] == "start":
                if bar is not None:
                    bar.close()
                bar = progress_bar(round(args.max_seconds), rec["method"], "s")
            elif rec["kind"] == "train" and rec["record"]["kind"] in ("step", "validation"):
                bar.n = min(round(rec["record"]["elapsed"]), bar.total)
                bar.refresh()
            elif rec["kind"] == "method" and rec["status"] == "failed":
                print(f"{rec['method']}: failed: {rec['row']['error']}", file=sys.stderr)
            elif rec["kind"] == "done":
                done = rec
    finally:
        if bar is not None:
            bar.close()
    print((out / "comparison.md").read_text(encoding="utf-8"))
    n_ok = sum(r.get("status") == "ok" for r in done["rows"])
    print(
        f"wrote {out / 'comparison.csv'}, comparison.md, comparison.json and {n_ok} model "
        f"files in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0 if n_ok == len(done["rows"]) else 1
