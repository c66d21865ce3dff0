"""``factortopy score``: attach a noise ceiling to a model; score it the challenge's way.

A model trained without a ceiling (Algonauts 2023 ships none) keeps its test
correlations per vertex (``scores/r_test``); this command reads a noise-ceiling file
(:func:`napari_factortopy.data.noise_ceiling.read_noise_ceiling`), computes the
noise-normalised score per vertex and its means
(:func:`napari_factortopy.core.metrics.challenge_scores`) and rewrites the model file
(atomically; ``--out`` writes a copy instead).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_score_parser", "attach_noise_ceiling", "run_score"]


def attach_noise_ceiling(model, path) -> str:
    """Read a noise-ceiling file for ``model`` and store the challenge scores in it.

    Parameters
    ----------
    model : FittedModel
        Holds ``scores["r_test"]`` (V,).
    path : path
        The noise-ceiling file.

    Returns
    -------
    str
        How the file was read.

    Raises
    ------
    ValueError
        A model without test correlations, or a file that does not fit its vertices.
    """
    from ..core.metrics import challenge_scores
    from ..data.noise_ceiling import read_noise_ceiling

    if "r_test" not in model.scores:
        raise ValueError(
            "this model file holds no per-vertex test correlations (scores/r_test); "
            "a noise-normalised score needs them"
        )
    nc, note = read_noise_ceiling(path, model.vertex_ids, model.n_lh, model.mesh)
    scores, summary = challenge_scores(
        model.scores["r_test"], nc, note, model.roi, list(model.roi_names)
    )
    model.scores.update(scores)
    model.summary.update(summary)
    if not model.roi_names:
        model.summary.pop("roi_nc_test", None)
    return note


def add_score_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``score`` to a sub-parser set."""
    p = subparsers.add_parser(
        "score",
        help="attach a noise ceiling: the challenge's noise-normalised score per vertex",
        description="Store the Algonauts challenge's noise-normalised score, "
        "min(100, 100·r²/NC) with r < 0 counted 0, in a model file, from a noise-ceiling "
        "file: .npy of one value per modelled vertex or per mesh vertex (lh then rh), or "
        ".npz with lh and rh; percent (NSD's unit) or fractions.",
    )
    p.add_argument("model", help="a .ftopy model file")
    p.add_argument("--noise-ceiling", required=True, metavar="FILE", help="the ceiling file")
    p.add_argument("--out", help="write a copy here instead of rewriting MODEL (.ftopy)")
    p.set_defaults(func=run_score)
    return p


def run_score(args: argparse.Namespace) -> int:
    """Run ``factortopy score``; returns the exit status (0 ok; 2 bad input via main)."""
    from ..core.fitted_model import FittedModel
    from ..core.metrics import format_number
    from .cli_train import check_output_path

    out = check_output_path(args.out or args.model)
    model = FittedModel.load(args.model)
    note = attach_noise_ceiling(model, args.noise_ceiling)
    model.save(out)
    s = model.summary
    print(
        f"wrote {Path(out)}: noise-normalised score "
        f"{format_number(s['nc_test_mean'], '.2f')} % (mean over "
        f"{s['noise_ceiling']['vertices']} of {model.n_vertices} vertices with a ceiling); "
        f"NC from {note}"
    )
    return 0
