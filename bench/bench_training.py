"""Training-step speed and peak memory at paper scale: FactorTopy vs the plain reference.

Shapes (issue "The spine", item 2): V = 37,984 vertices, L = 12 layers of C = 768
channels, D = 128, an 8×8 grid, batch 8, synthetic inputs. The plain reference is
``napari_factortopy/core/reference.py`` (per-layer ``grid_sample``, B×L×D×V tensors)
with the same initial weights. Each implementation runs in its own subprocess so that
peak memory (ru_maxrss) is its own; the baseline RSS (interpreter, torch, model,
optimiser, inputs) is measured just before the first step.

    python bench/bench_training.py                 # both, CPU
    python bench/bench_training.py --impl ours --device cuda --steps 20
    python bench/bench_training.py --selectors spread   # space points over the grid

A fresh model puts every vertex on one point of the grid (its spatial selector's last
layer starts at zero); a trained one spreads them over the grid, which makes the
gather read other rows. ``--selectors spread`` gives the space selector's last layer
random weights (the same in both implementations), so that the vertices' points spread
over the grid as a trained model's do; the run prints their spread and how many grid
cells they fall in.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def run_one(impl: str, device: str, steps: int, warmup: int, args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    import napari_factortopy  # noqa: F401  (installs the triton guard)
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy, bilinear_taps
    from napari_factortopy.core.reference import ReferenceFactorTopy, reference_forward
    from napari_factortopy.core.training import regulariser

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = FactorTopyConfig(
        widths=(args.channels,) * args.layers,
        grid=(args.grid, args.grid),
        bottleneck=args.bottleneck,
    )
    coords = np.random.default_rng(0).normal(size=(args.vertices, 3))
    model = FactorTopy(coords, cfg)
    if getattr(args, "selectors", "fresh") == "spread":
        last = [m for m in model.space_mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.normal_(last.weight, std=args.spread_std)
    with torch.no_grad():
        space = model.selectors().space
        taps, _ = bilinear_taps(space, (args.grid, args.grid))  # (V, 4) grid positions
        n_cells = len(torch.unique(taps, dim=0))
        space_sd = [round(float(x), 3) for x in space.std(0)]
    model = model.to(dev)
    model.gather = getattr(args, "gather", None)  # None: the device's own
    amp = bool(getattr(args, "amp", False)) and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(getattr(args, "tf32", False))
    if impl == "reference":
        # the same weights in the plain transcription of METHOD §2
        model = ReferenceFactorTopy.like(model, coords, dtype=torch.float32).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    b = args.batch
    local = [
        torch.randn(b, args.channels, args.grid, args.grid, device=dev) for _ in range(args.layers)
    ]
    glob = [torch.randn(b, args.channels, device=dev) for _ in range(args.layers)]
    y = torch.randn(b, args.vertices, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            sel = model.selectors()
            if impl == "ours":
                pred = model(local, glob, sel)
            else:
                pred = reference_forward(model, local, glob, sel)
            loss = torch.nn.functional.smooth_l1_loss(pred.float(), y, beta=0.1)
            loss = loss + 0.1 * regulariser(sel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base = _rss_gb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated() / 2**30
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    out = {
        "impl": impl,
        "device": device,
        "gather": model.gather if impl == "ours" else None,
        "amp": amp,
        "tf32": dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
        "batch": b,
        "grid": args.grid,
        "selectors": getattr(args, "selectors", "fresh"),
        "space_sd": space_sd,
        "grid_cells": n_cells,
        "torch_threads": torch.get_num_threads(),
        "s_per_step_median": float(np.median(times)),
        "s_per_step_min": float(min(times)),
        "steps": steps,
        "rss_baseline_gb": base,
        "rss_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    out["rss_step_increase_gb"] = out["rss_peak_gb"] - base
    if dev.type == "cuda":
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu_step_increase_gb"] = out["gpu_peak_gb"] - base_gpu
        out["steps_per_s"] = 1.0 / out["s_per_step_median"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=["ours", "reference", "both"], default="both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--vertices", type=int, default=37984)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--bottleneck", type=int, default=128)
    p.add_argument("--grid", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--gather", choices=["bag", "dense"], default=None, help="default: the device's"
    )
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--tf32", action="store_true", help="TF32 matrix products (CUDA only)")
    p.add_argument(
        "--selectors",
        choices=["fresh", "spread"],
        default="fresh",
        help="fresh: every vertex at one grid point; spread: over the grid, as trained",
    )
    p.add_argument(
        "--spread-std", type=float, default=0.3, help="--selectors spread: the weights' s.d."
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.impl, args.device, args.steps, args.warmup, args)))
        return
    impls = ["ours", "reference"] if args.impl == "both" else [args.impl]
    results = []
    for impl in impls:
        cmd = [sys.executable, __file__, "--child", "--impl", impl]
        for k in (
            "device",
            "steps",
            "warmup",
            "vertices",
            "layers",
            "channels",
            "bottleneck",
            "grid",
            "batch",
            "selectors",
            "spread_std",
        ):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        cmd += ["--gather", args.gather] if args.gather else []
        cmd += [f"--{k}" for k in ("amp", "tf32") if getattr(args, k)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(res.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{impl} failed")
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    if len(results) == 2:
        ours, ref = results
        print(
            f"speed-up {ref['s_per_step_median'] / ours['s_per_step_median']:.1f}x; "
            f"peak RSS {ours['rss_peak_gb']:.2f} vs {ref['rss_peak_gb']:.2f} GB "
            f"({ours['rss_peak_gb'] / ref['rss_peak_gb']:.2f}); step increase "
            f"{ours['rss_step_increase_gb']:.2f} vs {ref['rss_step_increase_gb']:.2f} GB "
            f"({ours['rss_step_increase_gb'] / ref['rss_step_increase_gb']:.2f})"
        )


if __name__ == "__main__":
    main()
