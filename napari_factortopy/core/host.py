"""This machine and its processes: whose is a file left behind, and does its writer live.

Writers put ``<host>-<pid>`` in the names of what they may leave behind when killed:
temporaries (:mod:`napari_factortopy.core.atomic`) and claims on a feature cache
(:mod:`napari_factortopy.data.cache.claims`). ``<host>`` is :data:`HOST_ID`, 8 hex
digits of a hash of the machine's name. A later process judges such a file by
:func:`process_alive` only when its ``<host>`` is its own :data:`HOST_ID`: a pid means
nothing on another machine sharing the folder. A sweep's job records
(:mod:`napari_factortopy.app.sweep.state`) judge their pids the same way.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

__all__ = ["HOST_ID", "process_alive"]

#: This machine, as 8 hex digits of the sha256 of its name (stable across processes).
HOST_ID: str = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs.

    Parameters
    ----------
    pid : int
        A process id of this machine.

    Returns
    -------
    bool
        ``False`` when no such process exists, or it is a zombie (finished, not yet
        reaped by its parent: it writes nothing any more). ``True`` when it exists,
        also when it belongs to another user (:func:`os.kill` is refused) or its state
        cannot be read.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError among them: it exists, owned by someone else
        return True
    try:  # a zombie (finished child not yet reaped) is gone for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
