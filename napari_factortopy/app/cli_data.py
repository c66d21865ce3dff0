"""Command-line pieces for real data: ``factortopy extract`` and dataset arguments.

``cli.py`` wires these in: :func:`add_extract_parser` adds the ``extract``
sub-command, :func:`run_extract` runs it; :func:`add_cache_parser` adds ``cache verify``
(:func:`run_cache_verify`); :func:`add_dataset_arguments` and
:func:`dataset_from_args` let other sub-commands (``train``) accept each dataset kind.

torch, timm and open_clip are imported inside functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Help text of every ``--device`` option.
DEVICE_HELP = "'auto' (CUDA, then MPS, then CPU; default), 'cuda', 'mps' or 'cpu'"

__all__ = [
    "add_backbone_arguments",
    "add_cache_parser",
    "add_dataset_arguments",
    "add_extract_parser",
    "backbone_from_args",
    "dataset_from_args",
    "run_cache_verify",
    "run_extract",
]

#: Exit statuses, as in ``cli.main``: 0 ok; 2 bad input (a cache, dataset or option
#: that is not what was expected, a cache holding other weights or images); 1 a failure
#: at run time (a full disk, an undecodable image, a range another process extracts).
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

#: torch seed of ``--weights random``: the same random network on every run, so that
#: an interrupted extraction with random weights can be resumed.
RANDOM_WEIGHTS_SEED = 0


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--dataset`` and the options of each dataset kind to ``parser``."""
    g = parser.add_argument_group("dataset")
    g.add_argument(
        "--dataset",
        required=required,
        type=Path,
        help="Algonauts 2023 subject folder, NSD root, or a folder-format dataset",
    )
    g.add_argument(
        "--dataset-kind",
        choices=("auto", "algonauts", "nsd", "folder"),
        default="auto",
        help="dataset kind (default: detected from the folder)",
    )
    g.add_argument("--subject", type=int, default=None, help="subject number (NSD: 1-8)")
    g.add_argument(
        "--nsdgeneral-only",
        action="store_true",
        help="Algonauts: drop the RSC add-on of the challenge space, as the paper did",
    )
    g.add_argument(
        "--sessions",
        type=str,
        default=None,
        help="NSD: sessions to read, e.g. '1-10' or '1,2,5' (default: all present)",
    )
    g.add_argument(
        "--single-trials",
        action="store_true",
        help="NSD: one response row per trial instead of averaging repeats",
    )
    g.add_argument(
        "--roi-mask",
        default="nsdgeneral",
        help="NSD: label file whose vertices are modelled (default nsdgeneral)",
    )


