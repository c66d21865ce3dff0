"""docs/ARCHITECTURE.md's map of the package matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _map_entries(text: str) -> set[str]:
    """Paths listed in the first code block, from their indentation (2 spaces a level)."""
    block = text.split("```", 2)[1]
    entries: set[str] = set()
    stack: list[str] = []
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m or not (m.group(2).endswith(("/", ".py", ".yaml"))):
            continue
        depth = len(m.group(1)) // 2
        name = m.group(2)
        stack = stack[:depth]
        path = "/".join([*stack, name.rstrip("/")])
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        entries.add(path)
    return entries


def test_architecture_map_lists_every_module_and_nothing_else():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    listed = {e for e in _map_entries(text) if e.endswith(".py")}
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "napari_factortopy").rglob("*.py")}
    assert listed, "no map found"
    assert not tree - listed, f"modules missing from the map: {sorted(tree - listed)}"
    assert not listed - tree, f"the map lists modules that do not exist: {sorted(listed - tree)}"


def test_map_parser_reads_nesting():
    text = "x\n```\nnapari_factortopy/\n  core/\n    a.py   what\n  b.py\n```\n"
    assert _map_entries(text) == {
        "napari_factortopy",
        "napari_factortopy/core",
        "napari_factortopy/core/a.py",
        "napari_factortopy/b.py",
    }
