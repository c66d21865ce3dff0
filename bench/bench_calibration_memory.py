"""Peak memory and time of the sharpness calibration (the auto recipe's last step) at a
given number of vertices, apart from training (issue 21: a 4,500-s streamed run peaked
3.5 GiB above runs without calibration).

A FactorTopy of the paper's shapes (12 layers × 768 channels, 8×8 grid, bottleneck 128)
with spread random selectors, random fp16 tokens held in memory for ``--images``
images, responses the model itself makes with a sharper layer softmax (so the
calibration applies and refits every vertex); then :func:`calibrate` with the given
Gram budget. Resident memory is sampled every 10 ms on a thread; printed: the process's
RSS before the calibration, its peak during it and the difference, and the seconds::

    python bench/bench_calibration_memory.py --vertices 39548 --images 600
    python bench/bench_calibration_memory.py --vertices 39548 --images 600 --gram-gib 0.5

Only the memory's shape is measured here (the Gram matrices, the refit's solves, the
per-batch features); the numbers of a real run add the held features and responses.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil
import torch

from napari_factortopy.core.calibration import _layer_logits, _selectors, calibrate
from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.model import FactorTopy
from napari_factortopy.core.prediction import predict
from napari_factortopy.core.splits import make_split


class PeakRSS:
    """The process's peak resident set size (bytes) while in the ``with`` block."""

    def __init__(self, every: float = 0.01) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._proc = psutil.Process()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self.start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vertices", type=int, default=39548)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--gram-gib", type=float, default=None, help="max_gram_bytes (GiB)")
    p.add_argument("--batch", type=int, default=64, help="images per evaluation batch")
    args = p.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n, v, c, g = args.images, args.vertices, 768, 8
    local = [rng.standard_normal((n, c, g, g), np.float32).astype(np.float16)
             for _ in range(args.layers)]  # fmt: skip
    glob = [rng.standard_normal((n, c), np.float32).astype(np.float16) for _ in range(args.layers)]
    feats = InMemoryFeatures(local, glob)
    coords = rng.normal(size=(v, 3))
    torch.manual_seed(0)
    model = FactorTopy(coords, FactorTopyConfig([c] * args.layers, (g, g), bottleneck=128))
    with torch.no_grad():  # spread the space selector over the grid, as a trained one is
        for prm in model.space_mlp.parameters():
            prm.mul_(4.0)
    # responses the model makes with its layer softmax sharpened ×3, standardised, plus noise: the
    # calibration then applies and refits every vertex (random responses would not)
    logits = _layer_logits(model)
    with torch.no_grad():
        sel = _selectors(model.selectors(), logits, 3.0, np.arange(v))
    y = predict(model, feats, np.arange(n), args.batch, selectors=sel)
    y = (y - y.mean(0)) / y.std(0)  # standardised per vertex: the trained readout is off
    y = y + 0.5 * rng.standard_normal(y.shape, np.float32)
    split = make_split(n, seed=0)
    kw = {} if args.gram_gib is None else {"max_gram_bytes": int(args.gram_gib * 2**30)}
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        gen = calibrate(model, feats, y, split.train, split.val, batch_size=args.batch, **kw)
        while True:
            try:
                next(gen)
            except StopIteration as done:
                res = done.value
                break
    gib = 2**30
    print(
        f"V {v}, {n} images, gram budget {kw.get('max_gram_bytes', 'default')}: "
        f"RSS before {rss.start / gib:.2f} GiB, peak {rss.peak / gib:.2f} GiB, "
        f"calibration +{(rss.peak - rss.start) / gib:.2f} GiB, "
        f"{time.perf_counter() - t0:.0f} s, applied {res['applied']} "
        f"(tau {res.get('tau')}, ridge {res.get('ridge')}; probe R² "
        f"{res.get('baseline_probe', 0):.3f} → {res.get('best_probe', 0):.3f})"
    )


if __name__ == "__main__":
    main()
