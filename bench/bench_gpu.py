"""The GPU measurements of ``bench/gpu.sh``: step table, top kernels, validation pass,
time to a finished map at Algonauts size.

Every section prints a Markdown table (to paste into BENCHMARKS.md) and appends its
rows as JSON lines to ``--out`` (default: ``gpu-bench.jsonl`` in the current folder),
so a run cut short keeps what it measured.

Sections (``--sections``, default all, in this order):

- ``steps``: one AdamW step at paper shapes (V 37,984, 12 × 768, D 128) for the
  release's module (its faithful transcription, ``core/reference.py``: per-layer
  ``grid_sample`` over a (B, L, D, V) tensor), ours with the embedding-bag gather
  (before) and ours with the dense gather (after), fp32 / TF32 / bf16 autocast,
  batch 8 / 32 / 128, grids 8×8 and 14×14; ms per step, images/s, peak GPU memory.
  Runs ``bench_training.run_one`` in this process.
- ``profile``: the top CUDA kernels of five steps, bag and dense, batch 32.
- ``validation``: one validation pass as :func:`train` does it (predict 1,000 images
  × 37,984 vertices, then the mean R²), at evaluation batch 64 and 256.
- ``map``: time to a finished map. A FactorTopy-shaped teacher (soft layer mixtures
  whose centre rises with the vertex's level, a retinotopic space map with each
  hemisphere seeing the opposite half, scale rising with level) on spatially smooth,
  depth-correlated tokens (9,841 images, 12 × 768, 8×8, on the GPU), responses =
  teacher + noise (attainable R² ≈ 0.3). ``train()`` on the default budget path
  (``recipe="auto"``), fp32 then bf16, ``--map-seconds`` each; then a short run on
  white-noise tokens (no spatial structure) to watch the layer confidence.
  Reports validation R² against wall time, test R² against the teacher's, layer
  agreement, RF error, hierarchy slope, confidence, probe and validation time.

    python bench/bench_gpu.py                       # everything (about 7 minutes on an H200)
    python bench/bench_gpu.py --sections steps,profile
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

V_PAPER, L_PAPER, C_PAPER, D_PAPER = 37984, 12, 768, 128
#: The device; ``--dry-run`` sets "cpu" and small shapes to check the script here.
DEV = "cuda"


def _emit(out: Path, section: str, row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps({"section": section, **row}) + "\n")


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    def cell(x):
        if isinstance(x, float):
            return "—" if math.isnan(x) else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return "—" if x is None else str(x)

    head = "| " + " | ".join(t for _, t in cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


# ----------------------------------------------------------------------------- steps
STEP_CONFIGS = [
    # impl, gather, precision, batch, grid
    ("reference", None, "fp32", 8, 8),
    ("reference", None, "fp32", 32, 8),
    ("ours", "bag", "fp32", 8, 8),
    ("ours", "bag", "fp32", 32, 8),
    ("ours", "dense", "fp32", 8, 8),
    ("ours", "dense", "fp32", 32, 8),
    ("ours", "dense", "fp32", 128, 8),
    ("ours", "dense", "tf32", 8, 8),
    ("ours", "dense", "tf32", 32, 8),
    ("ours", "dense", "tf32", 128, 8),
    ("ours", "dense", "bf16", 8, 8),
    ("ours", "dense", "bf16", 32, 8),
    ("ours", "dense", "bf16", 128, 8),
    ("reference", None, "fp32", 8, 14),
    ("ours", "dense", "fp32", 8, 14),
    ("ours", "dense", "fp32", 32, 14),
    ("ours", "dense", "bf16", 32, 14),
]


def _empty_cache() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def section_steps(out: Path, steps: int, warmup: int) -> None:
    from bench_training import run_one

    rows = []
    for impl, gather, prec, batch, grid in STEP_CONFIGS:
        args = SimpleNamespace(
            vertices=V_PAPER,
            layers=L_PAPER,
            channels=C_PAPER,
            bottleneck=D_PAPER,
            grid=grid,
            batch=batch,
            gather=gather,
            amp=prec == "bf16",
            tf32=prec == "tf32",
        )
        try:
            r = run_one(impl, DEV, steps, warmup, args)
        except torch.OutOfMemoryError as exc:  # pragma: no cover - report, go on
            r = {"impl": impl, "error": f"out of memory: {str(exc)[:80]}"}
        torch.backends.cuda.matmul.allow_tf32 = False
        _empty_cache()
        row = {
            "impl": "release (transcription)" if impl == "reference" else f"ours, {gather}",
            "precision": prec,
            "batch": batch,
            "grid": f"{grid}×{grid}",
            "ms": 1e3 * r.get("s_per_step_median", float("nan")),
            "images_s": batch / r.get("s_per_step_median", float("nan")),
            "gpu_gib": r.get("gpu_peak_gb", float("nan")),
            "error": r.get("error"),
        }
        rows.append(row)
        _emit(out, "steps", row)
        print(json.dumps(row), flush=True)
    ref = {(r["batch"], r["grid"]): r["ms"] for r in rows if r["impl"].startswith("release")}
    for r in rows:
        base = ref.get((r["batch"], r["grid"]))
        r["vs_release"] = base / r["ms"] if base else None
    print(
        _table(
            rows,
            [
                ("impl", "implementation"),
                ("precision", "precision"),
                ("batch", "batch"),
                ("grid", "grid"),
                ("ms", "ms/step"),
                ("images_s", "images/s"),
                ("gpu_gib", "peak GPU GiB"),
                ("vs_release", "× release"),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------- profile
def section_profile(out: Path) -> None:
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.training import regulariser

    dev = torch.device(DEV)
    b, grid = 32, 8
    torch.manual_seed(0)
    coords = np.random.default_rng(0).normal(size=(V_PAPER, 3))
    model = FactorTopy(coords, FactorTopyConfig((C_PAPER,) * L_PAPER, (grid, grid))).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    local = [torch.randn(b, C_PAPER, grid, grid, device=dev) for _ in range(L_PAPER)]
    glob = [torch.randn(b, C_PAPER, device=dev) for _ in range(L_PAPER)]
    y = torch.randn(b, V_PAPER, device=dev)

    def step():
        sel = model.selectors()
        loss = torch.nn.functional.smooth_l1_loss(model(local, glob, sel), y, beta=0.1)
        loss = loss + 0.1 * regulariser(sel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for gather in ("bag", "dense"):
        model.gather = gather
        for _ in range(3):
            step()
        _sync()
        acts = [
            torch.profiler.ProfilerActivity.CUDA
            if DEV == "cuda"
            else torch.profiler.ProfilerActivity.CPU
        ]
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(5):
                step()
            _sync()
        events = [e for e in prof.key_averages() if e.device_time_total > 0]
        total = sum(e.self_device_time_total for e in events) or 1.0
        events.sort(key=lambda e: -e.self_device_time_total)
        print(f"\ntop CUDA kernels, {gather} gather, batch {b}, fp32 (5 steps):", flush=True)
        for e in events[:6]:
            share = e.self_device_time_total / total
            row = {"gather": gather, "kernel": e.key[:90], "share": share}
            row["ms_per_step"] = e.self_device_time_total / 5 / 1e3
            _emit(out, "profile", row)
            print(f"  {share:6.1%}  {row['ms_per_step']:8.2f} ms/step  {e.key[:90]}", flush=True)


# ------------------------------------------------------------------------ validation
def section_validation(out: Path) -> None:
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.feature_source import InMemoryFeatures
    from napari_factortopy.core.metrics import r2_score
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.training import predict

    dev = torch.device(DEV)
    n, grid = 1000, 8
    g = torch.Generator(device=dev).manual_seed(0)
    local = [torch.randn(n, C_PAPER, grid, grid, device=dev, generator=g) for _ in range(L_PAPER)]
    glob = [torch.randn(n, C_PAPER, device=dev, generator=g) for _ in range(L_PAPER)]
    feats = InMemoryFeatures(local, glob, device=dev)
    del local, glob
    coords = np.random.default_rng(0).normal(size=(V_PAPER, 3))
    model = FactorTopy(coords, FactorTopyConfig((C_PAPER,) * L_PAPER, (grid, grid))).to(dev)
    y = np.random.default_rng(1).normal(size=(n, V_PAPER)).astype(np.float32)
    idx = np.arange(n)
    for batch in (64, 256):
        for amp in (False, True):
            predict(model, feats, idx[:batch], batch, amp)  # warm-up
            _sync()
            t0 = time.perf_counter()
            pred = predict(model, feats, idx, batch, amp)
            t1 = time.perf_counter()
            float(np.nanmean(r2_score(y, pred)))
            t2 = time.perf_counter()
            row = {
                "batch": batch,
                "precision": "bf16" if amp else "fp32",
                "predict_s": t1 - t0,
                "score_s": t2 - t1,
                "total_s": t2 - t0,
            }
            _emit(out, "validation", row)
            print(json.dumps(row), flush=True)


# ------------------------------------------------------------------------------- map
def _phantom(n_images: int, smooth: bool, seed: int, noise_r2: float = 0.3):
    """A FactorTopy-shaped teacher on the GPU (see the module docstring).

    Returns coords (V, 3), feats (InMemoryFeatures), y (N, V), truth dict, levels (V,)
    in [0, 1], roi (V,) ∈ 1..4.
    """
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.feature_source import InMemoryFeatures
    from napari_factortopy.core.model import FactorTopy, Selectors
    from napari_factortopy.core.training import predict

    dev = torch.device(DEV)
    rng = np.random.default_rng(seed)
    half = V_PAPER // 2
    # both hemispheres: the posterior caps of two spheres of radius 100, side by side
    pts = []
    for hemi in (0, 1):
        u = rng.normal(size=(4 * half, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        u = u[u[:, 1] < -0.2][:half]  # posterior cap
        pts.append(100 * u + np.array([250.0 * hemi, 0, 0]))
    coords = np.concatenate(pts)
    hemi = np.repeat([0, 1], half)
    local_xyz = np.concatenate([p - p.mean(0) for p in pts])
    # level: from the occipital pole (y = -100) forwards, in [0, 1]
    level = np.clip((local_xyz[:, 1] - local_xyz[:, 1].min()) / np.ptp(local_xyz[:, 1]), 0, 1)
    roi = 1 + np.minimum((level * 4).astype(int), 3)
    n_l = L_PAPER
    centre = 0.5 + 9.5 * level  # expected layer rises with level
    ls = np.arange(n_l)
    layer = np.exp(-((ls[None] - centre[:, None]) ** 2) / (2 * 0.9**2))
    layer /= layer.sum(1, keepdims=True)
    # retinotopy: polar angle and eccentricity from the vertex's place on its cap
    ang = np.arctan2(local_xyz[:, 2], local_xyz[:, 0] * (1 - 2 * hemi))
    ecc = 0.15 + 0.65 * level
    space = np.stack([-(1 - 2 * hemi) * np.abs(np.cos(ang)) * ecc, np.sin(ang) * ecc], 1)
    scale = 0.1 + 0.6 * level
    truth = {"layer": layer, "space": space, "scale": scale}

    torch.manual_seed(seed)
    grid = (8, 8)
    cfg = FactorTopyConfig((C_PAPER,) * n_l, grid)
    teacher = FactorTopy(coords, cfg).to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    local, glob, prev = [], [], None
    for _ in range(n_l):
        if smooth:  # low-frequency maps (4×4 noise, bilinear up) plus a little white
            low = torch.randn(n_images, C_PAPER, 4, 4, device=dev, generator=g)
            t = torch.nn.functional.interpolate(low, size=grid, mode="bilinear")
            t = t + 0.3 * torch.randn(n_images, C_PAPER, *grid, device=dev, generator=g)
        else:
            t = torch.randn(n_images, C_PAPER, *grid, device=dev, generator=g)
        if prev is not None:  # neighbouring layers share half their variance
            t = math.sqrt(0.5) * prev + math.sqrt(0.5) * t
        prev = t
        local.append(t.half())
        extra = torch.randn(n_images, C_PAPER, device=dev, generator=g)
        glob.append((t.mean((2, 3)) + 0.5 * extra).half())
    del prev, t
    feats = InMemoryFeatures(local, glob, device=dev)
    del local, glob
    sel = Selectors(
        torch.as_tensor(space, dtype=torch.float32, device=dev),
        torch.as_tensor(layer, dtype=torch.float32, device=dev),
        torch.as_tensor(scale, dtype=torch.float32, device=dev),
    )
    signal = predict(teacher, feats, np.arange(n_images), 256, False, sel)
    signal = (signal - signal.mean(0)) / signal.std(0)
    noise = math.sqrt((1 - noise_r2) / noise_r2)
    y = (signal + noise * rng.standard_normal(signal.shape, dtype=np.float32)).astype(np.float32)
    return coords, feats, y, signal, truth, roi


def _timed(records):
    """(wall-clock time, record) pairs of a generator of records."""
    for rec in records:
        yield time.perf_counter(), rec


def section_map(out: Path, seconds: float, noise_seconds: float, n_images: int) -> None:
    from napari_factortopy.app.recovery import recovery_metrics
    from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
    from napari_factortopy.core.metrics import r2_score
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.splits import make_split
    from napari_factortopy.core.training import train

    runs = [("smooth", "fp32", seconds), ("smooth", "bf16", seconds)]
    if noise_seconds > 0:
        runs.append(("white", "fp32", noise_seconds))
    data_key, data = None, None
    rows = []
    for tokens, prec, budget in runs:
        if data_key != tokens:
            data = None
            _empty_cache()
            t0 = time.perf_counter()
            data = _phantom(n_images, tokens == "smooth", seed=14)
            data_key = tokens
            print(f"phantom ({tokens}) built in {time.perf_counter() - t0:.1f} s", flush=True)
        coords, feats, y, signal, truth, roi = data
        split = make_split(len(y), seed=0)
        attainable = float(np.nanmean(r2_score(y[split.test], signal[split.test])))
        torch.manual_seed(0)
        model = FactorTopy(coords, FactorTopyConfig((C_PAPER,) * L_PAPER, (8, 8))).to(DEV)
        cfg = TrainConfig(max_seconds=budget, recipe="auto", amp=prec == "bf16")
        t0 = time.perf_counter()
        curve, val_t, recipe_t = [], 0.0, None
        last = t0
        try:
            records = list(_timed(train(model, feats, y, split, cfg)))
        except ValueError as exc:  # e.g. a budget too small for this machine
            print(f"{tokens}/{prec}: {exc}", flush=True)
            continue
        for now, rec in records:
            kind = rec["kind"]
            if kind in ("validating", "validation"):
                val_t += now - last
            if kind == "recipe" and recipe_t is None:
                recipe_t = now - t0
            if kind == "validation":
                curve.append((round(now - t0, 1), round(rec["val_score"], 4)))
            last = now
        res = rec["result"]
        wall = records[-1][0] - t0
        model.load_state_dict(res.state)
        with torch.no_grad():
            fitted = model.selectors().numpy()
        m = recovery_metrics(
            fitted["layer"],
            fitted["space"],
            fitted["scale"],
            truth,
            roi,
            ["V1", "V2/V3", "OPA", "EBA"],
        )
        test_r2 = float(np.nanmean(res.test_r2))
        reach95 = next((t for t, s in curve if s >= 0.95 * attainable), None)
        row = {
            "tokens": tokens,
            "precision": prec,
            "budget_s": budget,
            "wall_s": wall,
            "steps": res.steps,
            "batch": res.config.batch_size,
            "probe_s": recipe_t,
            "validations": res.epochs,
            "validation_share": (res.validation_seconds or 0.0) * res.epochs / wall,
            "validation_share_records": val_t / wall,
            "test_r2": test_r2,
            "attainable_r2": attainable,
            "share_of_attainable": test_r2 / attainable,
            "val_95pct_at_s": reach95,
            "layer_within1": m["layer_within1"],
            "layer_exact": m["layer_exact"],
            "rf_error": m["rf_error_median"],
            "slope": m["hierarchy_slope"],
            "slope_truth": m["hierarchy_slope_truth"],
            "confidence": m["confidence_mean"],
            "confidence_truth": m["confidence_truth_mean"],
            "scale_error": m["scale_error_mean"],
            "stop": res.stop_reason,
            "curve": curve,
        }
        rows.append(row)
        _emit(out, "map", row)
        print(json.dumps(row), flush=True)
        del model
    print(
        _table(
            rows,
            [
                ("tokens", "tokens"),
                ("precision", "precision"),
                ("budget_s", "budget s"),
                ("steps", "steps"),
                ("batch", "batch"),
                ("probe_s", "probe s"),
                ("validation_share", "validation share"),
                ("test_r2", "test R²"),
                ("attainable_r2", "attainable"),
                ("val_95pct_at_s", "val ≥95 % at s"),
                ("layer_within1", "layers ±1"),
                ("layer_exact", "exact"),
                ("rf_error", "RF error"),
                ("slope", "slope"),
                ("slope_truth", "slope truth"),
                ("confidence", "confidence"),
                ("confidence_truth", "truth"),
            ],
        ),
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="steps,profile,validation,map")
    p.add_argument("--out", type=Path, default=Path("gpu-bench.jsonl"))
    p.add_argument("--steps", type=int, default=10, help="timed steps per step-table row")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--map-seconds", type=float, default=60.0)
    p.add_argument("--noise-seconds", type=float, default=30.0)
    p.add_argument("--images", type=int, default=9841)
    p.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny shapes: checks the script runs"
    )
    args = p.parse_args()
    import napari_factortopy  # noqa: F401  (the triton guard; lets triton load on a GPU)

    global DEV, V_PAPER, L_PAPER, C_PAPER, STEP_CONFIGS
    if args.dry_run:
        DEV, V_PAPER, L_PAPER, C_PAPER = "cpu", 400, 4, 16
        STEP_CONFIGS = [c for c in STEP_CONFIGS if c[2] == "fp32" and c[3] <= 32][:5]
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (or --dry-run)")
    else:
        print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        print(f"\n## {name}", flush=True)
        if name == "steps":
            section_steps(args.out, args.steps, args.warmup)
        elif name == "profile":
            section_profile(args.out)
        elif name == "validation":
            section_validation(args.out)
        elif name == "map":
            section_map(args.out, args.map_seconds, args.noise_seconds, args.images)
        else:
            raise SystemExit(f"unknown section {name!r}")
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
