"""Whether a streamed feature source holds its memory limit on its own: the training
batches of one epoch's order read through :class:`StreamedFeatures` (windows read
ahead on its thread, the validation images held), with a validation pass every
``--every`` batches, and no model. Prints the process's RSS as it goes and its peak.

::

    python bench/bench_stream_memory.py WORK/vitb16.zarr --limit 3 --batches 200

The validation split is 10 % of the images drawn with ``--seed`` (as the split of a
run is; which images does not matter for the memory).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psutil


def main() -> None:
    from napari_factortopy.core.feature_source import StreamedFeatures
    from napari_factortopy.data.cache import FeatureCache

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--limit", type=float, default=3.0, help="memory limit, GiB")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--every", type=int, default=60, help="batches between validations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    proc = psutil.Process()

    def rss() -> float:
        return proc.memory_info().rss / 2**30

    cache = FeatureCache.open(args.cache)
    n = cache.n_images
    rng = np.random.default_rng(args.seed)
    val = rng.permutation(n)[: n // 10]
    train = np.setdiff1d(np.arange(n), val)
    print(f"before the source: {rss():.2f} GiB", flush=True)
    src = StreamedFeatures(
        cache, "cpu", indices=np.arange(n), memory_limit=int(args.limit * 2**30), resident=val
    )
    print(f"validation images held: {rss():.2f} GiB; windows of {src.window_chunks} chunks")
    order = src.epoch_order(train, rng)
    t0, peak = time.perf_counter(), 0.0
    for k in range(min(args.batches, len(order) // args.batch)):  # within one epoch
        lo = k * args.batch
        loc, glo = src.get(order[lo : lo + args.batch])
        del loc, glo
        if k % args.every == args.every - 1:
            for v in range(0, len(val), 64):
                src.get(val[v : v + 64])
        peak = max(peak, rss())
        if k % 25 == 0:
            print(
                f"batch {k}: {rss():.2f} GiB (peak {peak:.2f}), {time.perf_counter() - t0:.0f} s"
            )
    src.close()
    print(f"end: {rss():.2f} GiB, peak {peak:.2f} GiB (limit {args.limit:.2f} GiB of features)")


if __name__ == "__main__":
    main()
