"""A sweep's description: the TOML file read and checked (structure and names only).

The file's format is docs/SWEEPS.md; errors name the file and the line of the key at
fault (tomllib gives no positions: :func:`_find_line` finds them in the text).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._records import _read_json

__all__ = [
    "BackboneSpec",
    "DatasetSpec",
    "RecipeSpec",
    "Sweep",
    "SweepError",
    "load_sweep",
    "sweep_folder",
]

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


class SweepError(ValueError):
    """A sweep description that cannot be run (names the file and line)."""


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


def _need_list(path: Path, text: str, raw: Mapping[str, Any], key: str) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise _bad(path, _find_line(text, key), f"{key!r} must be a non-empty list")
    return value


def _datasets(path: Path, text: str, base: Path, items: list) -> list[DatasetSpec]:
    """The ``[[datasets]]`` tables (one spec per subject of a ``subjects`` list)."""
    datasets: list[DatasetSpec] = []
    for i, d in enumerate(items):
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
    return datasets


def _backbones(path: Path, text: str, items: list) -> list[BackboneSpec]:
    """The ``[[backbones]]`` tables (or bare spec strings)."""
    backbones: list[BackboneSpec] = []
    for i, b in enumerate(items):
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
    return backbones


def _recipes(path: Path, text: str, raw_recipes: list) -> list[RecipeSpec]:
    """The ``[[recipes]]`` tables: train options → command-line arguments."""
    recipes: list[RecipeSpec] = []
    for i, r in enumerate(raw_recipes):
        at = _table_line(text, "recipes", i)
        if not isinstance(r, dict):
            raise _bad(path, at or _find_line(text, "recipes"), "each recipe must be a table")
        opts = {k: v for k, v in r.items() if k not in ("name", "args")}
        args = [*_option_args(opts), *(str(a) for a in r.get("args", []))]
        rname = str(r.get("name") or f"recipe{i}")
        line = _find_line(text, "name", rname, max(at - 1, 0)) if r.get("name") else at
        recipes.append(RecipeSpec(rname, tuple(args), tuple(opts.items()), line or at))
    return recipes


def _check_names(path: Path, datasets: list, backbones: list, recipes: list) -> None:
    """Names usable in file names (no ``__``), unique per kind."""
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

    datasets = _datasets(path, text, base, _need_list(path, text, raw, "datasets"))
    backbones = _backbones(path, text, _need_list(path, text, raw, "backbones"))
    recipes = _recipes(path, text, raw.get("recipes") or [{"name": "default"}])
    _check_names(path, datasets, backbones, recipes)
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
