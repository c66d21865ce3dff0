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
RESOURCES = ROOT / "resources"  # the single source of the shipped assets
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


def test_package_resources_are_a_link_to_top_level():
    inner = ROOT / PACKAGE / "resources"
    assert inner.is_symlink(), f"{inner} should be a symlink to ../resources"
    assert inner.resolve() == RESOURCES.resolve()
    assert (RESOURCES / "roi_groups.csv").is_file() and not RESOURCES.is_symlink()


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


def _shipped_resources() -> dict[str, bytes]:
    """Every file of the top-level resources/ by its path inside the package."""
    return {
        f"resources/{f.relative_to(RESOURCES).as_posix()}": f.read_bytes()
        for f in sorted(RESOURCES.rglob("*"))
        if f.is_file() and "__pycache__" not in f.parts
    }


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A new virtual environment (its python, its site-packages) whose own
    site-packages comes first; the test
    environment's site-packages follows through a ``.pth`` line (the dependencies:
    numpy, npe2, …, offline), which does not process that folder's own ``.pth`` files,
    so the editable install of the source tree stays invisible."""
    import sysconfig

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def test_wheel_ships_manifest_and_resources_and_validates_in_a_fresh_venv(tmp_path):
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

    # The manifest and every resource are in the wheel as regular files equal to the
    # top-level ones (the package's links resolved at build time).
    shipped = _shipped_resources()
    assert len(shipped) >= 10, sorted(shipped)
    with zipfile.ZipFile(wheel) as zf:
        links = [i.filename for i in zf.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
        assert not links, f"stored as symlinks in the wheel: {links}"
        assert zf.read(f"{PACKAGE}/napari.yaml") == MANIFEST.read_bytes()
        assert f"{PACKAGE}/_napari/_reader.py" in zf.namelist()
        missing = {f"{PACKAGE}/{rel}" for rel in shipped} - set(zf.namelist())
        assert not missing, f"resources left out of the wheel: {sorted(missing)}"
        for rel, data in shipped.items():
            assert zf.read(f"{PACKAGE}/{rel}") == data, f"{rel} differs in the wheel"
        entry_points = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "napari.manifest" in zf.read(entry_points).decode()

    python, site = _fresh_venv(tmp_path)
    _run([*pip, "--python", str(python), "install", *offline, str(wheel)], cwd=tmp_path)
    env = _env_without_source_tree()
    installed = site / PACKAGE / "napari.yaml"
    assert installed.is_file() and not installed.is_symlink()
    assert installed.read_bytes() == MANIFEST.read_bytes()

    # The wheel's copy is what gets imported and whose metadata npe2 reads; every
    # resource loads through importlib.resources with the top-level file's bytes.
    probe = (
        "import json, sys, pathlib\n"
        "from importlib import metadata, resources\n"
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
        f"root = resources.files({PACKAGE!r})\n"
        "sizes = {rel: len(root.joinpath(*rel.split('/')).read_bytes())\n"
        "         for rel in json.loads(sys.argv[2])}\n"
        "print(pm.name)\n"
        "print(json.dumps(sizes))\n"
    )
    import json

    res = _run(
        [str(python), "-c", probe, str(site), json.dumps(sorted(shipped))], cwd=tmp_path, env=env
    )
    name, sizes = res.stdout.strip().splitlines()
    assert name == DIST
    assert json.loads(sizes) == {rel: len(data) for rel, data in shipped.items()}
    npe2 = [str(python), "-m", "npe2"]
    res = _run([*npe2, "validate", PACKAGE], cwd=tmp_path, env=env)
    assert "valid" in res.stdout
    _run([*npe2, "validate", PACKAGE, "--imports"], cwd=tmp_path, env=env)
