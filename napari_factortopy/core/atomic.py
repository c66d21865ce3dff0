"""Atomic file writes: write beside the target, then rename over it.

A reader never sees a half-written file where a good one was: the content goes to a
temporary file in the target's folder, is flushed to disk, and only then replaces the
target with :func:`os.replace`. On any error the temporary file is removed and the
target is untouched.

Temporary names and stale temporaries
-------------------------------------
The temporary of ``folder/NAME`` is ``folder/.NAME.<host>-<pid>.<hex>.tmp[<suffix>]``
(``host``: :data:`~napari_factortopy.core.host.HOST_ID`, 8 hex digits of a hash of the
machine's name, ``pid``: the writer's process id). A writer killed with SIGKILL cannot
remove it, so every write first removes the **stale** temporaries of the same target:
those whose writer process is gone (same host,
:func:`~napari_factortopy.core.host.process_alive` is false) or that were last modified
more than :data:`STALE_SECONDS` ago (any host; also temporaries of older versions,
whose names hold no pid). Temporaries of live writers on this machine, and recent ones
of other machines sharing the folder, are left alone.

Permissions
-----------
The final file gets the permissions of a newly created file, ``0o666 & ~umask``,
whatever the library that wrote the temporary chose (safetensors, for example,
creates files ``0o600``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .host import HOST_ID, process_alive

__all__ = [
    "STALE_SECONDS",
    "atomic_path",
    "creation_mode",
    "remove_stale_temporaries",
    "temporary_name",
]

#: Age (seconds since the last modification) after which any temporary is stale.
STALE_SECONDS: float = 15 * 60


def temporary_name(target: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary path of one write of ``target`` (module docstring).

    Parameters
    ----------
    target : path
        The file to be written.
    suffix : str
        Appended after ``.tmp`` (for writers that pick the format from the name).

    Returns
    -------
    pathlib.Path
        ``target``'s folder / ``.NAME.<host>-<pid>.<hex>.tmp<suffix>``.
    """
    t = Path(target)
    return t.with_name(f".{t.name}.{HOST_ID}-{os.getpid()}.{uuid.uuid4().hex[:16]}.tmp{suffix}")


def remove_stale_temporaries(
    target: str | os.PathLike, *, max_age: float = STALE_SECONDS
) -> list[Path]:
    """Remove the stale temporaries of ``target`` left by killed writers.

    Parameters
    ----------
    target : path
        The file whose temporaries (``.NAME.*.tmp*`` beside it) are examined.
    max_age : float
        Seconds after which any temporary counts as stale.

    Returns
    -------
    list of pathlib.Path
        The temporaries removed (files, or folders such as a feature cache being
        built; errors removing one are ignored: another writer may have removed it
        first).
    """
    t = Path(target)
    folder = t.parent
    pattern = re.compile(
        r"^\." + re.escape(t.name) + r"\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[0-9a-f]+\.tmp"
    )
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = (
            m.group("pid") is not None
            and m.group("host") == HOST_ID
            and int(m.group("pid")) != os.getpid()
            and not process_alive(int(m.group("pid")))
        )
        if dead or age > max_age:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def creation_mode() -> int:
    """Permission bits of a newly created file: ``0o666 & ~umask``.

    Read from ``/proc/self/status`` where available (thread-safe); elsewhere by
    setting and restoring the umask.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Parameters
    ----------
    path : path
        The file to (re)write; its folder is created if missing.
    suffix : str, optional
        Suffix of the temporary name (default: ``path``'s own), for writers that pick
        the format from the name (PIL, nibabel, matplotlib).

    Yields
    ------
    Path
        Where to write. It is fsynced, given mode ``0o666 & ~umask``, then renamed
        over ``path``. Stale temporaries of ``path`` are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    ext = "".join(target.suffixes) if suffix is None else suffix
    tmp = temporary_name(target, ext)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, creation_mode())
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # the rename itself survives a power cut
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """fsync a folder (where the platform allows it), so a rename in it is durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
