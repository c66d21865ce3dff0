"""``factortopy sweep``: run, follow, index and draw a sweep (see docs/SWEEPS.md).

::

    factortopy sweep SWEEP.toml --executor local|slurm   # submit what is missing/failed
    factortopy sweep status SWEEP.toml                   # done / running / failed (+ logs)
    factortopy sweep collect SWEEP.toml                  # write OUT/results.csv
    factortopy sweep gallery SWEEP --map layer --view ventral --out F.png

``SWEEP`` is the TOML file or the sweep's output folder. ``--status`` after the file is
the same as ``status``. Exit status: 0 ok; 2 bad input (a TOML line named); 1 a job
failed (``run`` with the local executor, ``status`` when any job failed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_sweep_parser", "run_sweep_command"]

ACTIONS = ("run", "status", "collect", "gallery")


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to a sub-parser set."""
    from .cli_figure import MAP_NAMES as MAPS
    from .cli_figure import VIEW_NAMES as VIEWS

    p = subparsers.add_parser(
        "sweep",
        help="datasets × backbones × recipes × seeds as cluster jobs; status, index, gallery",
        description="Plan and submit a sweep described by a TOML file (docs/SWEEPS.md): "
        "feature extraction as job arrays over chunk-aligned ranges of each cache, "
        "training jobs after them, then a collection step writing results.csv. Rerunning "
        "submits only what is missing or failed. Actions: run (default), status, "
        "collect, gallery.",
        usage="factortopy sweep [run|status|collect|gallery] SWEEP [options]",
    )
    p.add_argument("words", nargs="+", metavar="[ACTION] SWEEP", help="action and sweep")
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="run: 'local' (jobs on this machine) or 'slurm' (submitit; default local)",
    )
    p.add_argument("--status", action="store_true", help="same as the action 'status'")
    p.add_argument(
        "--max-parallel", type=int, default=None, help="local: jobs at once (default [local])"
    )
    p.add_argument("--wait", action="store_true", help="slurm: wait until every job ended")
    p.add_argument("--dry-run", action="store_true", help="check and list what would be submitted")
    g = p.add_argument_group("gallery")
    g.add_argument("--map", default="layer", choices=MAPS, help="map drawn (default layer)")
    g.add_argument("--view", default="ventral", choices=VIEWS, help="view (default ventral)")
    g.add_argument("--sort", default=None, help="index column to order the grid by")
    g.add_argument("--descending", action="store_true", help="with --sort: largest first")
    g.add_argument("--size", type=int, default=220, help="pixels per brain")
    g.add_argument(
        "--columns", type=int, default=None, help="brains per row (default: about square)"
    )
    g.add_argument("--out", default=None, help="gallery PNG (default SWEEP-OUT/gallery.png)")
    p.set_defaults(func=run_sweep_command)
    return p


def run_sweep_command(args: argparse.Namespace) -> int:
    from . import sweep as sw

    words = list(args.words)
    action = words.pop(0) if words[0] in ACTIONS and len(words) > 1 else "run"
    if len(words) != 1:
        raise ValueError(
            f"expected `factortopy sweep [{'|'.join(ACTIONS)}] SWEEP`, found {args.words}"
        )
    target = words[0]
    if args.status:
        action = "status"
    if action == "status":
        plan = sw.plan_jobs(sw.load_sweep(target))
        states = sw.job_states(plan)
        print("\n".join(sw.status_lines(plan, states)))
        return 1 if any(s.state == "failed" for s in states.values()) else 0
    if action == "collect":
        sw.collect(target, say=lambda s: print(s, file=sys.stderr))
        return 0
    if action == "gallery":
        from pathlib import Path

        folder = sw.sweep_folder(target)
        out = Path(args.out) if args.out else folder / "gallery.png"
        _image, cells, _rows = sw.gallery(
            folder,
            args.map,
            args.view,
            sort_by=args.sort,
            descending=args.descending,
            size_px=args.size,
            n_cols=args.columns,
            out_path=out,
        )
        print(f"wrote {out}: {len(cells)} models, map {args.map}, view {args.view}")
        return 0
    result = sw.run_sweep(
        target,
        args.executor,
        max_parallel=args.max_parallel,
        wait=args.wait,
        dry_run=args.dry_run,
        say=lambda s: print(s, file=sys.stderr, flush=True),
    )
    states = result["states"]
    sub = result["submitted"]
    print(
        "submitted: "
        + ", ".join(f"{len(v)} {k}" for k, v in sub.items())
        + "; now "
        + ", ".join(
            f"{sum(s.state == k for s in states.values())} {k}"
            for k in ("done", "running", "failed", "missing")
        )
    )
    if args.executor == "local" and any(s.state == "failed" for s in states.values()):
        print("\n".join(sw.status_lines(result["plan"], states)), file=sys.stderr)
        return 1
    return 0
