"""Layering rules from docs/ARCHITECTURE.md, checked on the source with ``ast``.

- ``core/`` and ``data/`` never import Qt, napari, magicgui, vispy, superqt, nor the
  plugin layer or the command line.
- The plugin layer (``_napari/``) and ``cli.py`` import torch, open_clip and timm only
  lazily, inside functions, so that napari and ``factortopy --help`` start fast.
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
    "napari_factortopy.cli",
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


def test_core_and_data_do_not_import_gui_or_plugin_layer():
    bad = [
        f"{_rel(path)}:{line} imports {name}"
        for path in _modules("core", "data")
        for line, name in _imports(path)
        if _matches(name, GUI_FORBIDDEN)
    ]
    assert not bad, "core/ and data/ must stay free of GUI code:\n" + "\n".join(bad)


def test_plugin_layer_and_cli_import_heavy_libraries_lazily():
    files = [*_modules("_napari"), *_modules("cli.py")]
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
        "from .. import cli\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\n"
        "def f():\n    import timm\n",
        encoding="utf-8",
    )
    names = [n for _, n in _imports(mod, root=tmp_path)]
    top = [n for _, n in _imports(mod, top_level_only=True, root=tmp_path)]
    assert _matches("qtpy", GUI_FORBIDDEN) and "qtpy" in names
    assert "napari_factortopy.cli" in names
    assert "torch" in top and "timm" not in top and "timm" in names


_PLUGIN_MODULES = [
    *sorted(
        f"napari_factortopy._napari.{p.stem}"
        for p in (Path(__file__).parents[1] / "napari_factortopy" / "_napari").glob("*.py")
        if p.stem != "__init__"
    ),
    "napari_factortopy.cli",
    "napari_factortopy._cli_data",
    "napari_factortopy._cli_figure",
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
