"""The full-size Algonauts rehearsal (issue 21, item 1): extract → train → info → figure →
napari on a synthetic subject 1 (``bench/build_algonauts_subject.py``), each stage a
``factortopy`` command in its own process, timed with its peak RSS.

::

    python bench/build_algonauts_subject.py --out WORK/subject
    python bench/rehearse_algonauts.py --work WORK                 # every stage
    python bench/rehearse_algonauts.py --work WORK --stages info,figure

Stages (``--stages``, comma-separated, in this order):

- ``extract``: random-weight ViT-B/16 (``timm:vit_base_patch16_224 --weights random``),
  12 blocks, 8×8 local grid, every training image, into ``WORK/vitb16.zarr``;
- ``converge``: ``train --max-seconds CONVERGE`` (auto recipe: the schedule is fitted to
  the budget, so the run finishes it) streamed from the cache with ``--memory-limit
  STREAM_LIMIT`` GiB; its validation R² against wall time is the time-to-finished-map
  curve;
- ``memory`` and ``stream``: the same budget (``--compare``) on the same cache and split,
  once with every feature in memory (``--memory-limit`` above the cache's size) and once
  streamed; steps made and peak RSS side by side;
- ``info``: ``factortopy info`` of the converged model;
- ``figure``: ``factortopy figure`` of two maps × two views (posterior, ventral: the
  modelled columns are a cap at the occipital pole) at fsaverage7;
- ``napari``: ``bench/bench_feel.py --model`` on the converged model, its meshes read
  from the subject's FreeSurfer folder, under Xvfb at 1920×1200.

Results go to ``WORK/rehearsal.json`` (merged stage by stage) and are printed as a
Markdown table. Peak RSS is ``/usr/bin/time``'s maximum resident set size of the
stage's process tree (the largest single process).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("extract", "converge", "memory", "stream", "info", "figure", "napari")
BACKBONE = "timm:vit_base_patch16_224"


def run(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """``cmd`` under ``/usr/bin/time``; wall seconds, peak RSS (GiB) and exit code."""
    timing = log.with_suffix(".time")
    full = ["/usr/bin/time", "-f", "%e %M", "-o", str(timing), *cmd]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(full, stdout=out, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    last = timing.read_text().split()[-2:]
    return {
        "command": " ".join(cmd),
        "rc": rc,
        "seconds": round(wall, 1),
        "peak_rss_gib": round(int(last[1]) / 2**20, 2),
        "log": str(log),
    }


def model_numbers(path: Path) -> dict:
    """What a trained model file says about its run: steps, how it ended, test scores and
    the validation curve (elapsed seconds, validation R²)."""
    from napari_factortopy.core.fitted_model import FittedModel

    m = FittedModel.load(path)
    s = m.summary
    curve = [
        (round(h["elapsed"], 1), round(h["val_score"], 5), h["step"])
        for h in m.history
        if "val_score" in h and "elapsed" in h
    ]
    return {
        "vertices": m.n_vertices,
        "steps": s.get("steps"),
        "epochs": s.get("epochs"),
        "train_seconds": s.get("train_seconds"),
        "stop_reason": s.get("stop_reason"),
        "convergence": s.get("convergence", {}).get("state"),
        "r2_test_mean": s.get("r2_test_mean"),
        "nc_test_mean": s.get("nc_test_mean"),
        "recipe": m.extra.get("recipe"),
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--converge", type=float, default=1500, help="budget of the converged run, s")
    p.add_argument("--compare", type=float, default=480, help="budget of memory vs stream, s")
    p.add_argument("--stream-limit", type=float, default=3.0, help="GiB, streamed runs")
    p.add_argument("--memory-limit", type=float, default=14.0, help="GiB, in-memory run")
    p.add_argument("--batch-size", type=int, default=32, help="extraction batch")
    p.add_argument(
        "--compare-recipe",
        default="",
        help="training settings for the memory and stream runs, e.g. '--recipe paper "
        "--batch-size 32 --lr 0.002 --steps-per-epoch 50' (default: the auto recipe). A "
        "fixed recipe puts both runs on the same trajectory (same seed, same batches), so "
        "their step counts compare the feature reads alone; the auto recipe's probe and "
        "re-plans differ between runs",
    )
    p.add_argument(
        "--tag",
        default="",
        help="suffix of the converge/memory/stream results and files (info, figure and "
        "napari then read the tagged converged model)",
    )
    args = p.parse_args()
    work = args.work.resolve()
    subject = work / "subject"
    dataset = subject / "subj01"
    subjects = subject / "subjects"
    cache = work / "vitb16.zarr"
    nc = subject / "noise_ceiling.npy"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results_path = work / "rehearsal.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    ft = [str(Path(sys.executable).parent / "factortopy")]
    train = [
        *ft,
        "train",
        "--cache",
        str(cache),
        "--dataset",
        str(dataset),
        "--subjects-dir",
        str(subjects),
        "--noise-ceiling",
        str(nc),
        "--device",
        "cpu",
    ]
    converged = work / f"converged{args.tag}.ftopy"
    for stage in args.stages.split(","):
        if stage not in STAGES:
            raise SystemExit(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        tagged = stage in ("converge", "memory", "stream")
        log = logs / f"{stage}{args.tag if tagged else ''}.log"
        env = None
        if stage == "extract":
            cmd = [
                *ft,
                "extract",
                "--backbone",
                BACKBONE,
                "--weights",
                "random",
                "--dataset",
                str(dataset),
                "--cache",
                str(cache),
                "--grid",
                "8",
                "8",
                "--device",
                "cpu",
                "--batch-size",
                str(args.batch_size),
            ]
        elif stage == "converge":
            cmd = [*train, "--out", str(converged), "--max-seconds", str(args.converge)]
            cmd += ["--memory-limit", str(args.stream_limit)]
        elif stage in ("memory", "stream"):
            limit = args.memory_limit if stage == "memory" else args.stream_limit
            cmd = [*train, "--out", str(work / f"{stage}{args.tag}.ftopy"), "--max-seconds"]
            cmd += [str(args.compare), "--memory-limit", str(limit), "--no-calibrate"]
            cmd += shlex.split(args.compare_recipe)
        elif stage == "info":
            cmd = [*ft, "info", str(converged)]
        elif stage == "figure":
            cmd = [*ft, "figure", str(converged), "--maps", "layer,score", "--views"]
            cmd += ["posterior,ventral", "--out", str(work / "figure.png")]
            env = {**os.environ, "SUBJECTS_DIR": str(subjects)}
        else:  # napari
            cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24", sys.executable]
            cmd += [str(HERE / "bench_feel.py"), "--model", str(converged), "--repeats", "3"]
            cmd += ["--screenshot", str(work / "napari.png")]
            env = {**os.environ, "SUBJECTS_DIR": str(subjects)}
        row = run(cmd, log, env)
        if stage == "extract" and cache.exists():
            row["cache_gib"] = round(
                sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**30, 2
            )
        if stage in ("converge", "memory", "stream") and row["rc"] == 0:
            out = converged if stage == "converge" else work / f"{stage}{args.tag}.ftopy"
            row.update(model_numbers(out))
        row["tail"] = log.read_text().splitlines()[-12:]
        row["command"] = " ".join(cmd)
        results[stage + (args.tag if tagged else "")] = row
        results_path.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "tail")}))
        print("\n".join(row["tail"]), flush=True)

    print("\n| stage | wall | peak RSS | notes |\n|---|---|---|---|")
    for stage in [k for k in results if k.split("-")[0] in STAGES]:
        if stage in results:
            r = results[stage]
            notes = []
            if "steps" in r:
                notes.append(f"{r['steps']} steps, {r['stop_reason']}, {r['convergence']}")
                notes.append(f"test R² {r['r2_test_mean']:.4f}")
            if "cache_gib" in r:
                notes.append(f"cache {r['cache_gib']} GiB")
            if r["rc"]:
                notes.append(f"exit {r['rc']}")
            print(f"| {stage} | {r['seconds']} s | {r['peak_rss_gib']} GiB | {'; '.join(notes)} |")


if __name__ == "__main__":
    main()
