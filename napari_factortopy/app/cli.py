"""The ``factortopy`` command: FactorTopy from features to maps, on the command line.

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

from ..core.metrics import format_number as _num
from ._progress import progress_bar

__all__ = ["main"]


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
                    "extract", progress_bar(rec["total"], "features", "img")
                )
                bar.n = rec["done"]
                bar.refresh()
            elif stage == "train":
                inner = rec["record"]
                bar = bars.get("train") or bars.setdefault(
                    "train", progress_bar(round(opts.train_seconds), "train", "s")
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


# --------------------------------------------------------------------- info


def _method(m) -> str:
    """What kind of mapping a model file holds: FactorTopy, an ablation or a baseline."""
    from ..core.ablations import ablation_name

    if m.kind == "baseline":
        method = (m.extra.get("baseline") or {}).get("method", "?")
        maps = (m.extra.get("baseline") or {}).get("maps")
        shown = f" (real maps: {', '.join(maps)}; the others are fillers)" if maps else ""
        return f"baseline {method}, display only{shown}"
    return ablation_name(m.config)


def info_lines(m, path: str) -> list[str]:
    """``factortopy info``'s lines for a loaded model (also used by tests)."""
    from ..core.selector_check import model_selector_check
    from .cli_evaluate import evaluation_lines
    from .cli_group import group_lines

    check = model_selector_check(m)  # once: the selector lines and the slope's warnings
    lines = _model_lines(m, path, check) + _score_lines(m) + _training_lines(m)
    lines += group_lines(m) + evaluation_lines(m)
    return lines + _map_lines(m, None if check is None else check["line"])


def _model_lines(m, path: str, check: dict | None) -> list[str]:
    """The file, its kind, backbone, model, subject, import record, state and split."""
    names = list(m.backbone.get("layer_names") or [])
    s = m.summary
    conv = s.get("convergence") or {}
    lines = [
        f"{path}",
        f"  kind        {m.kind}",
        f"  backbone    {m.backbone.get('name', '?')}: {m.n_layers} layers "
        f"({', '.join(names[:4])}{', …' if len(names) > 4 else ''})",
        f"  model       {_method(m)}: D={m.config.get('bottleneck')}, grid={m.config.get('grid')}",
        f"  subject     {m.mesh}: {m.n_vertices} vertices ({m.n_lh} lh, "
        f"{m.n_vertices - m.n_lh} rh)",
    ]
    imported = m.extra.get("imported")
    if isinstance(imported, dict):
        lines.append(
            f"  imported    {imported.get('source', '?')}: {imported.get('format', '?')} "
            f"checkpoint {imported.get('checkpoint', '?')} (sha256 "
            f"{str(imported.get('sha256', '?'))[:12]}…), licence {imported.get('licence', '?')}"
        )
        lines.append(f"  vertices    {imported.get('vertices', '?')}")
    if conv.get("line"):
        lines.append(f"  state       {conv['line']}")
    elif m.kind == "model" and "steps" in s:
        lines.append("  state       unknown (written by an older version: no convergence record)")
    lines += _selector_lines(check)
    if m.split:
        lines.append(
            f"  split       seed {m.split.get('seed')}: "
            f"{len(m.split.get('train', []))}/{len(m.split.get('val', []))}/"
            f"{len(m.split.get('test', []))} train/val/test images"
        )
    return lines


def _selector_lines(check: dict | None) -> list[str]:
    """How decided the selectors are, and DEGENERATE with why when they chose nothing
    (``check``: :func:`~napari_factortopy.core.selector_check.model_selector_check`)."""
    if check is None or check["vertices"] == 0:
        return []
    parts = []
    if check["layer_confidence"] is not None:
        parts.append(
            f"mean layer confidence {check['layer_confidence']:.3f}; argmax layer "
            f"{check['top_layer']} on {100 * check['top_layer_share']:.0f} % of vertices"
        )
    if check["space_spread"] is not None:
        parts.append(f"space spread {check['space_spread']:.3f}")
    lines = [f"  selectors   {'; '.join(parts)}"] if parts else []
    if check["line"]:
        lines.append(f"  selectors   DEGENERATE: {check['line']}")
    return lines


