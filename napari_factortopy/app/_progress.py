"""The command line's progress bars (tqdm on stderr)."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(total: float, desc: str, unit: str = "it"):
    """A tqdm bar on stderr that stays on screen when it closes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True, file=sys.stderr)
