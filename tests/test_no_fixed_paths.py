"""Tests, benchmarks and scripts write only under pytest's tmp_path, a fresh temporary
folder or a folder the user names: no hard-coded absolute temp (or home) path, which
exists only on the machine of whoever created it (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("tests", "bench", "scripts")
SUFFIXES = {".py", ".sh", ".md", ".toml", ".cfg", ".ini", ".txt", ".json", ".yaml", ".yml"}

# an absolute temp folder (POSIX, macOS, Windows), the system temp folder used with a
# fixed name, or a user's home folder spelled out
FIXED_PATH = re.compile(
    r"(?<![\w.~$])/(?:var/|private/)?tmp(?:/|\b)"
    r"|/var/folders/"
    r"|\b[A-Za-z]:[\\/]+(?:Windows[\\/]+)?Temp\b"
    r"|\bgettempdir\s*\("
    r"|(?<![\w.])/(?:home|Users)/\w"
)


def fixed_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line of ``text`` that names a fixed absolute path."""
    return [
        (i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if FIXED_PATH.search(line)
    ]


def _files() -> list[Path]:
    me = Path(__file__).resolve()
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if (
                path.is_file()
                and path.suffix in SUFFIXES
                and path.resolve() != me
                and "__pycache__" not in path.parts
            ):
                out.append(path)
    return out


@pytest.mark.parametrize(
    "line",
    [
        'SHOTS = "/' + 'tmp/shots"',
        'Image.save("/' + 'tmp/factortopy-ventral.png")',
        "--work /" + "var/tmp/bench8",
        "cd /" + "tmp && ls",
        "Path(tempfile." + 'gettempdir()) / "factortopy-bench"',
        r'open("C:\\' + r'Temp\\x.png")',
        'p = "/' + 'Users/alice/shots"',
        'p = "/' + 'home/bob/x.png"',
    ],
)
def test_detector_finds_fixed_paths(line):
    assert fixed_paths(line) == [(1, line)]


@pytest.mark.parametrize(
    "line",
    [
        'shot_dir / "shots.png"',
        "tmp_path / 'a.png'",
        "with tempfile.TemporaryDirectory() as tmp:",
        "tmp = Path(tempfile.mkdtemp())",
        "os.path.join(tmp, 'x')",
        "napari_factortopy/tmp/ok.txt",
        "$TMPDIR/x",
        "~/tmp",
        "http://example.org/tmp/x",
    ],
)
def test_detector_ignores_relative_and_fresh_paths(line):
    assert fixed_paths(line) == []


def test_no_hard_coded_absolute_temp_path():
    files = _files()
    assert any(f.name == "conftest.py" for f in files)  # the walk found the tests
    bad = [
        f"{path.relative_to(ROOT)}:{i}: {line}"
        for path in files
        for i, line in fixed_paths(path.read_text(errors="replace"))
    ]
    assert not bad, "hard-coded absolute paths (use tmp_path or shot_dir):\n" + "\n".join(bad)