def _score_lines(m) -> list[str]:
    """Test R² and r, and the noise-normalised score (or why there is none)."""
    s = m.summary
    lines = []
    nc = s.get("noise_ceiling")
    if "r2_test_mean" in s:
        raw = "" if nc else "; raw, no noise ceiling known"
        lines.append(
            f"  test R²     {_num(s.get('r2_test_mean'))} (mean{raw}), Pearson r "
            f"{_num(s.get('r_test_mean'))}"
        )
    if nc:
        lines.append(
            f"  challenge   noise-normalised score {_num(s.get('nc_test_mean'), '.2f')} % (mean "
            f"over {nc.get('vertices', '?')} vertices with a ceiling; r < 0 counts 0, capped "
            f"at 100); NC mean {_num(nc.get('mean_percent'), '.1f')} % from {nc['source']}"
        )
    elif "r_test" in m.scores:
        lines.append(
            "  challenge   no noise ceiling known, so no noise-normalised score; attach one "
            "with `factortopy score MODEL --noise-ceiling NC.npy`"
        )
    return lines


def _training_lines(m) -> list[str]:
    """How it was trained: steps, recipe, calibration, seed ensemble."""
    s = m.summary
    lines = []
    if "steps" in s:
        from ..core.config import recipe_settings

        recipe = (m.extra.get("recipe") or {}).get("name", "paper")
        tc = dict(m.extra.get("train_config") or {}, recipe=recipe)
        lines.append(
            f"  training    {s['steps']} steps, {s.get('epochs', '?')} epochs in "
            f"{_num(s.get('train_seconds'), '.0f')} s on {s.get('device', '?')}; soup of "
            f"{len(s.get('soup_members', []))}{'; DIVERGED' if s.get('diverged') else ''}"
        )
        lines.append(f"  recipe      {recipe}: {recipe_settings(tc)}")
        replans = (m.extra.get("recipe") or {}).get("replans") or []
        if replans:
            first = (m.extra.get("recipe") or {}).get("steps_per_epoch")
            path = " → ".join(str(r["steps_per_epoch"]) for r in replans)
            drift = sum(r.get("why") == "drift" for r in replans)
            lines.append(
                f"  re-planned  {len(replans)} times ({drift} on a step-time drift): "
                f"validation every {first if first is not None else '?'} → {path} steps"
            )
    cal = s.get("calibration")
    if isinstance(cal, dict):
        from ..core.convergence import calibration_line

        lines.append(f"  calibration {calibration_line(cal)}")
    ens = s.get("ensemble")
    if ens:
        lines.append(
            f"  ensemble    {len(ens['seeds'])} seeds {ens['seeds']}: maps are their mean, "
            f"weights from seed {ens['weights_from_seed']}; mean layer agreement "
            f"{_num(ens.get('layer_agreement_mean'), '.2f')}"
        )
        if ens.get("roi"):
            lines.append("  consistency ROI         agreement  space spread  scale SD")
            for row in ens["roi"]:
                lines.append(
                    f"              {row['roi']:<10} {_num(row['layer_agreement'], '.2f'):>9}  "
                    f"{_num(row['space_spread'], '.3f'):>12}  {_num(row['scale_sd'], '.3f'):>8}"
                )
    return lines


def _map_lines(m, degenerate: str | None) -> list[str]:
    """The maps: non-finite selectors, the layer histogram, confidence, per-ROI lines,
    the hierarchy slope and its interval (``degenerate``: why the selectors are
    degenerate, or None)."""
    from ..core.analyses import confidence, layer_argmax

    lines = []
    finite = np.isfinite(m.layer).all(1)
    if not finite.all():
        lines.append(f"  missing     {int((~finite).sum())} vertices have non-finite selectors")
    am = layer_argmax(m.layer)
    conf = confidence(m.layer)
    lines.append(
        "  layers      argmax histogram: "
        + " ".join(str(int(c)) for c in np.bincount(am[finite], minlength=m.n_layers))
    )
    lines.append(
        f"  confidence  mean {_num(np.nanmean(conf[finite]) if finite.any() else None, '.3f')}"
    )
    real = None  # which selector maps are real (a baseline's others are fillers)
    if m.kind == "baseline":
        real = set((m.extra.get("baseline") or {}).get("maps") or ())
    if m.roi_names:
        lines += _roi_lines(m, finite, am, real, conf)
    from ..core.slope_range import model_slope_or_reason
    from ..scene.tables import slope_line

    sr = model_slope_or_reason(m)  # the line is the ROI table's and the figure's
    if isinstance(sr, str):
        lines.append(f"  hierarchy   {slope_line(m, found=sr, degenerate=degenerate)}")
    else:  # the paper's numbers first: slope, intercept, top
        lines.append(
            f"  hierarchy   slope a={sr.slope:.3f}, b={sr.intercept:.3f}, "
            f"a+b={sr.slope + sr.intercept:.3f}"
        )
        lines.append(f"              {slope_line(m, found=sr, degenerate=degenerate)}")
    return lines


