"""Which process extracts which image range of a cache, so that no range is computed twice.

:meth:`FeatureCache.claim` records, in ``<cache>/.claims/``, which image range a
process is extracting (its host and pid, refreshed after every batch). A second
extraction of an overlapping range is refused while the claim lives; a claim whose
process is gone (same host) or that was not refreshed for 15 minutes is stale and
taken over.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from napari_factortopy.core.host import HOST_ID, process_alive

from .format import CacheError

__all__ = ["CLAIM_STALE_SECONDS"]

#: Seconds after which a claim that was not refreshed is stale.
CLAIM_STALE_SECONDS: float = 15 * 60


def _claim_stale(claim: Path, host: str, pid: int) -> bool:
    try:
        age = time.time() - claim.stat().st_mtime
    except OSError:
        return True
    if host == HOST_ID and pid != os.getpid() and not process_alive(pid):
        return True
    return age > CLAIM_STALE_SECONDS


class _Claims:
    """:meth:`~napari_factortopy.data.cache.FeatureCache.claim`."""

    _path: Path

    @contextmanager
    def claim(self, start: int, stop: int) -> Iterator[Callable[[], None]]:
        """Claim images ``start .. stop-1`` for one extraction (module docstring).

        Yields
        ------
        callable
            ``refresh()``: call it now and then (every batch) to keep the claim alive.

        Raises
        ------
        CacheError
            If another live process claims an overlapping range (the message names
            its host, pid and range).
        """
        folder = self._path / ".claims"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise CacheError(f"feature cache {self._path}: cannot write there: {exc}") from exc
        me = f"{HOST_ID}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        mine = folder / f"{int(start)}-{int(stop)}.{me}.json"
        body = {"start": int(start), "stop": int(stop), "host": socket.gethostname(),
                "pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat()}  # fmt: skip
        mine.write_text(json.dumps(body), encoding="utf-8")
        try:
            for other in folder.iterdir():
                if other == mine:
                    continue
                m = re.match(r"^(\d+)-(\d+)\.([0-9a-f]{8})-(\d+)-[0-9a-f]+\.json$", other.name)
                if m is None:
                    continue
                a, b, host, pid = int(m[1]), int(m[2]), m[3], int(m[4])
                if b <= start or a >= stop:
                    continue
                if _claim_stale(other, host, pid):
                    other.unlink(missing_ok=True)
                    continue
                try:  # simultaneous claims: the earlier one wins, the later refuses
                    if (mine.stat().st_mtime_ns, mine.name) < (
                        other.stat().st_mtime_ns,
                        other.name,
                    ):
                        continue
                except OSError:  # the other claim ended meanwhile
                    continue
                raise CacheError(
                    f"feature cache {self._path}: images {a}..{b - 1} are being extracted "
                    f"by process {pid} (host {host}, claim {other.name}); this run asks for "
                    f"{start}..{stop - 1}. Not computing them twice: wait for it, or give "
                    "each process its own --range (plan_ranges)"
                )
        except BaseException:
            mine.unlink(missing_ok=True)
            raise

        def refresh() -> None:
            try:
                os.utime(mine)
            except OSError:
                pass

        try:
            yield refresh
        finally:
            mine.unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass
