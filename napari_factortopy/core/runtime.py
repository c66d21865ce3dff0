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

__all__ = ["TritonGuard", "available_devices", "install_triton_guard", "resolve_device"]


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
