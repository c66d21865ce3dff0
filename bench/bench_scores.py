"""Time and memory of the per-vertex scores at the size of a real split.

Each score runs in its own process (``bench/_child.py``: ``PYTHONPATH`` picks the
version) on random float32 (N, V) responses and predictions (default: Algonauts
subject 1's validation split, 984 × 37,984); the row gives the seconds and the
process's peak RSS (reset just before the call, Linux's ``clear_refs``) above its RSS
then (the inputs already made): the score's own working memory.

::

    python bench/bench_scores.py --rows 984 --vertices 37984
    PYTHONPATH=<other tree> python bench/bench_scores.py   # another version, same way
"""

from __future__ import annotations

import argparse

from _child import run_child

CHILD = """
import numpy as np
from napari_factortopy.core import metrics
n, v, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
yt = rng.standard_normal((n, v), dtype=np.float32)
yp = yt + rng.standard_normal((n, v), dtype=np.float32)
out, row = measure(lambda: getattr(metrics, name)(yt, yp))
row.update(inputs_gib=(yt.nbytes + yp.nbytes) / 2**30, mean=float(np.nanmean(out)))
print(json.dumps(row))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=984)
    ap.add_argument("--vertices", type=int, default=37984)
    args = ap.parse_args()
    print(f"{'score':10s} {'seconds':>8s} {'working GiB':>12s} {'inputs GiB':>11s}")
    for name in ("r2_score", "pearson_r"):
        row = run_child(CHILD, args.rows, args.vertices, name)
        print(
            f"{name:10s} {row['seconds']:8.2f} {row['peak_gib']:12.3f} {row['inputs_gib']:11.3f}"
        )


if __name__ == "__main__":
    main()
