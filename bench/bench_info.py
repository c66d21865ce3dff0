"""``factortopy info`` on a model of Algonauts subject 1's size (issue 21, item 4).

Builds a synthetic model file at the release's sizes, with everything a trained model
holds (ViT-B/16: 12 layers of 768 channels, D = 128, 8×8 grid; 37,984 nsdgeneral
vertices on fsaverage, 18,981 of them left; the paper's ROI groups; test R², r, the
noise ceiling and the noise-normalised score; 400 validation records), then times
``factortopy info`` as a user runs it (a fresh process, wall clock, median of
``--repeats``) and checks the per-ROI rows against a plain loop. ``--profile`` adds
where the time goes: ``-X importtime``'s largest imports and cProfile's top functions.

    python bench/bench_info.py --work WORK [--vertices 37984] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_model(v: int, seed: int = 0):
    """A FittedModel of ``v`` vertices with a full FactorTopy state (no training)."""
    import torch

    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.metrics import challenge_scores, roi_table
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.resources import paper_roi_groups

    rng = np.random.default_rng(seed)
    n_lh = v // 2
    ids = np.r_[
        np.sort(rng.choice(163842, n_lh, replace=False)),
        np.sort(rng.choice(163842, v - n_lh, replace=False)),
    ]
    coords = rng.normal(size=(v, 3))
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    torch.manual_seed(seed)
    cfg = FactorTopyConfig((768,) * 12, (8, 8), bottleneck=128)
    module = FactorTopy(coords, cfg)
    names = [g.group for g in paper_roi_groups()]
    roi = rng.integers(0, len(names) + 1, size=v)
    r = rng.uniform(-0.1, 0.7, v).astype(np.float32)
    r2 = (r**2 - 0.02).astype(np.float32)
    nc = rng.uniform(0.05, 0.7, v)
    nc_scores, nc_summary = challenge_scores(r, nc, "synthetic", roi, names)
    history = [
        {
            "kind": "validation",
            "step": 100 * k,
            "epoch": k,
            "val_score": 0.1,
            "best_score": 0.1,
            "improved": False,
            "elapsed": float(k),
            "eta": 0.0,
            "reg_strength": 0.0,
        }
        for k in range(400)
    ]
    model = FittedModel.from_module(
        module,
        vertex_ids=ids,
        n_lh=n_lh,
        mesh="fsaverage",
        roi=roi,
        roi_names=names,
        backbone={
            "name": "open_clip:ViT-B-16@datacomp_l_s1b_b8k",
            "layer_names": [f"blocks.{i}" for i in range(12)],
            "widths": [768] * 12,
        },
        split={
            "seed": 0,
            "fractions": [0.8, 0.1, 0.1],
            "n": 9841,
            "train": np.arange(7873),
            "val": np.arange(7873, 8857),
            "test": np.arange(8857, 9841),
        },
        history=history,
        scores={"r2_test": r2, "r_test": r, **nc_scores},
        summary={
            "r2_test_mean": float(r2.mean()),
            "r_test_mean": float(r.mean()),
            "steps": 40000,
            "epochs": 40,
            "train_seconds": 3600.0,
            "device": "cuda",
            "soup_members": [0, 1, 2],
            "roi_r2_test": roi_table(r2, roi, names),
            **nc_summary,
        },
    )
    # softer, realistic layer weights (the module's fresh selectors are near uniform)
    logits = rng.normal(size=(v, 12)) * 3
    model.layer = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return model


def naive_roi_rows(model) -> dict:
    """Per ROI: vertices, mean R², mean noise-normalised score, modal argmax layer, by loops."""
    out = {}
    am = model.layer.argmax(1)
    for k, name in enumerate(model.roi_names, start=1):
        idx = [i for i in range(model.n_vertices) if model.roi[i] == k]
        if not idx:
            continue
        votes = np.bincount(am[idx], minlength=model.n_layers)
        out[name] = (
            len(idx),
            float(np.mean(model.scores["r2_test"][idx], dtype=np.float64)),
            float(np.mean(model.scores["nc_test"][idx], dtype=np.float64)),
            int(votes.argmax()),
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="folder for the model file")
    p.add_argument("--vertices", type=int, default=37984)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"info-{args.vertices}.ftopy"
    t0 = time.perf_counter()
    model = synthetic_model(args.vertices)
    model.save(path)
    print(
        f"model: {args.vertices} vertices, {path.stat().st_size / 1e6:.1f} MB, "
        f"built and saved in {time.perf_counter() - t0:.1f} s"
    )
    cmd = [sys.executable, "-m", "napari_factortopy.app.cli", "info", str(path)]
    # as installed: bytecode cached (this sandbox sets PYTHONDONTWRITEBYTECODE; the
    # cache goes to a prefix folder, not into the tree)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # writes the bytecode
    times, cpu, out = [], [], ""
    for _ in range(args.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    print(
        f"factortopy info: wall median {statistics.median(times):.2f} s (min "
        f"{min(times):.2f}, max {max(times):.2f}), CPU median {statistics.median(cpu):.2f} s; "
        f"{args.repeats} runs, fresh process; load average {os.getloadavg()[0]:.1f}"
    )
    # the per-ROI rows printed = a plain loop
    want = naive_roi_rows(model)
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^  (\S+)\s+(\d+)\s+(-?[\d.]+)\s+([\d.]+)\s+(\d+)\s+[\d.]+$", line)
        if m and m.group(1) in want:
            rows[m.group(1)] = (
                int(m.group(2)),
                float(m.group(3)),
                float(m.group(4)),
                int(m.group(5)),
            )
    assert set(rows) == set(want), (sorted(rows), sorted(want))
    for name, (n, r2, nc, mode) in want.items():
        g = rows[name]
        assert g[0] == n and abs(g[1] - r2) < 1e-4 and abs(g[2] - nc) < 0.05 and g[3] == mode, name
    print(f"per-ROI rows: {len(rows)} ROIs, equal to a plain loop")
    print("\n".join(out.splitlines()[:14]))
    if args.profile:
        imp = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=env
        ).stderr
        cum = []
        for line in imp.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                cum.append((int(parts[1]), parts[2].rstrip()))
        print("largest imports (cumulative µs):")
        for us, name in sorted(cum, reverse=True)[:12]:
            print(f"  {us / 1e6:6.2f} s {name}")
        from napari_factortopy.app.cli import main as cli_main

        prof = cProfile.Profile()
        prof.enable()
        cli_main(["info", str(path)])
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
        print(s.getvalue()[-4000:])


if __name__ == "__main__":
    main()
