"""Streamed vs in-memory training on the same feature cache and memory limit (issue 21,
item 2).

Builds (once) a synthetic feature cache of ViT-B/16's shapes (12 layers of 768
channels, 8×8 grid, float16, chunks of 64 images) and random responses, then trains
FactorTopy on it twice, each in its own process so that peak RSS (ru_maxrss) is its
own: once with every feature in memory, once streamed (``--limit-gb`` smaller than the
cache: windows of whole chunks in the training order, read ahead on a thread; the
validation images held). Same split, recipe and step count; prints seconds per step
(median after the first 3), peak RSS, the RSS before the first step, and what the
streamed source read. ``--cold`` evicts the cache's files from the page cache
(``posix_fadvise DONTNEED``) before each run, so the streamed run reads the disk.

    python bench/bench_streaming.py --work WORK [--images 2000] [--vertices 10000]
        [--steps 60] [--batch 16] [--limit-gb 0.8] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LAYERS, CHANNELS, GRID = 12, 768, 8


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def build(work: Path, n: int, v: int) -> Path:
    """The cache and responses in ``work`` (reused when they exist)."""
    from napari_factortopy.data.cache import FeatureCache

    path = work / f"stream-{n}.zarr"
    if path.exists() and FeatureCache.open(path).complete:
        return path
    c = FeatureCache.create(
        path,
        backbone="synthetic-vit-b16",
        layer_names=[f"blocks.{i}" for i in range(LAYERS)],
        widths=[CHANNELS] * LAYERS,
        grid=(GRID, GRID),
        image_ids=[str(i) for i in range(n)],
        overwrite=True,
    )
    rng = np.random.default_rng(0)
    for lo in range(0, n, 64):
        k = min(64, n - lo)
        local = [rng.standard_normal((k, CHANNELS, GRID, GRID), np.float32) for _ in range(LAYERS)]
        glob = [rng.standard_normal((k, CHANNELS), np.float32) for _ in range(LAYERS)]
        c.write(lo, local, glob)
    np.save(work / f"stream-{n}-{v}.npy", rng.standard_normal((n, v), np.float32))
    return path


def evict(path: Path) -> None:
    """Drop the cache's files from the page cache (the next reads come from the disk)."""
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_one(mode: str, args) -> dict:
    """Train ``args.steps`` steps with features in memory or streamed; in this process."""
    import torch

    from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
    from napari_factortopy.core.feature_source import StreamedFeatures, feature_source
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.splits import make_split
    from napari_factortopy.core.training import train
    from napari_factortopy.data.cache import FeatureCache

    work = Path(args.work)
    cache = FeatureCache.open(work / f"stream-{args.images}.zarr")
    y = np.load(work / f"stream-{args.images}-{args.vertices}.npy")
    split = make_split(len(y), seed=0)
    limit = int(args.limit_gb * 2**30) if mode == "stream" else 2**62
    t0 = time.perf_counter()
    src = feature_source(cache, np.arange(len(y)), "cpu", limit, np.unique(split.val))
    load_s = time.perf_counter() - t0
    assert isinstance(src, StreamedFeatures) == (mode == "stream"), type(src)
    torch.manual_seed(0)
    coords = np.random.default_rng(0).normal(size=(args.vertices, 3))
    cfg = FactorTopyConfig((CHANNELS,) * LAYERS, (GRID, GRID), bottleneck=128)
    model = FactorTopy(coords, cfg)
    tcfg = TrainConfig(
        batch_size=args.batch,
        steps_per_epoch=args.steps,
        max_epochs=1,
        log_every=1,
        soup=False,
        calibrate=False,
        eval_batch_size=64,
    )
    base = _rss_gb()
    stamps, val_s = [], None
    t_val = None
    for rec in train(model, src, y, split, tcfg):
        if rec["kind"] == "step":
            stamps.append(time.perf_counter())
            if rec["step"] == args.steps:
                t_val = time.perf_counter()
        elif rec["kind"] == "validation" and t_val is not None:
            val_s = time.perf_counter() - t_val
    steps = np.diff(stamps)[2:]
    out = {
        "mode": mode,
        "s_per_step": float(statistics.median(steps)),
        "s_per_step_mean": float(np.mean(steps)),
        "validation_s": val_s,
        "load_s": load_s,
        "rss_before_steps_gb": base,
        "rss_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if mode == "stream":
        out.update(
            reads=src.reads,
            images_read=src.images_read,
            window_chunks=src.window_chunks,
            resident=src.resident is not None,
        )
        src.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--vertices", type=int, default=10000)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--limit-gb", type=float, default=0.8)
    p.add_argument("--cold", action="store_true")
    p.add_argument("--modes", default="memory,stream")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = build(work, args.images, args.vertices)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(
        f"cache {path}: {args.images} images, {size / 2**30:.2f} GiB on disk "
        f"(ready in {time.perf_counter() - t0:.0f} s); limit {args.limit_gb} GiB"
    )
    for mode in args.modes.split(","):
        if args.cold:
            evict(path)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", mode]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:])
            raise SystemExit(res.returncode)
        print(res.stdout.strip().splitlines()[-1], flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
