"""How long does ``factortopy import-official`` take at the paper's size? (issue 20)

Builds, under ``--work``, a synthetic fsaverage sphere (2 × 163,842 random points on a
radius-100 sphere, FreeSurfer geometry files: fsaverage cannot be downloaded here), a
random checkpoint of the release's shape (12 layers × 768, D = 128, V = 37,984, saved
with torch.save as the release's bare state dict) and its vertex indices; then runs the
command end to end (``factortopy import-official … --vertices … --subjects-dir …``,
writing the .ftopy) ``--repeats`` times in fresh processes and prints the wall times.

    python bench/bench_import_official.py --work WORK [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_HEMI = 163842
V = 37984


def build(work: Path) -> None:
    import nibabel as nib
    import torch

    rng = np.random.default_rng(0)
    (work / "fsaverage" / "surf").mkdir(parents=True, exist_ok=True)
    for hemi in ("lh", "rh"):
        p = rng.normal(size=(N_HEMI, 3))
        p = (100 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
        nib.freesurfer.write_geometry(
            str(work / "fsaverage" / "surf" / f"{hemi}.sphere"), p, np.array([[0, 1, 2]])
        )
    np.save(work / "vertices.npy", np.sort(rng.choice(2 * N_HEMI, V, replace=False)))
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(12):
        sd[f"local_token_bottleneck.{i}.weight"] = torch.randn(128, 768, 1, 1, generator=g) * 0.03
        sd[f"global_token_bottleneck.{i}.weight"] = torch.randn(128, 768, generator=g) * 0.03
    for name, n_out in (("space", 2), ("layer", 12), ("scale", 1)):
        m = f"{name}_selector_mlp"
        sd[f"{m}.1.weight"] = torch.randn(128, 192, generator=g) * 0.07
        sd[f"{m}.1.bias"] = torch.randn(128, generator=g) * 0.07
        sd[f"{m}.3.weight"] = torch.randn(128, 128, generator=g) * 0.09
        sd[f"{m}.3.bias"] = torch.randn(128, generator=g) * 0.09
        sd[f"{m}.5.weight"] = torch.randn(n_out, 128, generator=g) * 0.5
    sd["weight"] = torch.randn(V, 128, generator=g) * 0.09
    sd["bias"] = torch.randn(V, generator=g) * 0.09
    torch.save(sd, work / "clip_factorTopy.pth")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "clip_factorTopy.pth").exists():
        build(work)
    cmd = [sys.executable, "-m", "napari_factortopy.app.cli", "import-official"]
    cmd += [str(work / "clip_factorTopy.pth"), "--out", str(work / "paper.ftopy")]
    cmd += ["--vertices", str(work / "vertices.npy"), "--subjects-dir", str(work)]
    times, inner = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        m = re.search(r"imported in ([\d.]+) s", done.stderr)
        inner.append(float(m.group(1)) if m else float("nan"))
    print(
        f"import-official, 2 × {N_HEMI} sphere, V = {V}, 12 × 768: wall "
        + ", ".join(f"{t:.1f}" for t in times)
        + f" s (median {np.median(times):.1f} s, process start and imports included); "
        + "the import itself "
        + ", ".join(f"{t:.1f}" for t in inner)
        + " s"
    )


if __name__ == "__main__":
    main()
