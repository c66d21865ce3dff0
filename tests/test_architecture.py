"""Layering rules from docs/ARCHITECTURE.md, checked on the source with ``ast``.

- Dependencies point down only: ``core`` ← ``data`` ← ``scene`` ← ``app`` ← ``_napari``
  (every import, module level or inside a function), and no two modules import each
  other in a circle.
- ``core/``, ``data/``, ``scene/`` and ``app/`` never import Qt, napari, magicgui, vispy,
  superqt.
- The plugin layer (``_napari/``), ``scene/`` and ``app/`` import torch, open_clip and
  timm only lazily, inside functions, so that napari and ``factortopy --help`` start fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "napari_factortopy"

GUI_FORBIDDEN = (
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "napari",
    "magicgui",
    "vispy",
    "superqt",
    "napari_factortopy._napari",
    "napari_factortopy.app.cli",
)
HEAVY = ("torch", "open_clip", "timm")


def _modules(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        p = PKG / part
        if p.is_dir():
            out.extend(sorted(p.rglob("*.py")))
        elif p.is_file():
            out.append(p)
    return out


def _resolve(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """Absolute dotted name of an ``ImportFrom``'s module (handles relative imports)."""
    if node.level == 0:
        return node.module or ""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        base = parts[: len(parts) - node.level + 1]
    else:
        base = parts[: len(parts) - node.level]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(
    path: Path, top_level_only: bool = False, root: Path = PKG.parent
) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``path``.

    With ``top_level_only``, imports inside function bodies are left out (imports inside
    ``if``/``try`` at module level still count: they run at import time).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                mod = _resolve(child, path, root)
                found.append((child.lineno, mod))
                # ``from napari_factortopy import cli`` imports the submodule too
                found.extend((child.lineno, f"{mod}.{a.name}") for a in child.names)
            visit(child)

    visit(tree)
    return found


def _matches(name: str, prefixes: tuple[str, ...]) -> str | None:
    for p in prefixes:
        if name == p or name.startswith(p + "."):
            return p
    return None


def _rel(path: Path) -> str:
    return path.relative_to(PKG.parent).as_posix()


def test_layers_below_the_plugin_do_not_import_gui():
    bad = [
        f"{_rel(path)}:{line} imports {name}"
        for path in _modules("core", "data", "scene", "app")
        for line, name in _imports(path)
        if _matches(name, GUI_FORBIDDEN)
    ]
    assert not bad, "core/, data/, scene/, app/ must stay free of GUI code:\n" + "\n".join(bad)


#: Rank of each layer: a module may import only modules of its own rank or below.
LAYERS = {"core": 0, "data": 1, "scene": 2, "app": 3, "_napari": 4}
#: What the package root (``napari_factortopy/__init__.py``) may import.
ROOT_ALLOWED = ("napari_factortopy.core.runtime", "napari_factortopy.core.version")


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "napari_factortopy":
        return None
    if len(parts) == 1:
        return ""  # the package root
    return parts[1] if parts[1] in LAYERS else "?" + parts[1]


