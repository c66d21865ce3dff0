"""Sweeps: datasets × backbones × recipes × seeds as jobs on a cluster (or one machine).

A sweep is described by a TOML file (see docs/SWEEPS.md) and lives in one output
folder::

    OUT/
      caches/<dataset>__<backbone>.zarr      one feature cache per dataset × backbone
      models/<dataset>__<backbone>__<recipe>__s<seed>.ftopy
      checkpoints/<model key>/               `train --checkpoints` (a killed job resumes)
      jobs/<key>.submit.json                 what the driver submitted (job id, logs)
      jobs/<key>.run.json                    what the job says (running / finished /
                                             failed, exit status, seconds, peak RSS)
      logs/                                  submitit's logs (stdout/stderr of each job)
      results.csv                            the index: one row per model
      sweep.toml                             a copy of the description

Jobs are planned in three stages: extraction (a job array per cache over chunk-aligned
image ranges, ``factortopy extract --range``; the driver creates each cache first),
training (``factortopy train``, after its cache's extraction) and collection
(``factortopy sweep collect``, which writes ``results.csv``). Every job runs the
``factortopy`` command itself (``python -m napari_factortopy.app.cli …``), so a sweep
job behaves exactly as the same command typed by hand.

Whether a job is finished is read from its output, never from a marker alone: a model
is done when :meth:`FittedModel.load` accepts its file, an extraction job when the
cache marks every row of its range written, the collection when ``results.csv`` lists
exactly the finished models. Re-running a sweep submits only what is missing or
failed; a training job that was killed resumes from its checkpoint (``--resume``).

submitit (imported inside functions) submits the jobs: ``LocalExecutor`` runs them as
subprocesses of this machine, ``SlurmExecutor`` as SLURM jobs with dependencies.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.host import process_alive

__all__ = [
    "EXECUTORS",
    "INDEX_NAME",
    "Job",
    "JobState",
    "Plan",
    "Sweep",
    "SweepError",
    "collect",
    "job_main",
    "job_states",
    "load_sweep",
    "plan_jobs",
    "read_index",
    "run_sweep",
    "status_lines",
    "sweep_folder",
    "validate",
]

EXECUTORS = ("local", "slurm")
INDEX_NAME = "results.csv"
#: Columns of the index before the per-ROI R² columns (``r2_<ROI>``) and after them.
INDEX_HEAD = (
    "key",
    "dataset",
    "backbone",
    "spec",
    "layers",
    "recipe",
    "seed",
    "r2_test_mean",
    "r_test_mean",
)
INDEX_TAIL = (
    "hierarchy_slope",
    "hierarchy_intercept",
    "convergence_state",
    "convergence_line",
    "steps",
    "epochs",
    "train_seconds",
    "job_seconds",
    "peak_rss_mb",
    "device",
    "n_vertices",
    "path",
)

_TOP_KEYS = {
    "name",
    "out",
    "seeds",
    "device",
    "datasets",
    "backbones",
    "recipes",
    "extract",
    "slurm",
    "local",
}
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


JOB_STATES = ("done", "running", "failed", "missing")
TEXT_COLUMNS = (
    "key",
    "dataset",
    "backbone",
    "spec",
    "layers",
    "recipe",
    "path",
    "convergence_state",
    "convergence_line",
    "device",
)


class SweepError(ValueError):
    """A sweep description that cannot be run (names the file and line)."""


# ---------------------------------------------------------------- description


def _find_line(text: str, key: str, value: Any = None, after: int = 0) -> int | None:
    """1-based line of ``key = value`` (or of ``key`` alone) in TOML text.

    tomllib gives no positions, so the line is found in the text: the first line at or
    after ``after`` whose ``key =`` is followed by ``value`` (as TOML writes a string or
    number), else the first with ``key =``, else the first line holding ``value``.
    """
    lines = text.splitlines()
    key_re = re.compile(rf"(^|[\s{{,])[\"']?{re.escape(key)}[\"']?\s*=")
    lit = None
    if isinstance(value, str):
        lit = value
    elif isinstance(value, bool):
        lit = "true" if value else "false"
    elif isinstance(value, int | float):
        lit = str(value)
    candidates = []
    for i, line in enumerate(lines[after:], start=after):
        code = line.split("#", 1)[0] if "#" in line and '"' not in line else line
        m = key_re.search(code)
        if m and (lit is None or lit in code[m.end() :]):
            return i + 1
        if m:
            candidates.append(i + 1)
    if candidates:
        return candidates[0]
    if lit is not None:
        for i, line in enumerate(lines[after:], start=after):
            if lit in line:
                return i + 1
    return None


def _table_line(text: str, table: str, index: int) -> int:
    """1-based line where the ``index``-th ``[[table]]`` starts (0 when not found)."""
    n = -1
    for i, line in enumerate(text.splitlines()):
        if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", line):
            n += 1
            if n == index:
                return i + 1
    return 0


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    args: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    spec: str
    layers: str | None = None
    weights: str | None = None
    pretrained: str | None = None
    line: int = 0

    def args(self) -> list[str]:
        out = ["--backbone", self.spec]
        for opt, value in (
            ("--layers", self.layers),
            ("--weights", self.weights),
            ("--pretrained", self.pretrained),
        ):
            if value:
                out += [opt, value]
        return out


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    args: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    line: int = 0


@dataclass
class Sweep:
    """A parsed sweep description (no heavy checks yet; see :func:`validate`)."""

    path: Path
    text: str
    name: str
    out: Path
    seeds: list[int]
    device: str
    datasets: list[DatasetSpec]
    backbones: list[BackboneSpec]
    recipes: list[RecipeSpec]
    extract: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)

    def where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)

    def line_of(self, key: str, value: Any = None, after: int = 0) -> int | None:
        return _find_line(self.text, key, value, after)


def _bad(path: Path, line: int | None, message: str) -> SweepError:
    return SweepError(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def _option_args(options: Mapping[str, Any]) -> list[str]:
    """TOML ``key = value`` pairs → command-line options (``true``: a flag)."""
    out: list[str] = []
    for key, value in options.items():
        opt = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(opt)
        elif isinstance(value, list):
            out += [opt, *(str(v) for v in value)]
        else:
            out += [opt, str(value)]
    return out


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and check a sweep TOML (structure and names only; nothing heavy).

    Raises
    ------
    SweepError
        Naming the file and the line of the offending key.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    path = Path(path).resolve()
    base = path.parent
    forced_out = None
    if path.is_dir():  # a sweep's output folder: its copy of the description
        forced_out = path
        record = _read_json(path / "sweep.json") or {}
        path = path / "sweep.toml"
        if record.get("source"):
            base = Path(record["source"]).parent
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        key = unknown[0]
        line = _find_line(text, key) or next(
            (i + 1 for i, s in enumerate(text.splitlines()) if re.search(rf"\[\[?\s*{key}", s)),
            None,
        )
        raise _bad(path, line, f"unknown key {key!r}; expected one of {sorted(_TOP_KEYS)}")

    def need_list(key: str) -> list:
        value = raw.get(key)
        if not isinstance(value, list) or not value:
            raise _bad(path, _find_line(text, key), f"{key!r} must be a non-empty list")
        return value

    name = str(raw.get("name") or path.stem)
    out = Path(str(raw.get("out") or f"{path.stem}-out"))
    out = forced_out or (out if out.is_absolute() else (base / out))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        raise _bad(path, _find_line(text, "seeds"), f"seeds must be a list of integers: {seeds!r}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise _bad(path, _find_line(text, "seeds"), f"seeds must be distinct: {seeds!r}")

    datasets: list[DatasetSpec] = []
    for i, d in enumerate(need_list("datasets")):
        at = _table_line(text, "datasets", i)
        if not isinstance(d, dict) or "path" not in d:
            raise _bad(path, at or _find_line(text, "datasets"), "each dataset needs a 'path'")
        subjects = d.get("subjects", [None])
        for subj in subjects:
            fmt = {"subject": subj} if subj is not None else {}
            try:
                dpath = str(d["path"]).format(**fmt)
                dname = str(d.get("name") or Path(dpath).name).format(**fmt)
                args = [str(a).format(**fmt) for a in d.get("args", [])]
            except (KeyError, IndexError, ValueError) as exc:
                raise _bad(
                    path, _find_line(text, "path", d["path"], at), f"bad placeholder: {exc}"
                ) from None
            if "subject" in d:
                args += ["--subject", str(d["subject"])]
            line = _find_line(text, "path", str(d["path"]), max(at - 1, 0))
            p = Path(dpath)
            p = p if p.is_absolute() else base / p
            datasets.append(DatasetSpec(dname, str(p), tuple(args), line or at))
    backbones: list[BackboneSpec] = []
    for i, b in enumerate(need_list("backbones")):
        at = _table_line(text, "backbones", i)
        if isinstance(b, str):
            b = {"spec": b}
        if not isinstance(b, dict) or "spec" not in b:
            raise _bad(path, at or _find_line(text, "backbones"), "each backbone needs a 'spec'")
        spec = str(b["spec"])
        default = re.sub(r"[^A-Za-z0-9._+-]+", "-", spec.split(":")[-1]).strip("-")
        line = _find_line(text, "spec", spec, max(at - 1, 0)) or _find_line(text, "backbones")
        backbones.append(
            BackboneSpec(
                str(b.get("name") or default),
                spec,
                ",".join(layers) if isinstance(layers := b.get("layers"), list) else layers,
                b.get("weights"),
                b.get("pretrained"),
                line or at,
            )
        )
    recipes: list[RecipeSpec] = []
    raw_recipes = raw.get("recipes") or [{"name": "default"}]
    for i, r in enumerate(raw_recipes):
        at = _table_line(text, "recipes", i)
        if not isinstance(r, dict):
            raise _bad(path, at or _find_line(text, "recipes"), "each recipe must be a table")
        opts = {k: v for k, v in r.items() if k not in ("name", "args")}
        args = [*_option_args(opts), *(str(a) for a in r.get("args", []))]
        rname = str(r.get("name") or f"recipe{i}")
        line = _find_line(text, "name", rname, max(at - 1, 0)) if r.get("name") else at
        recipes.append(RecipeSpec(rname, tuple(args), tuple(opts.items()), line or at))
    for kind, items in (("dataset", datasets), ("backbone", backbones), ("recipe", recipes)):
        seen: dict[str, int] = {}
        for it in items:
            if not _KEY_RE.match(it.name) or "__" in it.name:
                raise _bad(
                    path,
                    it.line,
                    f"{kind} name {it.name!r} must be letters, digits and . _ + - (no '__'); "
                    "give it a 'name'",
                )
            if it.name in seen:
                raise _bad(path, it.line, f"two {kind}s are named {it.name!r}; give each a name")
            seen[it.name] = it.line
    for key in ("extract", "slurm", "local"):
        if key in raw and not isinstance(raw[key], dict):
            raise _bad(path, _find_line(text, key), f"[{key}] must be a table")
    device = str(raw.get("device", "auto"))
    return Sweep(
        path,
        text,
        name,
        out.resolve(),
        list(seeds),
        device,
        datasets,
        backbones,
        recipes,
        dict(raw.get("extract", {})),
        dict(raw.get("slurm", {})),
        dict(raw.get("local", {})),
    )


def sweep_folder(path: str | os.PathLike) -> Path:
    """The output folder of a sweep given its TOML file or the folder itself."""
    p = Path(path)
    if p.is_file() and p.suffix == ".toml":
        return load_sweep(p).out
    return p.resolve()


# ----------------------------------------------------------------------- plan


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
    from ..data.cache import CacheError, FeatureCache
    from ..data.extract import plan_ranges

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


# ----------------------------------------------------------------- validation


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
    from .cli_data import add_extract_parser, backbone_from_args, dataset_from_args
    from .cli_train import add_train_parser, train_config_from_args

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
    from ..data.cache import FeatureCache
    from ..data.extract import weights_identity

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


# -------------------------------------------------------------------- states


@dataclass
class JobState:
    """Where one job stands: ``done``, ``running``, ``failed`` or ``missing``."""

    key: str
    kind: str
    state: str
    detail: str = ""
    log: str | None = None
    job_id: str | None = None


def _jobs_dir(sweep: Sweep) -> Path:
    return sweep.out / "jobs"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from ..core.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(dict(data), indent=1), encoding="utf-8")


def output_done(job: Job) -> tuple[bool, str]:
    """Whether a job's output is there and valid (its own check, not a marker)."""
    from ..core.fitted_model import FittedModel

    if job.kind == "train":
        if not job.output.exists():
            return False, "no model file"
        try:
            FittedModel.load(job.output)
        except Exception as exc:
            return False, f"invalid model file: {str(exc)[:120]}"
        return True, str(job.output)
    if job.kind == "extract":
        from ..data.cache import CacheError, FeatureCache

        if not job.output.exists():
            return False, "cache not created"
        try:
            c = FeatureCache.open(job.output, "r", allow_damaged=True)
        except CacheError as exc:
            return False, str(exc)[:160]
        a, b = job.range if job.range[0] is not None else (0, c.n_images)
        w = c.written[a:b]
        return bool(w.all()), f"{int(w.sum())}/{b - a} rows written"
    if job.kind == "collect":
        index = read_index(job.output.parent) if job.output.exists() else None
        if index is None:
            return False, "no index"
        done = sorted(str(Path(d).resolve()) for d in (job.meta.get("done_models") or []))
        listed = sorted(str((job.output.parent / r["path"]).resolve()) for r in index)
        if listed != done:
            return False, f"index lists {len(listed)} models, {len(done)} are finished"
        return True, f"{len(index)} rows"
    raise ValueError(job.kind)


