"""``factortopy group MODEL… --out GROUP.ftopy``: several subjects' or seeds' models as
one group map (:func:`napari_factortopy.core.group.combine_models`), and the lines
``factortopy info`` prints for a group file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.metrics import format_number as _num

__all__ = ["add_group_parser", "group_lines", "run_group"]


def add_group_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``group`` to a sub-parser set."""
    g = subparsers.add_parser(
        "group",
        help="models of several subjects or seeds (one mesh, one backbone) → one group map",
        description="Combine FactorTopy models of several subjects (or seeds) fitted on one "
        "fsaverage mesh with one backbone into a group file: the mean of their layer "
        "weights, the share of models agreeing with the group's layer, the number of "
        "models per vertex (vertex sets may differ: their union is kept), the mean "
        "score, per-ROI numbers with their spread across models and the hierarchy slope "
        "with a bootstrap interval across models. napari, `factortopy info`, `figure` "
        "(maps layer, agreement, n) and the ROI table open it like a model.",
    )
    g.add_argument("models", nargs="+", help="two or more .ftopy model files")
    g.add_argument("--out", required=True, help="group file to write (.ftopy)")
    g.add_argument(
        "--score",
        default="r2_test",
        help="score summarised per ROI (default r2_test)",
    )
    g.add_argument(
        "--bootstrap",
        type=int,
        default=10_000,
        help="bootstrap resamples of the models for the slope interval (default 10000)",
    )
    g.set_defaults(func=run_group)
    return g


def run_group(args: argparse.Namespace) -> int:
    """Run ``factortopy group``: 0 ok, 2 bad input (a file that is no model, models of
    other meshes, backbones or methods; the message names the files)."""
    from ..core.fitted_model import FittedModel
    from ..core.group import combine_models
    from ..core.modelfile import ModelFileError
    from .cli_train import check_output_path

    if len(args.models) < 2:
        raise ValueError(f"a group needs at least 2 model files; found {len(args.models)}")
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be at least 100; found {args.bootstrap}")
    out = check_output_path(args.out)
    models = []
    for path in args.models:
        try:
            models.append(FittedModel.load(path))
        except ModelFileError as exc:
            raise ValueError(str(exc)) from None
    names = [Path(p).name if _unique_names(args.models) else str(p) for p in args.models]
    group = combine_models(models, names, score_key=args.score, n_boot=args.bootstrap)
    path = group.save(out)
    g = group.summary["group"]
    h = g["hierarchy"]
    print(
        f"wrote {path}: {g['n_models']} models, {g['n_union']} vertices "
        f"({g['n_all']} in every model); mean agreement {_num(g['agreement_mean'], '.2f')}; "
        f"hierarchy slope {_num(h['slope'], '.3f')} "
        f"[{_num(h['slope_lo'], '.3f')}, {_num(h['slope_hi'], '.3f')}]"
    )
    for member in g.get("members") or []:
        if flagged := _member_flags(member):
            print(f"factortopy group: warning: {flagged}", file=sys.stderr)
    if g["n_all"] < g["n_union"]:
        print(
            f"note: {g['n_union'] - g['n_all']} vertices are fitted by only some of the "
            "models; the 'n' map shows how many",
            file=sys.stderr,
        )
    return 0


def _member_flags(member: dict) -> str | None:
    """One member's name with what is wrong with it, e.g. ``"b.ftopy: NOT converged;
    DEGENERATE SELECTORS: …"``; None when nothing is."""
    flags = {"not_converged": "NOT converged", "failed": "FAILED"}
    parts = [flags[member["state"]]] if member["state"] in flags else []
    if member.get("degenerate"):
        parts.append(f"DEGENERATE SELECTORS: {member['degenerate']}")
    return f"{member['name']}: {'; '.join(parts)}" if parts else None


def _unique_names(paths) -> bool:
    names = [Path(p).name for p in paths]
    return len(set(names)) == len(names)


def group_lines(m) -> list[str]:
    """``factortopy info``'s lines on a group file (``summary["group"]``); [] otherwise."""
    g = (m.summary or {}).get("group")
    if not g:
        return []
    h = g.get("hierarchy") or {}
    level = round(100 * float(h.get("level") or 0.95))
    lines = [
        f"  group       {g['n_models']} models: {', '.join(g['models'])}",
        f"              {g.get('n_union')} vertices (union), {g.get('n_all')} in every model, "
        f"n per vertex {g.get('n_min')}..{g.get('n_max')}; mean agreement with the group's "
        f"layer {_num(g.get('agreement_mean'), '.2f')}",
        f"  slope       a={_num(h.get('slope'), '.3f')} ({level} % interval "
        f"{_num(h.get('slope_lo'), '.3f')}..{_num(h.get('slope_hi'), '.3f')}, bootstrap "
        f"across {h.get('n_models')} models; SD {_num(h.get('slope_sd'), '.3f')}), "
        f"b={_num(h.get('intercept'), '.3f')}",
    ]
    for member in g.get("members") or []:
        if flagged := _member_flags(member):
            lines.append(f"  member      {flagged}")
    rows = g.get("roi") or []
    if rows:
        key = g.get("score_key", "score")
        lines.append(f"  group ROI   models  {key} mean±SD   layer position ±SD  agreement  layer")
        for r in rows:
            lines.append(
                f"  {r['roi']:<10} {r['n_models']:>6}  "
                f"{_num(r.get('score_mean'), '.3f'):>6}±{_num(r.get('score_sd'), '.3f'):<6}  "
                f"{_num(r.get('layer_position_mean'), '.3f'):>6}±"
                f"{_num(r.get('layer_position_sd'), '.3f'):<10}  "
                f"{_num(r.get('agreement'), '.2f'):>9}  {r.get('layer', '')}"
            )
    return lines
