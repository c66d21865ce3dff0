"""Runtime environment: device selection and the Mesa/triton guard.

The Mesa/triton guard
---------------------
Once Mesa's software OpenGL is loaded into a process (napari, vispy or pyvista on a
machine without a GPU driver), importing ``triton`` loads a second, incompatible
LLVM and the process segfaults. torch imports triton as a side effect of
``torch._dynamo`` (pulled in by the first optimiser). Triton only serves GPUs, so on
a machine where torch sees no CUDA device it is useless, and blocking it costs
nothing: torch then reports "no triton" and ``torch.compile`` falls back to its C++
CPU backend. On a machine with a real GPU the guard lets triton load as usual.

The guard is a :data:`sys.meta_path` finder that decides at the moment ``triton``
is first imported (by then torch is loaded, so asking torch about CUDA is cheap).
It is installed when :mod:`napari_factortopy` is imported; installing it twice is a
no-op. Set ``FACTORTOPY_ALLOW_TRITON=1`` to disable it.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from typing import Any

__all__ = [
    "TritonGuard",
    "available_devices",
    "busy_note",
    "cores_in_use",
    "install_triton_guard",
    "limit_malloc_arenas",
    "machine_busy",
    "resolve_device",
]


class TritonGuard(importlib.abc.MetaPathFinder):
    """Refuse to import ``triton`` in processes where torch sees no CUDA device."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname != "triton" or os.environ.get("FACTORTOPY_ALLOW_TRITON") == "1":
            return None
        torch = sys.modules.get("torch")
        if torch is None or not hasattr(torch, "cuda"):
            return None  # torch not (fully) loaded: nothing to decide with, stay out
        try:
            has_gpu = bool(torch.cuda.is_available())
        except Exception:  # pragma: no cover - broken driver: treat as no GPU
            has_gpu = False
        if has_gpu:
            return None
        sys.modules["triton"] = None  # later imports and find_spec() see "absent"
        raise ModuleNotFoundError(
            "triton is disabled by napari-factortopy on machines without a CUDA device "
            "(it crashes against Mesa's OpenGL); set FACTORTOPY_ALLOW_TRITON=1 to allow it",
            name="triton",
        )


#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap the C allocator's arenas (glibc's ``M_ARENA_MAX``) at ``arenas``.

    glibc gives threads that allocate at the same time arenas of their own (up to 8 per
    core), and memory freed in one is not reused by another. A streamed training's
    read-ahead thread and torch's worker threads then make the process's memory grow:
    at Algonauts' size with a 3-GiB limit, RSS grew by 1 GiB over 300 s of training;
    with two arenas it stayed flat, and the steps were not slower (BENCHMARKS.md, "At
    full size again"). Call it before the process starts threads: glibc fixes its
    arena limit when a second arena is first made. Same as ``MALLOC_ARENA_MAX=2`` in
    the environment, which takes precedence when set.

    Returns
    -------
    bool
        Whether the limit was set (False: not glibc, or the environment sets it).
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))


def install_triton_guard() -> bool:
    """Put a :class:`TritonGuard` first on :data:`sys.meta_path` (idempotent).

    Returns
    -------
    bool
        True if a guard is installed (now or before), False if triton was already
        imported (too late to guard).
    """
    if any(isinstance(f, TritonGuard) for f in sys.meta_path):
        return True
    if sys.modules.get("triton") is not None:
        return False
    sys.meta_path.insert(0, TritonGuard())
    return True


def available_devices() -> list[str]:
    """Names of the devices torch can use here, best first (e.g. ``['cuda', 'cpu']``)."""
    import torch

    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device: str | None = "auto"):
    """Turn a device name into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device or None
        ``"auto"`` / None picks CUDA > MPS > CPU; otherwise any torch device string
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises
    ------
    ValueError
        For an unknown name or a device that is not available here, naming the
        devices that are.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    avail = available_devices()
    if device in (None, "", "auto"):
        return torch.device(avail[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; expected 'auto' or one of {avail}") from exc
    if dev.type not in avail:
        raise ValueError(f"device {device!r} is not available here; available: {avail}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} does not exist; this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def busy_note(
    load: float, cores: int, threads: int | None, in_use: float | None = None
) -> str | None:
    """A warning for a CPU run started on a busy machine (None when it is not busy).

    Parameters
    ----------
    load : float
        The load average over the last minute (``os.getloadavg()[0]``): about the
        number of cores other work keeps busy before this run starts.
    cores : int
        CPU cores of the machine.
    threads : int or None
        Threads this run will use (None: torch's default, every core).
    in_use : float, optional
        Cores busy right now (the CPU use of the last fraction of a second). The load
        average lags: a job that ended a few seconds ago still counts in it for a
        minute or two, so a run started right after it would be warned for nothing.
        When given, the machine is as busy as the smaller of the two says.

    Busy means at least 0.75 of a core taken and fewer cores free than the run's
    threads: two runs that each take both cores of a 2-core machine were 3.5× slower
    each, and with one thread each they finished together sooner than one after the
    other (BENCHMARKS.md, "Two jobs on two cores").
    """
    want = threads or cores
    taken = load if in_use is None else min(load, in_use)
    free = cores - taken
    if taken < 0.75 or free >= want - 0.25:
        return None
    suggest = max(1, int(free + 0.25))
    now = "" if in_use is None else f" ({in_use:.1f} cores in use now)"
    return (
        f"the machine is busy: load average {load:.1f} over the last minute{now} on "
        f"{cores} cores, and this run uses {want} thread{'s' if want != 1 else ''}; its "
        f"steps can be several times slower while the other work runs"
        + (f" (--threads {suggest} uses the free cores only)" if suggest < want else "")
    )


def cores_in_use(cores: int, seconds: float = 0.25) -> float | None:
    """Cores (of ``cores``) kept busy over the next ``seconds`` by all processes (this
    one sleeps meanwhile), or None without psutil."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - napari brings psutil
        return None
    return psutil.cpu_percent(interval=seconds) / 100.0 * cores


def machine_busy(device, threads: int | None) -> str | None:
    """:func:`busy_note` for a run on ``device`` starting now (None on an accelerator,
    or where the system has no load average). The CPU use now is sampled (0.25 s) only
    when the load average says busy."""
    if getattr(device, "type", str(device)) != "cpu" or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if busy_note(load, cores, threads) is None:
        return None
    return busy_note(load, cores, threads, cores_in_use(cores))