def _slurm_alive(job_ids: Iterable[str]) -> set[str] | None:
    """Job ids SLURM still knows as pending/running (None: cannot ask)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    alive = set()
    for line in res.stdout.split():
        alive.add(line.strip())
        alive.add(line.strip().split("_")[0])
    return alive


def _last_error(log: str | None) -> str:
    if not log:
        return ""
    try:
        lines = [s for s in Path(log).read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "Error" in line:
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else ""


def job_states(plan: Plan) -> dict[str, JobState]:
    """The state of every job of the plan, from outputs first, then job records."""
    sweep = plan.sweep
    jd = _jobs_dir(sweep)
    host = socket.gethostname()
    states: dict[str, JobState] = {}
    records = {}
    for job in plan.jobs:
        records[job.key] = (
            _read_json(jd / f"{job.key}.submit.json"),
            _read_json(jd / f"{job.key}.run.json"),
        )
    slurm_ids = [
        s.get("job_id") for s, _ in records.values() if s and s.get("executor") == "slurm"
    ]
    alive = _slurm_alive(slurm_ids) if slurm_ids else None
    done_models = []
    for job in plan.jobs:
        if job.kind == "collect":
            job.meta["done_models"] = done_models
        ok, detail = output_done(job)
        sub, run = records[job.key]
        log = (sub or {}).get("stderr")
        jid = (sub or {}).get("job_id")
        if ok:
            if job.kind == "train":
                done_models.append(str(job.output))
            states[job.key] = JobState(job.key, job.kind, "done", detail, log, jid)
            continue
        if sub is None and run is None:
            states[job.key] = JobState(job.key, job.kind, "missing", detail, None, None)
            continue
        st, why = "failed", detail
        if run and run.get("state") == "running":
            if run.get("host") == host:
                st = "running" if process_alive(int(run.get("pid", -1))) else "failed"
                why = "running" if st == "running" else "killed (its process is gone)"
            elif sub and sub.get("executor") == "slurm" and alive is not None:
                known = str(jid) in alive or str(jid).split("_")[0] in alive
                st = "running" if known else "failed"
                why = "running" if st == "running" else "gone from the queue (killed, timeout?)"
            else:
                st, why = "running", f"running on {run.get('host')}"
        elif run and run.get("state") in ("failed", "finished"):
            why = f"exit status {run.get('rc')}: {detail}"
        elif sub:  # submitted, not started
            if sub.get("executor") == "local":
                same = sub.get("host") == host
                if same and process_alive(int(str(jid).split("_")[0] or -1)):
                    st, why = "running", "starting"
                else:
                    why = "never started (its driver stopped?)"
            elif alive is not None:
                in_q = str(jid) in alive or str(jid).split("_")[0] in alive
                st, why = ("running", "queued") if in_q else ("failed", "left the queue unstarted")
            else:
                st, why = "running", "submitted (no squeue here to ask)"
        states[job.key] = JobState(job.key, job.kind, st, why, log, jid)
    return states


def status_lines(plan: Plan, states: Mapping[str, JobState] | None = None) -> list[str]:
    """``factortopy sweep status``: counts per kind and state, then each job not done."""
    states = states or job_states(plan)
    lines = [f"sweep {plan.sweep.name}: {plan.sweep.out}"]
    for kind in ("extract", "train", "collect"):
        ks = [s for s in states.values() if s.kind == kind]
        counts = {k: sum(s.state == k for s in ks) for k in JOB_STATES}
        lines.append(
            f"  {kind:<8} {len(ks):>4} jobs: "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k == "done")
        )
    for s in states.values():
        if s.state == "done":
            continue
        line = f"  {s.state:<8} {s.kind:<8} {s.key}: {s.detail}"
        if s.state == "failed":
            line += f"\n           log: {s.log or '(none: never submitted)'}"
            err = _last_error(s.log)
            if err:
                line += f"\n           last error: {err}"
        elif s.job_id:
            line += f" (job {s.job_id})"
        lines.append(line)
    return lines


# --------------------------------------------------------------------- the job


def _peak_rss_kib(pid: int) -> int:
    """A process's peak resident memory (VmHWM, KiB) on Linux; 0 elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def job_main(key: str, argv: list[str], jobs_dir: str) -> int:
    """What a submitted job runs: ``factortopy ARGV`` in a child process.

    Records ``jobs/<key>.run.json`` (running → finished / failed with the exit status,
    wall seconds and the child's peak resident memory). A training job whose checkpoint
    exists resumes from it. Raises (so submitit marks the job failed) when the command
    fails.
    """
    import resource

    argv = list(argv)
    if argv and argv[0] == "train" and "--checkpoints" in argv and "--resume" not in argv:
        ckpt = Path(argv[argv.index("--checkpoints") + 1])
        if ckpt.is_dir() and any(ckpt.rglob("checkpoint.pt")):
            argv.append("--resume")
    run_path = Path(jobs_dir) / f"{key}.run.json"
    base = {
        "key": key,
        "argv": argv,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.time(),
    }
    _write_json(run_path, {**base, "state": "running"})
    cmd = [sys.executable, "-m", "napari_factortopy.app.cli", *argv]
    print("$", shlex.join(["factortopy", *argv]), flush=True)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    peak_kib, last = 0, 0.0
    while child.poll() is None:  # the child's peak RSS so far, kept if the job is killed
        peak_kib = max(peak_kib, _peak_rss_kib(child.pid))
        if time.perf_counter() - last > 5.0 and peak_kib:
            _write_json(run_path, {**base, "state": "running", "peak_rss_mb": peak_kib / 1024})
            last = time.perf_counter()
        try:
            child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    rc = child.returncode
    seconds = time.perf_counter() - t0
    peak_kib = max(peak_kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    _write_json(
        run_path,
        {
            **base,
            "state": "finished" if rc == 0 else "failed",
            "rc": rc,
            "seconds": seconds,
            "peak_rss_mb": peak_kib / 1024.0,
            "resumed": "--resume" in argv,
        },
    )
    if rc != 0:
        raise RuntimeError(f"factortopy {argv[0]} exited with status {rc}")
    return rc


# ------------------------------------------------------------------ executors


def _resources(sweep: Sweep, kind: str) -> dict[str, Any]:
    """SLURM parameters of one stage: [slurm] overridden by [slurm.<kind>]."""
    base = {k: v for k, v in sweep.slurm.items() if not isinstance(v, dict)}
    base.update(sweep.slurm.get(kind, {}))
    extra = dict(sweep.slurm.get("additional", {}))
    extra.update(base.pop("additional", {}) if isinstance(base.get("additional"), dict) else {})
    out: dict[str, Any] = {}
    names = {
        "partition": "partition",
        "gpus": "gpus_per_node",
        "gpus_per_node": "gpus_per_node",
        "cpus": "cpus_per_task",
        "cpus_per_task": "cpus_per_task",
        "account": "account",
        "qos": "qos",
        "constraint": "constraint",
        "array_parallelism": "array_parallelism",
        "setup": "setup",
        "exclude": "exclude",
    }
    for k, v in base.items():
        if k in names:
            out[names[k]] = v
        elif k in ("mem_gb", "memory_gb"):
            out["mem"] = f"{int(v)}G"
        elif k == "mem":
            out["mem"] = str(v)
        elif k in ("time_min", "timeout_min"):
            out["time"] = int(v)
        elif k == "time":
            out["time"] = v
        elif k != "additional":
            extra[k] = v
    if not out.get("gpus_per_node"):  # 0: a CPU-only stage (collection, extraction)
        out.pop("gpus_per_node", None)
    if extra:
        out["additional_parameters"] = extra
    out.setdefault("time", 60)
    return out


def make_executor(sweep: Sweep, kind: str):
    """A submitit executor for ``kind`` ('local' or 'slurm') writing logs under OUT/logs.

    Raises
    ------
    SweepError
        ``slurm`` without ``sbatch`` on PATH; submitit missing.
    """
    try:
        import submitit
    except ModuleNotFoundError:
        raise SweepError(
            "sweeps need submitit: pip install submitit (or pip install napari-factortopy)"
        ) from None
    logs = sweep.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        return submitit.LocalExecutor(folder=logs / "%j")
    if kind == "slurm":
        if shutil.which("sbatch") is None:
            raise SweepError(
                "--executor slurm: `sbatch` is not on PATH, so no SLURM jobs can be submitted "
                "from this machine. Run the sweep on a SLURM login node, or use "
                "--executor local to run the jobs here"
            )
        return submitit.SlurmExecutor(folder=logs / "%j")
    raise SweepError(f"unknown executor {kind!r}; choose from {EXECUTORS}")


def _record_submission(sweep: Sweep, job: Job, sj, executor: str) -> None:
    _write_json(
        _jobs_dir(sweep) / f"{job.key}.submit.json",
        {
            "key": job.key,
            "kind": job.kind,
            "job_id": str(sj.job_id),
            "executor": executor,
            "host": socket.gethostname(),
            "submitted": time.time(),
            "stdout": str(sj.paths.stdout),
            "stderr": str(sj.paths.stderr),
            "argv": job.argv,
        },
    )
    # a new attempt: the previous attempt's run record no longer describes it
    (_jobs_dir(sweep) / f"{job.key}.run.json").unlink(missing_ok=True)


def run_sweep(
    path: str | os.PathLike,
    executor: str = "local",
    *,
    max_parallel: int | None = None,
    wait: bool | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, check and submit what is missing or failed; returns what was submitted.

    Local jobs run as subprocesses, at most ``max_parallel`` at once ([local]
    max_parallel, default 1), and the call waits for them. SLURM jobs are submitted
    with dependencies (extraction array → training → collection) and the call returns
    unless ``wait``.

    Returns
    -------
    dict
        ``submitted``: {kind: [keys]}, ``states``: the job states at the end,
        ``plan``: the :class:`Plan`.
    """
    sweep = load_sweep(path)
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; choose from {EXECUTORS}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        make_executor(sweep, "slurm")  # raises the clear message before any work
    t0 = time.perf_counter()
    loaded = validate(sweep)
    say(
        f"sweep {sweep.name}: {len(sweep.datasets)} datasets × {len(sweep.backbones)} "
        f"backbones × {len(sweep.recipes)} recipes × {len(sweep.seeds)} seeds, checked in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for sub in ("models", "checkpoints", "jobs", "logs", "caches"):
        (sweep.out / sub).mkdir(parents=True, exist_ok=True)
    copy = sweep.out / "sweep.toml"
    if copy.resolve() != sweep.path:
        copy.write_text(sweep.text, encoding="utf-8")
        _write_json(sweep.out / "sweep.json", {"source": str(sweep.path), "name": sweep.name})
    if not dry_run:
        prepare_caches(sweep, loaded)
    del loaded
    plan = plan_jobs(sweep)
    states = job_states(plan)
    todo = [j for j in plan.jobs if states[j.key].state in ("missing", "failed")]
    counts = {k: sum(j.kind == k for j in todo) for k in ("extract", "train", "collect")}
    say(
        "to submit: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f" (of {len(plan.jobs)} jobs; "
        + f"{sum(s.state == 'done' for s in states.values())} done, "
        + f"{sum(s.state == 'running' for s in states.values())} running)"
    )
    if dry_run:
        return {"submitted": {}, "states": states, "plan": plan, "todo": todo}
    if executor == "local":
        parallel = int(max_parallel or sweep.local.get("max_parallel", 1))
        submitted = _run_local(plan, states, todo, parallel, say)
    else:
        submitted = _submit_slurm(plan, states, todo, say)
        if wait:
            _wait(plan, say)
    final = job_states(plan)
    return {"submitted": submitted, "states": final, "plan": plan, "todo": todo}


def _run_local(plan, states, todo, parallel, say) -> dict[str, list[str]]:
    """Run the jobs as local subprocesses in dependency order; wait for all."""
    sweep = plan.sweep
    ex = make_executor(sweep, "local")
    timeout = int(sweep.local.get("timeout_min", 24 * 60))
    ex.update_parameters(timeout_min=timeout)
    by_key = plan.by_key
    pending = [j.key for j in todo]
    done = {k for k, s in states.items() if s.state == "done"}
    elsewhere = {k for k, s in states.items() if s.state == "running"}
    failed: set[str] = set()
    mine: dict[str, Any] = {}
    submitted: dict[str, list[str]] = {"extract": [], "train": [], "collect": []}
    while pending or mine or elsewhere:
        for key, sj in list(mine.items()):
            if sj.done():
                del mine[key]
                job = by_key[key]
                if job.kind == "collect":
                    job.meta["done_models"] = [
                        str(by_key[d].output) for d in job.deps if d in done
                    ]
                ok, detail = output_done(job)
                (done if ok else failed).add(key)
                why = "" if ok else f" ({detail}; log {sj.paths.stderr})"
                say(f"{'done' if ok else 'FAILED'}: {key}{why}")
        if elsewhere:
            fresh = job_states(plan)
            for key in list(elsewhere):
                if fresh[key].state != "running":
                    elsewhere.discard(key)
                    (done if fresh[key].state == "done" else failed).add(key)
        for key in list(pending):
            job = by_key[key]
            deps = job.deps
            if job.kind == "collect":
                ready = all(d in done or d in failed for d in deps)
            else:
                if any(d in failed for d in deps):
                    pending.remove(key)
                    failed.add(key)
                    say(f"skipped: {key} (a job it needs failed)")
                    continue
                ready = all(d in done for d in deps)
            if ready and len(mine) < parallel:
                sj = ex.submit(job_main, key, job.argv, str(_jobs_dir(sweep)))
                _record_submission(sweep, job, sj, "local")
                mine[key] = sj
                pending.remove(key)
                submitted[job.kind].append(key)
                say(f"started: {key} (pid {sj.job_id})")
        time.sleep(0.2)
    return submitted


def _submit_slurm(plan, states, todo, say) -> dict[str, list[str]]:
    """Submit extraction arrays, training jobs and the collection with dependencies."""
    sweep = plan.sweep
    by_key = plan.by_key
    ids: dict[str, str] = {
        k: str(s.job_id) for k, s in states.items() if s.state == "running" and s.job_id
    }
    todo_keys = {j.key for j in todo}
    submitted: dict[str, list[str]] = {"extract": [], "train": [], "collect": []}
    jd = str(_jobs_dir(sweep))

    def dependency(keys: Iterable[str], how: str) -> dict[str, Any]:
        pend = sorted({ids[k].split("_")[0] for k in keys if k in ids})
        return {"dependency": f"{how}:" + ":".join(pend)} if pend else {}

    # extraction: one array per cache
    for ckey in dict.fromkeys(j.cache for j in plan.of_kind("extract")):
        jobs = [j for j in plan.of_kind("extract") if j.cache == ckey and j.key in todo_keys]
        if not jobs:
            continue
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(job_name=f"ft-extract-{ckey}", **_resources(sweep, "extract"))
        sjs = ex.map_array(
            job_main, [j.key for j in jobs], [j.argv for j in jobs], [jd] * len(jobs)
        )
        for j, sj in zip(jobs, sjs, strict=True):
            _record_submission(sweep, j, sj, "slurm")
            ids[j.key] = str(sj.job_id)
            submitted["extract"].append(j.key)
        array = sjs[0].job_id.split("_")[0]
        say(f"submitted extraction array {array}: {len(jobs)} tasks ({ckey})")
    # training: one array per cache, after its extraction
    for ckey in dict.fromkeys(j.cache for j in plan.of_kind("train")):
        jobs = [j for j in plan.of_kind("train") if j.cache == ckey and j.key in todo_keys]
        if not jobs:
            continue
        res = _resources(sweep, "train")
        extra = dict(res.pop("additional_parameters", {}))
        dep = dependency(jobs[0].deps, "afterok")
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(
            job_name=f"ft-train-{ckey}", **res, **dep,
            **({"additional_parameters": extra} if extra else {}),
        )  # fmt: skip
        sjs = ex.map_array(
            job_main, [j.key for j in jobs], [j.argv for j in jobs], [jd] * len(jobs)
        )
        for j, sj in zip(jobs, sjs, strict=True):
            _record_submission(sweep, j, sj, "slurm")
            ids[j.key] = str(sj.job_id)
            submitted["train"].append(j.key)
        say(
            f"submitted training array {sjs[0].job_id.split('_')[0]}: {len(jobs)} tasks "
            f"({ckey}){' after ' + dep['dependency'] if dep else ''}"
        )
    collect = by_key["collect"]
    if collect.key in todo_keys:
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(
            job_name=f"ft-collect-{sweep.name}",
            **_resources(sweep, "collect"),
            **dependency(collect.deps, "afterany"),
        )
        sj = ex.submit(job_main, collect.key, collect.argv, jd)
        _record_submission(sweep, collect, sj, "slurm")
        submitted["collect"].append(collect.key)
        say(f"submitted collection {sj.job_id}")
    say(f"follow it with: factortopy sweep status {sweep.path}")
    return submitted


def _wait(plan: Plan, say: Callable[[str], None], poll: float = 30.0) -> None:
    while True:
        states = job_states(plan)
        if not any(s.state == "running" for s in states.values()):
            return
        time.sleep(poll)


# ---------------------------------------------------------------------- index


def index_row(model_path: Path, meta: Mapping[str, Any], run: Mapping | None, root: Path):
    """One index row: a model's scores, hierarchy slope, convergence and job costs."""
    import numpy as np

    from ..core.analyses import hierarchy_levels, hierarchy_slope
    from ..core.fitted_model import FittedModel

    m = FittedModel.load(model_path)
    s = m.summary
    conv = s.get("convergence") or {}
    row: dict[str, Any] = {k: meta.get(k, "") for k in INDEX_HEAD[:7]}
    row["r2_test_mean"] = s.get("r2_test_mean")
    row["r_test_mean"] = s.get("r_test_mean")
    r2 = m.scores.get("r2_test")
    for k, name in enumerate(m.roi_names, start=1):
        vals = None if r2 is None else np.asarray(r2)[np.asarray(m.roi) == k]
        row[f"r2_{name}"] = (
            float(np.nanmean(vals)) if vals is not None and np.isfinite(vals).any() else None
        )
    slope = intercept = None
    if m.roi_names:
        try:
            hs = hierarchy_slope(m.layer, hierarchy_levels(m.roi, m.roi_names))
            slope, intercept = float(hs.slope), float(hs.intercept)
        except ValueError:
            pass
    row.update(
        hierarchy_slope=slope,
        hierarchy_intercept=intercept,
        convergence_state=conv.get("state", ""),
        convergence_line=conv.get("line", ""),
        steps=s.get("steps"),
        epochs=s.get("epochs"),
        train_seconds=s.get("train_seconds"),
        job_seconds=(run or {}).get("seconds"),
        peak_rss_mb=(run or {}).get("peak_rss_mb"),
        device=s.get("device", ""),
        n_vertices=m.n_vertices,
        path=os.path.relpath(model_path, root),
    )
    return row


def write_index(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write index rows as CSV (columns: the fixed ones, per-ROI R² in between)."""
    from ..core.atomic import atomic_path

    rois: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("r2_") and k not in ("r2_test_mean",) and k not in rois:
                rois.append(k)
    cols = [*INDEX_HEAD, *rois, *INDEX_TAIL]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_path(path, suffix=".csv") as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    return path


def collect(path: str | os.PathLike, say: Callable[[str], None] = print) -> Path:
    """Write ``results.csv``: one row per finished model of the sweep."""
    sweep = load_sweep(path)
    plan = plan_jobs(sweep)
    rows = []
    for job in plan.of_kind("train"):
        ok, _ = output_done(job)
        if not ok:
            continue
        run = _read_json(_jobs_dir(sweep) / f"{job.key}.run.json")
        rows.append(index_row(job.output, {"key": job.key, **job.meta}, run, sweep.out))
    out = write_index(rows, sweep.out / INDEX_NAME)
    say(f"wrote {out}: {len(rows)} of {len(plan.of_kind('train'))} models")
    return out


def read_index(folder: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The rows of a sweep folder's ``results.csv`` (numbers as float), or None."""
    p = Path(folder)
    p = p / INDEX_NAME if p.is_dir() else p
    if not p.is_file():
        return None
    rows = []
    with p.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k in TEXT_COLUMNS:
                    row[k] = v
                    continue
                try:
                    row[k] = float(v) if v != "" else float("nan")
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows


# -------------------------------------------------------------------- gallery


def sort_rows(rows: list[dict[str, Any]], by: str | None, descending: bool = False) -> list:
    """Index rows sorted by a column (numbers numerically, missing values last)."""
    import math

    if not by:
        return list(rows)

    def missing(v: Any) -> bool:
        return v is None or v == "" or (isinstance(v, float) and math.isnan(v))

    have = [r for r in rows if not missing(r.get(by))]
    rest = [r for r in rows if missing(r.get(by))]
    numeric = all(isinstance(r[by], int | float) for r in have)
    have.sort(key=(lambda r: r[by]) if numeric else (lambda r: str(r[by])), reverse=descending)
    return have + rest


def caption(row: Mapping[str, Any]) -> list[str]:
    """Two caption lines of a gallery cell."""
    r2 = row.get("r2_test_mean")
    try:
        r2s = f"R² {float(r2):.3f}"
    except (TypeError, ValueError):
        r2s = "R² -"
    seed = row.get("seed")
    seed = int(seed) if isinstance(seed, float) and seed == seed else seed
    return [f"{row.get('backbone', '?')} · {row.get('recipe', '')} · s{seed}",
            f"{row.get('dataset', '')} · {r2s}"]  # fmt: skip


def gallery(
    folder: str | os.PathLike,
    map_name: str = "layer",
    view: str = "ventral",
    sort_by: str | None = None,
    descending: bool = False,
    size_px: int = 220,
    n_cols: int | None = None,
    out_path: str | os.PathLike | None = None,
    loader=None,
):
    """The sweep's models as a grid of small brains (same map, same view).

    Returns
    -------
    image : uint8 (H, W, 4)
    cells : list of scene.gallery.Cell
    rows : list of dict
        The index rows in grid order (``rows[i]`` is drawn in ``cells[i]``); each has
        ``abs_path``, its model file.
    """
    from ..scene.gallery import gallery_grid, thumbnail_cached

    root = sweep_folder(folder)
    rows = read_index(root)
    if rows is None:
        raise FileNotFoundError(
            f"{root}: no {INDEX_NAME}; run `factortopy sweep collect {root}` first"
        )
    if not rows:
        raise ValueError(f"{root / INDEX_NAME} lists no models yet")
    if sort_by and sort_by not in rows[0]:
        raise ValueError(f"no column {sort_by!r} in {root / INDEX_NAME}; columns: {list(rows[0])}")
    rows = sort_rows(rows, sort_by, descending)
    thumbs = []
    for r in rows:
        r["abs_path"] = str((root / r["path"]).resolve())
        thumbs.append(
            thumbnail_cached(
                r["abs_path"], root / "gallery-cache", map_name, view, size_px, loader=loader
            )
        )
    image, cells = gallery_grid(
        thumbs, [caption(r) for r in rows], n_cols=n_cols, out_path=out_path
    )
    return image, cells, rows
