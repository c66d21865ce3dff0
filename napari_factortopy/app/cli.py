"""The ``factortopy`` command: demo, train, info (and extract, figure).

Every subcommand drives the same core generators as the napari widgets, with a
tqdm progress bar. torch, timm and open_clip are imported inside functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _progress(total: float, desc: str, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True, file=sys.stderr)


def _drain_training(gen, seconds: float | None, steps_per_epoch: int, max_epochs: int):
    """Consume a fit() generator with a progress bar; return the FittedModel."""
    total = seconds if seconds else steps_per_epoch * max_epochs
    bar = _progress(round(total), "train", "s" if seconds else "step")
    fitted = None
    try:
        for rec in gen:
            kind = rec["kind"]
            if kind in ("step", "validation"):
                bar.n = round(rec["elapsed"]) if seconds else rec["step"]
                if kind == "step":
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", epoch=rec["epoch"])
                else:
                    bar.set_postfix(
                        val_r2=f"{rec['val_score']:.4f}",
                        best=f"{rec['best_score']:.4f}",
                        epoch=rec["epoch"],
                    )
                bar.refresh()
            elif kind == "diverged":
                bar.write(
                    f"training diverged at step {rec['step']} (loss {rec['loss']}); "
                    "stopping; the best checkpoints kept so far (if any) make the model"
                )
            elif kind == "soup":
                bar.write(
                    f"greedy soup of checkpoints {rec['members']}: "
                    f"validation R² {rec['val_score']:.4f}"
                )
            elif kind == "fitted":
                fitted = rec["model"]
    finally:
        bar.close()
    return fitted


# --------------------------------------------------------------------- demo
def run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo_pipeline

    out = Path(args.out)
    opts = DemoOptions(
        n_vertices=args.n_vertices,
        n_images=args.n_images,
        train_seconds=args.train_seconds,
        device=args.device,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    bars: dict = {}
    recovery = None
    try:
        for rec in run_demo_pipeline(out, opts):
            stage = rec.get("stage")
            if stage == "extract":
                bar = bars.get("extract") or bars.setdefault(
                    "extract", _progress(rec["total"], "features", "img")
                )
                bar.n = rec["done"]
                bar.refresh()
            elif stage == "train":
                inner = rec["record"]
                bar = bars.get("train") or bars.setdefault(
                    "train", _progress(round(opts.train_seconds), "train", "s")
                )
                if inner["kind"] in ("step", "validation"):
                    bar.n = min(round(inner["elapsed"]), bar.total)
                    if inner["kind"] == "validation":
                        bar.set_postfix(val_r2=f"{inner['val_score']:.3f}", epoch=inner["epoch"])
                    bar.refresh()
            elif stage == "message":
                print(rec["text"], file=sys.stderr)
            elif stage == "done":
                recovery = rec["recovery"]
    finally:
        for bar in bars.values():
            bar.close()
    print(json.dumps(recovery, indent=2))
    print(
        f"wrote {out / 'model.ftopy'}, {out / 'layer_map.png'}, {out / 'recovery.json'} "
        f"in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    if not args.no_gui:
        if _has_display():
            _open_in_napari(out / "model.ftopy")
        else:
            print(
                f"no display: skipping the viewer; open the maps later with "
                f"`napari {out / 'model.ftopy'}`",
                file=sys.stderr,
            )
    return 0


def _has_display() -> bool:
    import os

    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_in_napari(path: Path) -> None:
    """napari showing the model (in 3-D, as the reader does) with Brain maps docked.

    Runs napari's own launcher in a child process, so the command line never imports
    Qt (the app layer stays GUI-free).
    """
    import subprocess

    cmd = [sys.executable, "-m", "napari", str(path), "--plugin", "napari-factortopy"]
    subprocess.call([*cmd, "--with", "napari-factortopy", "Brain maps"])


# -------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    from ..core.config import TrainConfig
    from ..core.estimator import fit
    from ..core.runtime import resolve_device
    from .inputs import training_inputs

    dev = resolve_device(args.device)
    if args.phantom:
        source = {"phantom": args.phantom}
    elif args.dataset:
        from .cli_data import dataset_from_args

        source = {"dataset": dataset_from_args(args)}
    else:
        raise ValueError("train needs --phantom DIR or --dataset PATH")
    inputs = training_inputs(
        args.cache,
        **source,
        split_seed=args.split_seed,
        device=dev,
        memory_limit=None if args.memory_limit is None else int(args.memory_limit * 2**30),
        subjects_dir=args.subjects_dir,
        allow_download=args.allow_download,
    )
    for note in inputs.notes:
        print(note, file=sys.stderr)
    tcfg = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        steps_per_epoch=args.steps_per_epoch,
        max_epochs=args.max_epochs,
        patience=args.patience,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    gen = fit(
        inputs.features,
        inputs.responses,
        inputs.subject,
        inputs.split,
        config=inputs.model_config(bottleneck=args.bottleneck),
        train_config=tcfg,
        backbone=inputs.backbone,
        device=dev,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        seed=args.seed,
        extra={"dataset": inputs.dataset},
    )
    fitted = _drain_training(gen, args.max_seconds, tcfg.steps_per_epoch, tcfg.max_epochs)
    path = fitted.save(args.out)
    print(
        f"wrote {path}: test R² {fitted.summary['r2_test_mean']:.4f} "
        f"(mean over {fitted.n_vertices} vertices)"
    )
    return 0


# --------------------------------------------------------------------- info
def run_info(args: argparse.Namespace) -> int:
    from ..core.analyses import confidence, hierarchy_levels, hierarchy_slope, layer_argmax
    from ..core.fitted_model import FittedModel

    m = FittedModel.load(args.model)
    lines = [
        f"{args.model}",
        f"  kind        {m.kind}",
        f"  backbone    {m.backbone.get('name', '?')}: {m.n_layers} layers "
        f"({', '.join(m.backbone.get('layer_names', [])[:4])}"
        f"{', …' if len(m.backbone.get('layer_names', [])) > 4 else ''})",
        f"  model       D={m.config.get('bottleneck')}, grid={m.config.get('grid')}",
        f"  subject     {m.mesh}: {m.n_vertices} vertices ({m.n_lh} lh, "
        f"{m.n_vertices - m.n_lh} rh)",
    ]
    if m.split:
        lines.append(
            f"  split       seed {m.split.get('seed')}: "
            f"{len(m.split.get('train', []))}/{len(m.split.get('val', []))}/"
            f"{len(m.split.get('test', []))} train/val/test images"
        )
    s = m.summary
    if "r2_test_mean" in s:
        lines.append(
            f"  test R²     {s['r2_test_mean']:.4f} (mean), Pearson r "
            f"{s.get('r_test_mean', float('nan')):.4f}"
        )
    if "steps" in s:
        lines.append(
            f"  training    {s['steps']} steps in {s.get('train_seconds', 0):.0f} s on "
            f"{s.get('device', '?')}; soup of {len(s.get('soup_members', []))}"
        )
    am = layer_argmax(m.layer)
    conf = confidence(m.layer)
    lines.append(
        "  layers      argmax histogram: "
        + " ".join(str(int(c)) for c in np.bincount(am, minlength=m.n_layers))
    )
    lines.append(f"  confidence  mean {conf.mean():.3f}")
    if m.roi_names:
        lines.append("  ROI         n    R²      argmax layer  scale")
        r2 = m.scores.get("r2_test")
        for k, name in enumerate(m.roi_names, start=1):
            msk = m.roi == k
            if not msk.any():
                continue
            r2s = f"{np.nanmean(r2[msk]):.4f}" if r2 is not None else "  -   "
            mode = int(np.bincount(am[msk]).argmax())
            lines.append(
                f"  {name:<10} {int(msk.sum()):>4} {r2s}  {mode:>12}  {m.scale[msk].mean():.2f}"
            )
        levels = hierarchy_levels(m.roi, m.roi_names)
        try:
            hs = hierarchy_slope(m.layer, levels)
            lines.append(
                f"  hierarchy   slope a={hs.slope:.3f}, b={hs.intercept:.3f}, a+b={hs.top:.3f}"
            )
        except ValueError:
            pass
    print("\n".join(lines))
    return 0


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="factortopy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="phantom subject → features → training → maps, on CPU")
    d.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    d.add_argument("--no-gui", action="store_true", help="do not open napari at the end")
    from .demo import DemoOptions

    dflt = DemoOptions()
    d.add_argument("--n-vertices", type=int, default=dflt.n_vertices)
    d.add_argument("--n-images", type=int, default=dflt.n_images)
    d.add_argument(
        "--train-seconds",
        type=float,
        default=dflt.train_seconds,
        help=f"wall-clock training budget (default {dflt.train_seconds:g} s)",
    )
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=run_demo)

    t = sub.add_parser("train", help="feature cache + responses → model file")
    t.add_argument("--cache", required=True, help="feature cache (zarr folder)")
    t.add_argument("--phantom", help="a phantom subject folder (responses and subject)")
    from .cli_data import add_dataset_arguments

    add_dataset_arguments(t, required=False)
    t.add_argument(
        "--subjects-dir",
        help="FreeSurfer subjects folder holding the dataset's mesh (default $SUBJECTS_DIR)",
    )
    t.add_argument(
        "--allow-download",
        action="store_true",
        help="let nilearn download a missing fsaverage mesh (off: fail naming what is missing)",
    )
    t.add_argument("--out", required=True, help="model file to write (.ftopy)")
    t.add_argument("--device", default="auto")
    t.add_argument("--batch-size", type=int, default=8, help="images per step (paper: 8)")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (paper: 1e-3)")
    t.add_argument("--bottleneck", type=int, default=128, help="channels D (paper: 128)")
    t.add_argument(
        "--steps-per-epoch", type=int, default=1000, help="steps between validations (1000)"
    )
    t.add_argument("--max-epochs", type=int, default=1000, help="hard cap on epochs")
    t.add_argument(
        "--patience", type=int, default=20, help="epochs without improvement before stopping"
    )
    t.add_argument(
        "--max-seconds", type=float, default=None, help="wall-clock budget (stops at a validation)"
    )
    t.add_argument(
        "--memory-limit",
        type=float,
        default=None,
        help="GiB the features may take on the device (default: automatic)",
    )
    t.add_argument("--checkpoints", help="checkpoint folder (enables --resume)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoints")
    t.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 image split")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    t.set_defaults(func=run_train)

    i = sub.add_parser("info", help="a readable summary of a model file")
    i.add_argument("model")
    i.set_defaults(func=run_info)

    for mod, adder, runner in (
        (".cli_data", "add_extract_parser", "run_extract"),
        (".cli_figure", "add_figure_parser", "run_figure"),
    ):
        try:
            import importlib

            m = importlib.import_module(mod, __package__)
        except ImportError:
            continue
        sp = getattr(m, adder)(sub)
        sp.set_defaults(func=getattr(m, runner))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # our own errors (TrainingDiverged, ExtractionError, …) carry the message a user
        # needs; anything else from elsewhere keeps its traceback
        if isinstance(exc, RuntimeError) and not type(exc).__module__.startswith(
            "napari_factortopy"
        ):
            raise
        print(f"factortopy {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