def _module_name(path: Path, root: Path = PKG.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _own_modules(root: Path = PKG.parent) -> dict[str, Path]:
    pkg = root / "napari_factortopy"
    return {_module_name(p, root): p for p in sorted(pkg.rglob("*.py"))}


def _graph(root: Path = PKG.parent) -> dict[str, set[str]]:
    """Module → the package's modules it imports (anywhere in its body)."""
    mods = _own_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for _, imported in _imports(path, root=root):
            # ``from pkg import name`` lists pkg.name too: keep it only if it is a module
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph


def upward_imports(root: Path = PKG.parent) -> list[str]:
    """Every import that points up the layers (or out of them), as readable lines."""
    bad = []
    for mod, deps in _graph(root).items():
        layer = _layer_of(mod)
        for dep in sorted(deps):
            dep_layer = _layer_of(dep)
            if layer == "":
                ok = dep in ROOT_ALLOWED
            elif layer not in LAYERS or dep_layer not in LAYERS:
                ok = False
            else:
                ok = LAYERS[dep_layer] <= LAYERS[layer]
            if not ok:
                bad.append(f"{mod} ({layer or 'root'}) imports {dep} ({dep_layer or 'root'})")
    return bad


def import_cycles(root: Path = PKG.parent) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = _graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_imports_point_down_the_layers():
    assert set(_own_modules()) >= {"napari_factortopy.core.model", "napari_factortopy.app.cli"}
    bad = upward_imports()
    assert not bad, "imports must point down core ← data ← scene ← app ← _napari:\n" + (
        "\n".join(bad)
    )


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(
        " ↔ ".join(c) for c in cycles
    )


def test_layer_checks_catch_violations(tmp_path):
    """An upward import, an unknown top-level module and a cycle are all reported."""
    pkg = tmp_path / "napari_factortopy"
    for sub in ("core", "data", "scene"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "__init__.py").write_text("from .core import runtime\n", encoding="utf-8")
    (pkg / "core" / "runtime.py").write_text("", encoding="utf-8")
    (pkg / "core" / "a.py").write_text("def f():\n    from ..data import b\n", encoding="utf-8")
    (pkg / "data" / "b.py").write_text("from ..core import a\n", encoding="utf-8")
    (pkg / "scene" / "c.py").write_text("from .. import stray\n", encoding="utf-8")
    (pkg / "stray.py").write_text("", encoding="utf-8")
    bad = upward_imports(tmp_path)
    assert any("core.a (core) imports napari_factortopy.data.b" in b for b in bad), bad
    assert any("scene.c (scene) imports napari_factortopy.stray" in b for b in bad), bad
    assert not any("data.b" in b.split(" imports ")[0] for b in bad), bad  # data → core is fine
    assert import_cycles(tmp_path) == [["napari_factortopy.core.a", "napari_factortopy.data.b"]]


def test_plugin_layer_and_cli_import_heavy_libraries_lazily():
    files = [*_modules("_napari"), *_modules("app"), *_modules("scene")]
    assert files, "no plugin-layer modules found"
    bad = [
        f"{_rel(path)}:{line} imports {name} at module level"
        for path in files
        for line, name in _imports(path, top_level_only=True)
        if _matches(name, HEAVY)
    ]
    assert not bad, "import torch/open_clip/timm inside functions:\n" + "\n".join(bad)


def test_checker_catches_violations(tmp_path):
    """The checks above would notice a violation (guards against a vacuous pass)."""
    mod = tmp_path / "napari_factortopy" / "core" / "bad.py"
    mod.parent.mkdir(parents=True)
    mod.write_text(
        "import os\n"
        "from qtpy import QtWidgets\n"
        "from ..app import cli\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\n"
        "def f():\n    import timm\n",
        encoding="utf-8",
    )
    names = [n for _, n in _imports(mod, root=tmp_path)]
    top = [n for _, n in _imports(mod, top_level_only=True, root=tmp_path)]
    assert _matches("qtpy", GUI_FORBIDDEN) and "qtpy" in names
    assert "napari_factortopy.app.cli" in names
    assert "torch" in top and "timm" not in top and "timm" in names


_PLUGIN_MODULES = [
    *sorted(
        f"napari_factortopy._napari.{p.stem}"
        for p in (Path(__file__).parents[1] / "napari_factortopy" / "_napari").glob("*.py")
        if p.stem != "__init__"
    ),
    "napari_factortopy.app.cli",
    "napari_factortopy.app.cli_data",
    "napari_factortopy.app.cli_figure",
]


@pytest.mark.parametrize("module", [",".join(_PLUGIN_MODULES)])
def test_plugin_module_import_does_not_load_torch(module):
    code = (
        "import sys, importlib\n"
        f"[importlib.import_module(m) for m in {module!r}.split(',')]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'open_clip', 'timm'))\n"
        "print(','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"importing {module} loaded: {res.stdout.strip()}"