def _parse_sessions(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def dataset_from_args(args: argparse.Namespace):
    """Read the dataset named by :func:`add_dataset_arguments`' options.

    Returns
    -------
    napari_factortopy.data.datasets.Dataset
    """
    from ..data.datasets import detect_kind, load_dataset

    kind = None if args.dataset_kind == "auto" else args.dataset_kind
    kind = kind or detect_kind(args.dataset)
    opts: dict[str, Any] = {}
    if kind == "algonauts":
        opts = {"subject": args.subject, "nsdgeneral_only": args.nsdgeneral_only}
    elif kind == "nsd":
        opts = {
            "subject": args.subject or 1,
            "sessions": _parse_sessions(args.sessions),
            "average": not args.single_trials,
            "roi_mask": args.roi_mask,
        }
    if kind in ("algonauts", "folder") and getattr(args, "memory_limit", None) is not None:
        # a run under a memory limit reads the responses by rows from their files
        opts["in_memory"] = False
    return load_dataset(args.dataset, kind, **opts)


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--backbone`` and its weight/layer options to ``parser``."""
    g = parser.add_argument_group("backbone")
    g.add_argument(
        "--backbone",
        required=True,
        help="'efficientnet_lite0', 'timm:NAME', 'open_clip:MODEL@TAG' (e.g. "
        "open_clip:ViT-B-16@datacomp_l_s1b_b8k) or 'module:pkg.mod:factory'",
    )
    g.add_argument("--pretrained", default=None, help="open_clip pretrained tag")
    g.add_argument(
        "--weights",
        default=None,
        help="weights file (default: the local cache); 'random' for random weights "
        f"(seeded with torch seed {RANDOM_WEIGHTS_SEED}: the same network on every run)",
    )
    g.add_argument(
        "--layers",
        default=None,
        help="comma-separated module names, or 'blocks' / 'stages' (default: every block "
        "of a ViT, the stages of a CNN)",
    )
    g.add_argument(
        "--allow-download",
        action="store_true",
        help="let timm/open_clip download missing weights (off: fail naming what to fetch)",
    )


def backbone_from_args(args: argparse.Namespace):
    """Build the backbone named by :func:`add_backbone_arguments`' options."""
    from ..data.backbones import load_backbone

    layers: Any = args.layers
    if layers and layers not in ("blocks", "stages"):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    kwargs = {
        "pretrained": args.pretrained,
        "weights": args.weights,
        "layers": layers,
        "allow_download": args.allow_download,
    }
    if args.weights != "random":
        return load_backbone(args.backbone, **kwargs)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return load_backbone(args.backbone, **kwargs)


def add_extract_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``extract`` (backbone + dataset → feature cache) to a sub-parser set."""
    p = subparsers.add_parser(
        "extract",
        help="extract backbone features of a dataset's images into a feature cache",
        description="Run a backbone over a dataset's images and store local and global "
        "tokens per layer in a zarr feature cache. Resumable: rerun the same command to "
        "finish an interrupted run.",
    )
    add_backbone_arguments(p)
    add_dataset_arguments(p)
    g = p.add_argument_group("extraction")
    g.add_argument("--cache", required=True, type=Path, help="feature cache directory (.zarr)")
    g.add_argument(
        "--grid",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="local-token grid (default: the backbone preset's, else 8 8)",
    )
    g.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default 32)"
    )
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--no-autocast", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="stop",
        help="an undecodable image: stop, or skip it and record it in <cache>.skipped.json",
    )
    g.add_argument(
        "--range",
        type=int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
        help="only images START..STOP-1 (chunk-aligned; for several processes at once)",
    )
    g.add_argument("--chunk-images", type=int, default=64, help="images per cache chunk")
    g.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    g.add_argument(
        "--verify",
        action="store_true",
        help="first read the whole cache and recompute rows whose data no longer matches "
        "their digests (missing or short chunk files are always found and recomputed)",
    )
    p.set_defaults(func=run_extract)
    return p


def run_extract(args: argparse.Namespace) -> int:
    """Run ``factortopy extract``; returns the exit status (:data:`EXIT_OK`,
    :data:`EXIT_BAD_INPUT` or :data:`EXIT_FAILURE`).

    A cache this run created is removed again when the run fails before writing any
    row (nothing is left behind); with ``--range`` (other processes may share it) it
    is kept.
    """
    from tqdm import tqdm

    from ..core.atomic import atomic_path
    from ..data.backbones import BackboneError
    from ..data.cache import CacheError, FeatureCache
    from ..data.datasets import DatasetError
    from ..data.extract import (
        ExtractionError,
        disk_space,
        extract_features,
        size_text,
        weights_identity,
    )

    cache = None
    created = False
    try:
        ds = dataset_from_args(args)
        print(ds.summary(), file=sys.stderr)
        bb = backbone_from_args(args)
        print(f"backbone {bb.name}: {bb.n_layers} layers, widths {bb.widths}", file=sys.stderr)
        meta = {
            "backbone": bb.name,
            "layer_names": bb.layer_names,
            "widths": bb.widths,
            "grid": list(args.grid or bb.grid or (8, 8)),
            "image_ids": [str(i) for i in ds.image_ids],
            "preprocessing": bb.preprocessing.to_dict(),
            "chunk_images": args.chunk_images,
            "weights": weights_identity(bb),
        }
        path = Path(args.cache)
        created = not path.exists() or (path.is_dir() and not any(path.iterdir()))
        if args.overwrite:
            cache = FeatureCache.create(path, overwrite=True, **meta)
            created = True
        else:
            cache = FeatureCache.open_or_create(path, **meta)
        if cache.damaged:
            print(
                f"{len(cache.damaged)} rows are damaged (e.g. row {min(cache.damaged)}: "
                f"{cache.damaged[min(cache.damaged)]}); recomputing them",
                file=sys.stderr,
            )
        concurrent = args.range is not None
        todo = cache.missing()
        if args.range:
            todo = todo[(todo >= args.range[0]) & (todo < args.range[1])]
        need, free = disk_space(cache, todo)
        if len(todo):  # what the disk must hold, before any work (refused if it cannot)
            room = "" if free is None else f" ({size_text(free)} free there)"
            print(
                f"disk: {len(todo)} images to extract need about {size_text(need)} in "
                f"{cache.path}{room}",
                file=sys.stderr,
            )
        bar = None
        record: dict = {}
        for record in extract_features(
            bb,
            ds.load_images,
            cache,
            batch_size=args.batch_size,
            device=args.device,
            autocast=not args.no_autocast,
            on_error=args.on_error,
            images=tuple(args.range) if args.range else None,
            concurrent=concurrent,
            verify=getattr(args, "verify", False),
        ):
            if record.get("stage") == "verify":
                print(
                    f"verify: {len(record['damaged'])} damaged rows to recompute", file=sys.stderr
                )
                continue
            if bar is None:
                bar = tqdm(total=record["total"], unit="img", desc="extract")
            bar.n = record["done"]
            bar.set_postfix(skipped=len(record["skipped"]), refresh=False)
            bar.refresh()
        if bar is not None:
            bar.close()
        skipped = record.get("skipped", [])
        if skipped:
            report = Path(str(args.cache) + ".skipped.json")
            with atomic_path(report) as tmp:
                tmp.write_text(json.dumps(skipped, indent=2), encoding="utf-8")
            print(
                f"{len(skipped)} images could not be decoded and were skipped (left "
                f"unwritten); list in {report}",
                file=sys.stderr,
            )
        print(repr(cache), file=sys.stderr)
        return EXIT_OK
    except (BackboneError, CacheError, DatasetError, ExtractionError, OSError) as exc:
        msg = str(exc)
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        if cache is not None and created and args.range is None and cache.remove_if_empty():
            msg += f" ({cache.path} removed: nothing was written)"
        print(f"factortopy extract: error: {msg}", file=sys.stderr)
        return _exit_status(exc)


def _exit_status(exc: BaseException) -> int:
    bad_input = isinstance(exc, ValueError | FileNotFoundError | NotADirectoryError)
    return EXIT_BAD_INPUT if bad_input else EXIT_FAILURE


def add_cache_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cache`` (with the sub-command ``verify``) to a sub-parser set."""
    p = subparsers.add_parser(
        "cache",
        help="inspect feature caches",
        description="Inspect feature caches written by `factortopy extract`.",
    )
    sub = p.add_subparsers(dest="cache_command", required=True)
    v = sub.add_parser(
        "verify",
        help="read a whole feature cache and check every row against its digest",
        description="Read every written row of a feature cache and compare it with the "
        "digest recorded when it was written: finds missing, truncated and corrupted "
        "chunk files. Exit status 0: intact; 1: damage found; 2: the cache cannot be "
        "opened (not a cache, edited attributes, a damaged 'written' chunk). With "
        "--repair the damaged rows are marked unwritten, and rerunning `factortopy "
        "extract` recomputes them.",
    )
    v.add_argument("cache", type=Path, help="feature cache directory (.zarr)")
    v.add_argument("--repair", action="store_true", help="mark damaged rows unwritten")
    add_dataset_arguments(v, required=False)
    v.set_defaults(func=run_cache_verify)
    return p


def run_cache_verify(args: argparse.Namespace) -> int:
    """Run ``factortopy cache verify``; returns 0 (intact), 1 (damage found) or 2 (the
    cache or dataset cannot be opened).

    With ``--dataset``, each written row's image is decoded again and compared with
    the digest of the image its features were computed from.
    """
    from tqdm import tqdm

    from ..data.cache import CacheError, FeatureCache
    from ..data.datasets import DatasetError

    try:
        load = dataset_from_args(args).load_images if args.dataset is not None else None
        mode = "r+" if args.repair else "r"
        cache = FeatureCache.open(args.cache, mode=mode, allow_damaged=True)
        bar = tqdm(total=None, unit="chunk", desc="verify")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        report = cache.verify(load, repair=args.repair, progress=progress)
        bar.close()
    except (CacheError, DatasetError, OSError) as exc:
        print(f"factortopy cache verify: error: {exc}", file=sys.stderr)
        return _exit_status(exc)
    print(report.summary(), file=sys.stderr if report.damaged else sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILURE
