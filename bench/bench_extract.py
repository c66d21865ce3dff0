"""Extraction throughput against the bare backbone forward on the same batches.

For each backbone: N random 425×425 RGB images (NSD's size), batch size B.

- *bare*: the network's own ``module(x)`` on the preprocessed batches (preprocessing
  done beforehand, not timed);
- *extract*: :func:`extract_features` from the uint8 images into a fresh zarr cache
  (preprocessing, hooks, token resize to 8×8, float16 cache writes included).

Prints images/s of both and their time ratio (extract / bare; the issue's target is
≤ 1.15). Usage::

    python bench/bench_extract.py --n 64 --batch-size 16 [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _backbones(names: list[str]):
    from napari_factortopy.data.backbones import efficientnet_lite0, timm_backbone

    for name in names:
        if name == "efficientnet_lite0":
            yield name, efficientnet_lite0("packaged")
        elif name == "vit_b16_random":
            yield name, timm_backbone("vit_base_patch16_224", weights="random")
        else:
            yield name, timm_backbone(name, weights="random")


def bench(name, bb, images: np.ndarray, batch_size: int, device: str, repeats: int) -> dict:
    import torch

    from napari_factortopy.data.cache import FeatureCache
    from napari_factortopy.data.extract import extract_features

    n = len(images)
    dev = torch.device(device)
    bb.to(dev)
    batches = [
        bb.preprocessing(list(images[i : i + batch_size])).to(dev) for i in range(0, n, batch_size)
    ]
    with torch.no_grad():
        bb.module(batches[0])  # warm-up
    bare, ext = [], []
    for _ in range(repeats):  # interleaved, best of R: robust to other load on the machine
        t0 = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                bb.module(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        bare.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            cache = FeatureCache.create(
                Path(tmp) / "c.zarr",
                backbone=bb.name,
                layer_names=bb.layer_names,
                widths=bb.widths,
                grid=(8, 8),
                image_ids=[str(i) for i in range(n)],
                preprocessing=bb.preprocessing.to_dict(),
            )
            t0 = time.perf_counter()
            for _rec in extract_features(
                bb, lambda idx: [images[i] for i in idx], cache, batch_size=batch_size,
                device=device, autocast=False,
            ):  # fmt: skip
                pass
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ext.append(time.perf_counter() - t0)
            assert cache.complete
    tb, te = min(bare), min(ext)
    return {
        "backbone": name,
        "layers": len(bb.layer_names),
        "bare_img_s": n / tb,
        "extract_img_s": n / te,
        "ratio": te / tb,
    }


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--repeats", type=int, default=2, help="best of R timings")
    ap.add_argument("--backbones", default="efficientnet_lite0,vit_b16_random")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 425, 425, 3), dtype=np.uint8)
    print(
        f"N={args.n} batch={args.batch_size} device={args.device} "
        f"torch threads={torch.get_num_threads()} torch {torch.__version__}"
    )
    print(f"{'backbone':<20}{'L':>4}{'bare img/s':>12}{'extract img/s':>15}{'ratio':>8}")
    for name, bb in _backbones(args.backbones.split(",")):
        r = bench(name, bb, images, args.batch_size, args.device, args.repeats)
        print(
            f"{r['backbone']:<20}{r['layers']:>4}{r['bare_img_s']:>12.1f}"
            f"{r['extract_img_s']:>15.1f}{r['ratio']:>8.2f}"
        )


if __name__ == "__main__":
    main()
