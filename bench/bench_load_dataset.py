"""Time and peak memory of reading a dataset's responses (``load_dataset``).

Runs ``load_dataset(ROOT)`` in its own process (``python -P``: the working directory
is not put first on the path, so ``PYTHONPATH`` picks the version to time) and prints
the seconds,
the peak RSS above the RSS before the call (Linux's ``clear_refs`` resets the peak
there), and the responses' own size::

    python bench/bench_load_dataset.py WORK/subject/subj01
    PYTHONPATH=<other tree> python bench/bench_load_dataset.py WORK/subject/subj01
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, sys, time
from napari_factortopy.data.datasets import load_dataset
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
t0 = time.perf_counter()
ds = load_dataset(sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_gib": (status("VmHWM:") - before) / 2**30,
                  "after_gib": (status("VmRSS:") - before) / 2**30,
                  "responses_gib": ds.responses.nbytes / 2**30,
                  "shape": list(ds.responses.shape)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    args = ap.parse_args()
    out = subprocess.run(
        [sys.executable, "-P", "-c", CHILD, args.root],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"responses {tuple(row['shape'])} ({row['responses_gib']:.2f} GiB): "
        f"{row['seconds']:.1f} s, peak +{row['peak_gib']:.2f} GiB, "
        f"after +{row['after_gib']:.2f} GiB"
    )


if __name__ == "__main__":
    main()
