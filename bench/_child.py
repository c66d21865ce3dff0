"""A measured call in its own Python process, for the memory benchmarks.

:func:`run_child` runs ``code`` with ``python -P`` (the working directory is not put
first on the path, so ``PYTHONPATH`` picks the version of the package to time). The
code has :func:`measure` defined: ``result, row = measure(call)`` gives the call's
seconds and the process's peak RSS above its RSS just before the call (Linux's
``clear_refs`` resets the peak there) and after it, in GiB. The code prints one JSON
line last; :func:`run_child` returns it as a dict.
"""

from __future__ import annotations

import json
import subprocess
import sys

PREAMBLE = """
import json, sys, time

def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

def measure(call):
    with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) starts again here
        f.write("5")
    before = _status("VmRSS:")
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    return result, {
        "seconds": seconds,
        "peak_gib": (_status("VmHWM:") - before) / 2**30,
        "after_gib": (_status("VmRSS:") - before) / 2**30,
    }
"""


def run_child(code: str, *args: object) -> dict:
    """Run ``PREAMBLE + code`` with ``args`` as ``sys.argv[1:]``; its last JSON line."""
    out = subprocess.run(
        [sys.executable, "-P", "-c", PREAMBLE + code, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
