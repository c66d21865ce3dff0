"""Time and peak memory of reading a dataset's responses (``load_dataset``).

Runs ``load_dataset(ROOT)`` in its own process (``bench/_child.py``: ``PYTHONPATH``
picks the version to time) and prints the seconds, the peak RSS above the RSS before
the call (Linux's ``clear_refs`` resets the peak there), and the responses' own size::

    python bench/bench_load_dataset.py WORK/subject/subj01
    PYTHONPATH=<other tree> python bench/bench_load_dataset.py WORK/subject/subj01
"""

from __future__ import annotations

import argparse

from _child import run_child

CHILD = """
from napari_factortopy.data.datasets import load_dataset
ds, row = measure(lambda: load_dataset(sys.argv[1]))
row.update(responses_gib=ds.responses.nbytes / 2**30, shape=list(ds.responses.shape))
print(json.dumps(row))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    args = ap.parse_args()
    row = run_child(CHILD, args.root)
    print(
        f"responses {tuple(row['shape'])} ({row['responses_gib']:.2f} GiB): "
        f"{row['seconds']:.1f} s, peak +{row['peak_gib']:.2f} GiB, "
        f"after +{row['after_gib']:.2f} GiB"
    )


if __name__ == "__main__":
    main()
