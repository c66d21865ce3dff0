"""The npe2 manifest (napari.yaml) is valid and really ships with the package.

Two installs are checked:

- the editable install that ``scripts/test.sh`` makes (``pip install -e .``);
- a wheel built from a copy of the source tree and installed with ``--target`` into a
  temporary folder, validated from that folder with the source tree off ``sys.path``.

Everything runs offline: the wheel is built with ``--no-build-isolation --no-deps
--no-index``, so pip needs no package index.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "napari.yaml"
PACKAGE = "napari_factortopy"
DIST = "napari-factortopy"
READER_CMD = "napari-factortopy.read_ftopy"

# Left out when copying the source tree to build the wheel from: top-level folders of
# environments, caches and outputs, and byte-code anywhere.
_TOP_LEVEL_IGNORE = {
    ".git",
    ".venv",
    "build",
    "dist",
    ".pytest_cache",
    ".ruff_cache",
    "demo-out",
    "out",
    "shared",
}


def _copy_ignore(folder: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder) == ROOT:
        ignored |= _TOP_LEVEL_IGNORE.intersection(names)
    return ignored


def _npe2() -> list[str]:
    exe = Path(sys.executable).parent / "npe2"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "npe2"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{' '.join(cmd)} failed ({res.returncode})\n"
        f"--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )
    return res


def _env_without_source_tree(pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_top_level_manifest_declares_reader():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == DIST
    assert pm.display_name == "FactorTopy"
    commands = {c.id: c for c in pm.contributions.commands or []}
    assert commands[READER_CMD].python_name == "napari_factortopy._napari._reader:get_reader"
    (reader,) = pm.contributions.readers or []
    assert reader.command == READER_CMD
    assert reader.filename_patterns == ["*.ftopy", "*.pth", "*.ckpt", "*.pt"]
    assert reader.accepts_directories is False


def test_package_manifest_is_link_to_top_level():
    inner = ROOT / PACKAGE / "napari.yaml"
    assert inner.is_symlink(), f"{inner} should be a symlink to ../napari.yaml"
    assert inner.resolve() == MANIFEST.resolve()


def test_editable_install_validates(tmp_path):
    from importlib import metadata

    try:
        metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{DIST} is not installed: run `bash scripts/test.sh` (pip install -e .)")
    # cwd=tmp_path: the package must be found through the install, not the cwd.
    env = _env_without_source_tree()
    res = _run([*_npe2(), "validate", PACKAGE], cwd=tmp_path, env=env)
    assert "valid" in res.stdout
    _run([*_npe2(), "validate", PACKAGE, "--imports"], cwd=tmp_path, env=env)


def test_wheel_ships_manifest_and_validates(tmp_path):
    # Build from a copy so that stale build/ folders in the work tree don't leak in.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_copy_ignore)
    wheelhouse = tmp_path / "wheelhouse"
    pip = [sys.executable, "-m", "pip"]
    offline = ["--no-deps", "--no-index", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-w", str(wheelhouse), str(src)],
        cwd=tmp_path,
    )
    (wheel,) = wheelhouse.glob("napari_factortopy-*.whl")

    # The manifest is in the wheel as a regular file equal to the top-level one.
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(f"{PACKAGE}/napari.yaml")
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode), "napari.yaml is stored as a symlink in the wheel"
        assert zf.read(info) == MANIFEST.read_bytes()
        assert f"{PACKAGE}/_napari/_reader.py" in zf.namelist()
        # every shipped resource (icons, legend tables, sample stimuli, ROI table)
        resources = ROOT / PACKAGE / "resources"
        expected = {
            f"{PACKAGE}/{f.relative_to(ROOT / PACKAGE).as_posix()}"
            for f in resources.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts
        }
        assert len(expected) >= 10, expected
        missing = expected - set(zf.namelist())
        assert not missing, f"resources left out of the wheel: {sorted(missing)}"
        entry_points = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "napari.manifest" in zf.read(entry_points).decode()

    site = tmp_path / "site"
    _run([*pip, "install", *offline, "--target", str(site), str(wheel)], cwd=tmp_path)
    installed = site / PACKAGE / "napari.yaml"
    assert installed.is_file() and not installed.is_symlink()
    assert installed.read_bytes() == MANIFEST.read_bytes()

    env = _env_without_source_tree(pythonpath=site)
    # The wheel's copy is what gets imported and whose metadata npe2 reads.
    probe = (
        "import sys, pathlib\n"
        "from importlib import metadata\n"
        f"import {PACKAGE} as m\n"
        "site = pathlib.Path(sys.argv[1]).resolve()\n"
        "assert pathlib.Path(m.__file__).resolve().is_relative_to(site), m.__file__\n"
        f"d = metadata.distribution({DIST!r})\n"
        "assert pathlib.Path(d.locate_file('')).resolve() == site, d.locate_file('')\n"
        "from npe2 import PluginManifest\n"
        f"pm = PluginManifest.from_distribution({DIST!r})\n"
        "pm.validate_imports()\n"
        "from napari_factortopy.core.resources import resource_path, sample_stimuli\n"
        "assert resource_path('factortopy.png').resolve().is_relative_to(site)\n"
        "assert len(sample_stimuli()) == 6 and pm.icon.endswith('factortopy.png')\n"
        "print(pm.name)\n"
    )
    res = _run([sys.executable, "-c", probe, str(site)], cwd=tmp_path, env=env)
    assert res.stdout.strip() == DIST
    res = _run([*_npe2(), "validate", PACKAGE], cwd=tmp_path, env=env)
    assert "valid" in res.stdout
    _run([*_npe2(), "validate", PACKAGE, "--imports"], cwd=tmp_path, env=env)