def _roi_lines(
    m, finite: np.ndarray, am: np.ndarray, real: set | None, conf: np.ndarray
) -> list[str]:
    """The per-ROI rows of ``info``: vertices, mean test R² (and noise-normalised score
    when the model has a ceiling), modal argmax layer (1-based), mean scale, mean layer
    confidence (``conf``, shape (V,)); one pass over V; then what per-ROI confidence can
    say (:func:`~napari_factortopy.core.analyses.confidence_note`)."""
    from ..core.analyses import confidence_note

    r2 = m.scores.get("r2_test")
    nc = m.scores.get("nc_test") if m.summary.get("noise_ceiling") else None
    n_roi = len(m.roi_names) + 1
    roi = np.asarray(m.roi, np.int64)
    fit = roi[finite]
    counts = np.bincount(fit, minlength=n_roi)

    def means(values) -> np.ndarray:
        v = np.asarray(values, np.float64)[finite]
        ok = np.isfinite(v)
        tot = np.bincount(fit[ok], weights=v[ok], minlength=n_roi)
        num = np.bincount(fit[ok], minlength=n_roi)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(num > 0, tot / np.maximum(num, 1), np.nan)

    layer_votes = np.zeros((n_roi, m.n_layers), np.int64)
    np.add.at(layer_votes, (fit, am[finite]), 1)
    r2_mean = means(r2) if r2 is not None else None
    nc_mean = means(nc) if nc is not None else None
    scale_mean = means(m.scale)
    head = "  ROI           n      R²" + ("  NC score %" if nc is not None else "")
    conf_mean = means(conf)
    has_layer = real is None or "layer" in real
    lines = [head + "  argmax layer  scale  confidence"]
    for k, name in enumerate(m.roi_names, start=1):
        if not counts[k]:
            continue
        r2s = _num(r2_mean[k]) if r2_mean is not None else "-"
        ncs = f"  {_num(nc_mean[k], '.1f'):>10}" if nc_mean is not None else ""
        # 1-based, as the layer slider, the figures' legends and --layer count layers
        mode = int(layer_votes[k].argmax()) + 1 if has_layer else "-"
        scale = _num(scale_mean[k], ".2f") if real is None or "scale" in real else "-"
        cs = _num(conf_mean[k], ".2f") if has_layer else "-"
        lines.append(
            f"  {name:<10} {int(counts[k]):>6}  {r2s:>6}{ncs}  {mode:>12}  {scale:>5}  {cs:>10}"
        )
    note = confidence_note(m.kind) if has_layer and len(lines) > 2 else ""
    if note:  # two ROIs or more: their confidences invite a comparison
        import textwrap

        lines += textwrap.wrap(note, 88, initial_indent="  (", subsequent_indent="   ")
        lines[-1] += ")"
    return lines


def run_info(args: argparse.Namespace) -> int:
    from ..core.fitted_model import FittedModel

    m = FittedModel.load(args.model)
    print("\n".join(info_lines(m, args.model)))
    if args.roi_csv:
        write_roi_table(m, args.model, args.roi_csv, args.score)
    return 0


