"""``factortopy import-official``: the paper's released model file → a ``.ftopy`` model.

A thin wrapper over :func:`~napari_factortopy.app.import_official.import_steps`: one
line per step on stderr, exit 2 with one line naming the file (what was expected, what
was found) for any bad input, and no output file then.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_import_official_parser", "run_import_official"]


def run_import_official(args: argparse.Namespace) -> int:
    from .import_official import import_steps

    for rec in import_steps(
        args.checkpoint,
        args.out,
        vertices=args.vertices,
        algonauts_subject=args.algonauts_subject,
        subjects_dir=args.subjects_dir,
        allow_download=args.allow_download,
        backbone=args.backbone,
        grid=tuple(args.grid) if args.grid else None,
    ):
        if rec["stage"] == "done":
            print(f"imported in {rec['seconds']:.1f} s", file=sys.stderr)
        else:
            print(rec["text"], file=sys.stderr)
    return 0


def add_import_official_parser(sub) -> argparse.ArgumentParser:
    """Register ``import-official`` on the ``factortopy`` subparsers."""
    p = sub.add_parser(
        "import-official",
        help="the paper's released model file (.pth/.ckpt) → a .ftopy model",
        description=(
            "Import the paper's release (huzeyann/BrainDecodesDeepNets, "
            "assets/weights/clip_factorTopy.pth, CC-BY-NC) or a Lightning checkpoint of "
            "its module. Read with torch.load(weights_only=True) only. The checkpoint does "
            "not hold its vertices: give --algonauts-subject (the release's nsdgeneral: "
            "challenge space minus RSC) or --vertices."
        ),
    )
    p.add_argument("checkpoint", help="the release's .pth, or a Lightning .ckpt of its module")
    p.add_argument("--out", required=True, help="the model file to write (MODEL.ftopy)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--vertices",
        metavar="FILE.npy",
        help="joint fsaverage vertex indices (0..327683, left hemisphere first) in the "
        "checkpoint's row order",
    )
    where.add_argument(
        "--algonauts-subject",
        metavar="DIR",
        help="an Algonauts 2023 subject folder (its roi_masks/): vertices and ROI labels",
    )
    p.add_argument(
        "--subjects-dir",
        help="FreeSurfer subjects folder holding fsaverage/surf/{lh,rh}.sphere "
        "(default: $SUBJECTS_DIR, then nilearn's data folder)",
    )
    p.add_argument("--allow-download", action="store_true", help="let nilearn download fsaverage")
    p.add_argument(
        "--backbone",
        default=None,
        help="the backbone it was trained on (default: the paper's, "
        "open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper)",
    )
    p.add_argument(
        "--grid",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="local-token grid (default: the preset's; the release's is 8 8)",
    )
    p.set_defaults(func=run_import_official)
    return p
