"""``factortopy figure``: a publication figure of a model file, without a display.

Surfaces are rendered off-screen by pyvista/VTK (EGL without a display, or Xvfb),
legends by matplotlib.

Hooked into the ``factortopy`` command by :func:`add_figure_parser` and
:func:`run_figure`; the picture is the one the viewer's export button writes
(:func:`napari_factortopy.scene.figure.figure_image`).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["MAP_NAMES", "MESH_NAMES", "VIEW_NAMES", "add_figure_parser", "run_figure"]

#: :data:`napari_factortopy.scene.brain.MAPS`, ``VIEWS`` and ``MESH_KINDS`` spelled out,
#: so that ``factortopy figure --help`` (and ``sweep --help``) import no scene layer and
#: no matplotlib; tests/test_cli.py keeps them equal.
MAP_NAMES = ("layer", "layer weights", "space", "scale", "score", "clusters", "roi")
VIEW_NAMES = ("lateral", "medial", "ventral", "posterior", "flat")
MESH_NAMES = ("inflated", "sphere", "pial", "flat")


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_figure_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``figure`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "figure",
        help="render maps × views of a model file into a PNG (no display needed)",
        description="Render a FactorTopy model's maps on both hemispheres into one PNG: "
        "one row per map, one column per view, a legend per map.",
    )
    p.add_argument("model", help="a .ftopy model file")
    p.add_argument(
        "--maps",
        type=_names,
        default=["layer"],
        help=f"comma-separated maps from {', '.join(MAP_NAMES)}; a seed ensemble or group file "
        "also has agreement, 'space spread', 'scale SD' (and a group n); a model evaluated by "
        "'factortopy evaluate' has 'R² layer' (default: layer)",
    )
    p.add_argument(
        "--views",
        type=_names,
        default=["lateral", "ventral"],
        help=f"comma-separated views from {', '.join(VIEW_NAMES)} (default: lateral,ventral)",
    )
    p.add_argument(
        "--mesh",
        default="inflated",
        choices=MESH_NAMES,
        help="surface to draw on (default: inflated; 'flat' views use the flat mesh)",
    )
    p.add_argument("--width", type=int, default=3000, help="width in pixels (default 3000)")
    p.add_argument(
        "--layer",
        type=int,
        default=1,
        help="layer shown by the 'layer weights' map, 1-based (default 1)",
    )
    p.add_argument(
        "--lighting",
        default="flat",
        choices=("flat", "shaded"),
        help="flat: the map's exact colours (default, for quantitative maps); shaded: a "
        "headlight shows the folding",
    )
    p.add_argument("--out", "-o", required=True, help="PNG file to write")
    p.add_argument(
        "--all-vertices",
        action="store_true",
        help="colour every vertex of an evaluated model (default: vertices whose score is "
        "not significant at its FDR level are grey)",
    )
    p.add_argument(
        "--no-stamp",
        action="store_true",
        help="leave out the 'UNFINISHED MODEL' stamp written on figures of a model whose "
        "training did not converge",
    )
    p.set_defaults(func=run_figure)
    return p


def run_figure(args: argparse.Namespace) -> int:
    """Run ``factortopy figure``; returns the exit status (0 ok, 2 bad input)."""
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.modelfile import ModelFileError
    from napari_factortopy.data.surfaces import SurfaceError
    from napari_factortopy.scene import brain
    from napari_factortopy.scene.brain import MAPS, VIEWS, load_scene
    from napari_factortopy.scene.figure import figure_image

    known = (*MAPS, *brain.ENSEMBLE_MAPS, *brain.GROUP_MAPS, *brain.EVALUATION_MAPS)
    bad = [m for m in args.maps if m not in known] + [v for v in args.views if v not in VIEWS]
    if bad or not args.maps or not args.views:
        print(
            f"factortopy figure: unknown or missing map/view {bad}; maps: {', '.join(known)}; "
            f"views: {', '.join(VIEWS)}",
            file=sys.stderr,
        )
        return 2
    if args.width < 200:
        print("factortopy figure: --width must be at least 200 pixels", file=sys.stderr)
        return 2
    try:
        model = FittedModel.load(args.model)
        scene = load_scene(model, notify=lambda msg: print(f"note: {msg}", file=sys.stderr))
    except (ModelFileError, SurfaceError, FileNotFoundError) as exc:
        print(f"factortopy figure: {exc}", file=sys.stderr)
        return 2
    from napari_factortopy.scene.brain import available_maps

    absent = [m for m in args.maps if m not in MAPS and m not in available_maps(model)]
    if absent:
        print(
            f"factortopy figure: {args.model} has no {', '.join(absent)} map (ensembles, group "
            f"files and evaluated models have more); its maps: {', '.join(available_maps(model))}",
            file=sys.stderr,
        )
        return 2
    scene.kind = args.mesh
    if "score" in args.maps and not model.scores:
        print("note: the model has no test scores; the score map is grey", file=sys.stderr)
    if not 1 <= args.layer <= model.n_layers:
        print(f"factortopy figure: --layer must lie in 1..{model.n_layers}", file=sys.stderr)
        return 2
    scene.layer_index = args.layer - 1
    scene.significant_only = not getattr(args, "all_vertices", False)
    stamp = not getattr(args, "no_stamp", False)
    lighting = getattr(args, "lighting", "flat")
    image = figure_image(
        scene, args.maps, args.views, args.width, args.out, stamp=stamp, lighting=lighting
    )
    print(f"wrote {args.out} ({image.shape[1]}×{image.shape[0]} px)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m napari_factortopy.app.cli_figure``)."""
    parser = argparse.ArgumentParser(prog="factortopy")
    add_figure_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