def write_roi_table(m, source: str, out: str, score_key: str | None) -> None:
    """``info --roi-csv``: the ROI table panel's table and sidecar
    (:func:`~napari_factortopy.scene.tables.write_csv`), without a display."""
    from ..scene.tables import roi_rows, sidecar_path, write_csv

    if score_key is not None and score_key not in m.scores:
        known = ", ".join(m.scores) or "none"
        raise ValueError(f"{source}: no score {score_key!r} in the model (it has: {known})")
    rows = roi_rows(m, score_key)
    if not rows:
        raise ValueError(f"{source}: the model has no ROI with vertices: no ROI table to write")
    path = write_csv(rows, out, score_key, model=m, source=source)
    print(f"wrote {path} ({len(rows)} ROIs) and {sidecar_path(path)} (what the columns hold)")


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="factortopy", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--threads", type=_threads, default=None, help=THREADS_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="phantom subject → features → training → maps, on CPU")
    d.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    d.add_argument("--no-gui", action="store_true", help="do not open napari at the end")
    from .demo import DemoOptions

    dflt = DemoOptions()
    d.add_argument(
        "--n-vertices",
        type=int,
        default=dflt.n_vertices,
        help=f"phantom vertices, both hemispheres (default {dflt.n_vertices})",
    )
    d.add_argument(
        "--n-images",
        type=int,
        default=dflt.n_images,
        help=f"phantom stimuli (default {dflt.n_images})",
    )
    d.add_argument(
        "--train-seconds",
        type=float,
        default=dflt.train_seconds,
        help=f"wall-clock training budget (default {dflt.train_seconds:g} s)",
    )
    from .cli_data import DEVICE_HELP

    d.add_argument("--device", default="auto", help=DEVICE_HELP)
    d.add_argument(
        "--seed", type=int, default=0, help="seed of the phantom, the split and training"
    )
    d.set_defaults(func=run_demo)

    from .cli_train import add_train_parser

    add_train_parser(sub)

    i = sub.add_parser("info", help="a readable summary of a model file")
    i.add_argument("model", help="a .ftopy model file")
    i.add_argument(
        "--roi-csv",
        metavar="CSV",
        help="also write the per-ROI table (the napari ROI table's) as CSV, with a .json "
        "sidecar beside it: what each column holds, the slope line, caveats, warnings",
    )
    i.add_argument("--score", help="the score averaged in the CSV (default: r2_test, else r_test)")
    i.set_defaults(func=run_info)

    from .cli_data import add_cache_parser, add_extract_parser
    from .cli_figure import add_figure_parser

    add_extract_parser(sub)
    add_cache_parser(sub)
    add_figure_parser(sub)
    from .cli_compare import add_compare_parser

    add_compare_parser(sub)
    from .cli_score import add_score_parser

    add_score_parser(sub)
    from .cli_evaluate import add_evaluate_parser
    from .cli_group import add_group_parser

    add_group_parser(sub)
    add_evaluate_parser(sub)
    from .cli_sweep import add_sweep_parser

    add_sweep_parser(sub)
    from .cli_official import add_import_official_parser
    from .cli_predict import add_predict_parser

    add_import_official_parser(sub)
    add_predict_parser(sub)
    _debug_after_subcommands(p)
    return p


THREADS_HELP = (
    "CPU threads torch may use (default: all cores); on a shared workstation give fewer: "
    "two jobs each using every core slow each other down 3-10x"
)


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads takes a whole number >= 1; found {text!r}")
    return n


def apply_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads (None: leave its default, every core).
    torch is imported only when a number is given (``info`` stays torch-free)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(int(threads))


def _debug_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--threads`` after the sub-command too (``factortopy train …
    --debug``), at every level of sub-commands; not given there, they leave the
    top-level values alone."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: list = []
            for sp in action.choices.values():
                if any(sp is x for x in seen):
                    continue
                seen.append(sp)
                if "--debug" not in sp._option_string_actions:
                    sp.add_argument(
                        "--debug",
                        action="store_true",
                        default=argparse.SUPPRESS,
                        help="show the full traceback of an error",
                    )
                if "--threads" not in sp._option_string_actions:
                    sp.add_argument(
                        "--threads", type=_threads, default=argparse.SUPPRESS, help=THREADS_HELP
                    )
                _debug_after_subcommands(sp)


#: Exit statuses: 0 ok, 2 usage or bad input, 1 a failure at run time.
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run ``factortopy``; returns the exit status.

    One convention for every subcommand: 0 ok; 2 for usage errors and bad input (a
    file that is not what was expected, options that do not fit together); 1 for a
    failure at run time (divergence, a full disk, a crash). No traceback reaches the
    user without ``--debug``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for worker processes
    try:
        apply_threads(args.threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"factortopy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        bad_input = isinstance(exc, ValueError | FileNotFoundError | NotADirectoryError)
        kind = "error" if bad_input else f"error ({type(exc).__name__})"
        print(f"factortopy {args.command}: {kind}: {exc}", file=sys.stderr)
        if not bad_input:
            print("  (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
