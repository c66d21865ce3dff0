"""A sweep's jobs: what each runs and needs; checking them and creating the caches first.

Jobs are planned in three stages: extraction (a job array per cache over chunk-aligned
image ranges, ``factortopy extract --range``; the driver creates each cache first),
training (``factortopy train``, after its cache's extraction) and collection
(``factortopy sweep collect``, which writes ``results.csv``). Every job runs the
``factortopy`` command itself (``python -m napari_factortopy.app.cli …``), so a sweep
job behaves exactly as the same command typed by hand.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .index import INDEX_NAME
from .spec import BackboneSpec, DatasetSpec, Sweep, SweepError, _bad

__all__ = ["Job", "Plan", "cache_path", "extract_argv", "plan_jobs", "prepare_caches", "validate"]


@dataclass
class Job:
    """One unit of work: its key, kind, ``factortopy`` arguments and dependencies."""

    key: str
    kind: str  # "extract" | "train" | "collect"
    argv: list[str]
    deps: list[str] = field(default_factory=list)
    cache: str | None = None  # the cache key (extract and train)
    output: Path | None = None
    range: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Every job of a sweep, in submission order (extract, train, collect)."""

    sweep: Sweep
    jobs: list[Job]

    @property
    def by_key(self) -> dict[str, Job]:
        return {j.key: j for j in self.jobs}

    def of_kind(self, kind: str) -> list[Job]:
        return [j for j in self.jobs if j.kind == kind]


def _extract_opts(sweep: Sweep) -> dict[str, Any]:
    e = sweep.extract
    grid = e.get("grid", [8, 8])
    return {
        "grid": [int(grid[0]), int(grid[1])],
        "batch_size": int(e.get("batch_size", 32)),
        "chunk_images": int(e.get("chunk_images", 64)),
        "jobs_per_cache": int(e.get("jobs_per_cache", 4)),
        "args": [str(a) for a in e.get("args", [])],
    }


def cache_path(sweep: Sweep, ds: DatasetSpec, bb: BackboneSpec) -> Path:
    return sweep.out / "caches" / f"{ds.name}__{bb.name}.zarr"


def extract_argv(sweep: Sweep, ds: DatasetSpec, bb: BackboneSpec) -> list[str]:
    """``factortopy extract`` arguments of a cache (without ``--range``)."""
    e = _extract_opts(sweep)
    return [
        "extract",
        *bb.args(),
        "--dataset",
        ds.path,
        *ds.args,
        "--cache",
        str(cache_path(sweep, ds, bb)),
        "--grid",
        str(e["grid"][0]),
        str(e["grid"][1]),
        "--batch-size",
        str(e["batch_size"]),
        "--chunk-images",
        str(e["chunk_images"]),
        "--device",
        sweep.device,
        *e["args"],
    ]


def _cache_ranges(path: Path, jobs_per_cache: int) -> list[tuple[int, int]] | None:
    """Chunk-aligned ranges of an existing cache (None when it does not exist yet)."""
    from ...data.cache import CacheError, FeatureCache
    from ...data.extract import plan_ranges

    if not path.exists():
        return None
    try:
        c = FeatureCache.open(path, "r", allow_damaged=True)
    except CacheError:
        return None
    return plan_ranges(c.n_images, c.chunk_images, jobs_per_cache)


def plan_jobs(sweep: Sweep) -> Plan:
    """Every job of the sweep. Extraction ranges come from the caches (created by
    :func:`prepare_caches`); a cache not created yet is one job over all its images."""
    e = _extract_opts(sweep)
    jobs: list[Job] = []
    train: list[Job] = []
    for ds in sweep.datasets:
        for bb in sweep.backbones:
            ckey = f"{ds.name}__{bb.name}"
            cpath = cache_path(sweep, ds, bb)
            base = extract_argv(sweep, ds, bb)
            ranges = _cache_ranges(cpath, e["jobs_per_cache"])
            ext_keys = []
            for a, b in ranges or [(None, None)]:
                key = f"extract__{ckey}" + (f"__{a}-{b}" if a is not None else "")
                argv = base + (["--range", str(a), str(b)] if a is not None else [])
                jobs.append(
                    Job(key, "extract", argv, cache=ckey, output=cpath, range=(a, b), meta={})
                )
                ext_keys.append(key)
            for rc in sweep.recipes:
                for seed in sweep.seeds:
                    mkey = f"{ds.name}__{bb.name}__{rc.name}__s{seed}"
                    out = sweep.out / "models" / f"{mkey}.ftopy"
                    argv = [
                        "train",
                        "--cache",
                        str(cpath),
                        "--dataset",
                        ds.path,
                        *ds.args,
                        "--out",
                        str(out),
                        "--checkpoints",
                        str(sweep.out / "checkpoints" / mkey),
                        "--seed",
                        str(seed),
                        "--device",
                        sweep.device,
                        *rc.args,
                    ]
                    meta = {
                        "dataset": ds.name,
                        "backbone": bb.name,
                        "spec": bb.spec,
                        "layers": bb.layers or "",
                        "recipe": rc.name,
                        "seed": seed,
                    }
                    train.append(
                        Job(mkey, "train", argv, list(ext_keys), cache=ckey, output=out, meta=meta)
                    )
    jobs += train
    jobs.append(
        Job(
            "collect",
            "collect",
            ["sweep", "collect", str(sweep.path)],
            [j.key for j in train],
            output=sweep.out / INDEX_NAME,
        )
    )
    return Plan(sweep, jobs)


def _parse_cli(sub_adder: Callable, argv: list[str]):
    """Parse ``argv`` with one sub-command's own parser; (namespace, error text)."""
    import argparse

    parser = argparse.ArgumentParser(prog="factortopy")
    sub = parser.add_subparsers(dest="command", required=True)
    sub_adder(sub)
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            return parser.parse_args(argv), ""
    except SystemExit:
        lines = [s for s in err.getvalue().splitlines() if s.strip()]
        return None, (lines[-1] if lines else "invalid options")


def validate(sweep: Sweep, *, load_backbones: bool = True) -> dict[str, Any]:
    """Check everything a job needs before anything is submitted.

    Every dataset is read (``load_dataset``), every backbone built (its weights found
    offline), every recipe parsed by ``factortopy train``'s own parser. Returns the
    loaded datasets and backbones (to create the caches with).

    Raises
    ------
    SweepError
        Naming the TOML line of the dataset, backbone or recipe at fault.
    """
    from ..cli_data import add_extract_parser, backbone_from_args, dataset_from_args
    from ..cli_train import add_train_parser, train_config_from_args

    datasets: dict[str, Any] = {}
    backbones: dict[str, Any] = {}
    first_bb = sweep.backbones[0]
    for ds in sweep.datasets:
        if not Path(ds.path).exists():
            raise _bad(sweep.path, ds.line, f"dataset {ds.name!r}: {ds.path} does not exist")
        argv = extract_argv(sweep, ds, first_bb)
        args, err = _parse_cli(add_extract_parser, argv)
        if args is None:
            raise _bad(sweep.path, ds.line, f"dataset {ds.name!r}: {err}")
        try:
            datasets[ds.name] = dataset_from_args(args)
        except Exception as exc:
            raise _bad(sweep.path, ds.line, f"dataset {ds.name!r}: {exc}") from None
    for bb in sweep.backbones:
        argv = extract_argv(sweep, sweep.datasets[0], bb)
        args, err = _parse_cli(add_extract_parser, argv)
        if args is None:
            raise _bad(sweep.path, bb.line, f"backbone {bb.name!r}: {err}")
        if load_backbones:
            try:
                backbones[bb.name] = backbone_from_args(args)
            except Exception as exc:
                raise _bad(
                    sweep.path, bb.line, f"backbone {bb.spec!r}: {str(exc).splitlines()[0]}"
                ) from None
    for rc in sweep.recipes:
        argv = ["train", "--cache", "x", "--out", "x.ftopy", *rc.args]
        args, err = _parse_cli(add_train_parser, argv)
        if args is None:
            raise _bad(sweep.path, rc.line, f"recipe {rc.name!r}: {err}")
        try:
            train_config_from_args(args)
        except ValueError as exc:
            raise _bad(sweep.path, rc.line, f"recipe {rc.name!r}: {exc}") from None
    return {"datasets": datasets, "backbones": backbones}


def prepare_caches(sweep: Sweep, loaded: Mapping[str, Any]) -> list[Path]:
    """Create (or reopen) every cache with exactly the metadata ``factortopy extract``
    records, so the extraction array's jobs only fill rows."""
    from ...data.cache import FeatureCache
    from ...data.extract import weights_identity

    e = _extract_opts(sweep)
    made = []
    (sweep.out / "caches").mkdir(parents=True, exist_ok=True)
    for bb in sweep.backbones:
        net = loaded["backbones"][bb.name]
        ident = weights_identity(net)
        for ds in sweep.datasets:
            data = loaded["datasets"][ds.name]
            meta = {
                "backbone": net.name,
                "layer_names": net.layer_names,
                "widths": net.widths,
                "grid": list(e["grid"]),
                "image_ids": [str(i) for i in data.image_ids],
                "preprocessing": net.preprocessing.to_dict(),
                "chunk_images": e["chunk_images"],
                "weights": ident,
            }
            path = cache_path(sweep, ds, bb)
            try:
                FeatureCache.open_or_create(path, **meta)
            except Exception as exc:
                raise SweepError(f"{sweep.where(bb.line)}: cache {path}: {exc}") from None
            made.append(path)
    return made
