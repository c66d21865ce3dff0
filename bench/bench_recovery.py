"""Recovery of mismatch phantoms by `factortopy train` (issue #8).

Builds one mismatch phantom per seed (:mod:`napari_factortopy.data.mismatch_phantom`:
Gaussian pooling fields growing with ROI level, soft mixtures of 2–3 adjacent layers,
dense readouts over all channels, half the stimuli photo crops; EfficientNet-Lite0,
16 layers), trains on each with the unchanged command line

    factortopy train --cache P/features.zarr --phantom P --out M --max-seconds S [extra…]

in a subprocess (wall time measured around it), and prints one Markdown table per
phantom: wall, steps, layer agreement within ±1 and exact, RF-centre median error,
hierarchy slope and mean confidence against the truth's, test R² against the truth's
attainable R², and the convergence line when the model file has one. With several
``--train-seeds`` it also prints the seed consistency of the argmax layer. Nothing is
tuned to a phantom: every phantom gets the same command. Arguments this script does
not know are passed to ``factortopy train`` as they are (e.g. ``--recipe paper``).

    python bench/bench_recovery.py --work WORK --seeds 11 12 13 --max-seconds 900
    python bench/bench_recovery.py --work WORK --seeds 11 12 13 --max-seconds 900 --recipe paper
    python bench/bench_recovery.py --work WORK --seeds 11 --train-seeds 0 1 --max-seconds 300

Phantoms (about 0.5 GB each) are kept in the folder ``--work`` names (required: a
folder outside the repository that you choose) and reused when complete (the build is
resumable); results go to ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = [
    ("train seed", "train_seed"),
    ("wall s", "wall"),
    ("val s", "validation_seconds"),
    ("≤ 1.05·B + val", "budget_ok"),
    ("steps", "steps"),
    ("within ±1", "layer_within1"),
    ("exact", "layer_exact"),
    ("RF median", "rf_error_median"),
    ("scale err", "scale_error_mean"),
    ("slope", "hierarchy_slope"),
    ("slope truth", "hierarchy_slope_truth"),
    ("conf", "confidence_mean"),
    ("conf truth", "confidence_truth_mean"),
    ("R² test", "r2_test_mean"),
    ("R² truth", "r2_truth_mean"),
]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(seed: int, args) -> tuple[Path, float, bool]:
    """Build (or reuse) the phantom of ``seed``; return its folder, seconds, reused."""
    from napari_factortopy.data.mismatch_phantom import MismatchConfig, build_mismatch_phantom
    from napari_factortopy.data.phantom import load_phantom

    root = Path(args.work) / f"phantom-{seed}"
    cfg = MismatchConfig(n_vertices=args.n_vertices, n_images=args.n_images, seed=seed)
    try:
        ph = load_phantom(root)
        if ph.generator == "mismatch" and ph.details == json.loads(json.dumps(cfg.to_dict())):
            return root, 0.0, True
    except (FileNotFoundError, ValueError, KeyError):
        pass
    t0 = time.perf_counter()
    for rec in build_mismatch_phantom(root, cfg, device=args.device):
        if rec["stage"] != "extract":
            _log(f"phantom {seed}: {rec['stage']} ({rec.get('elapsed', 0):.0f} s)")
    return root, time.perf_counter() - t0, False


def train(
    root: Path, seed: int, train_seed: int, args, extra: list[str]
) -> tuple[Path, float, str]:
    """Run ``factortopy train``; return the model file, the wall seconds and a status
    ("ok", or the command's last line when it exits non-zero after writing the model,
    e.g. a failed quality check)."""
    out = Path(args.work) / f"model-{seed}-t{train_seed}.ftopy"
    cmd = [
        sys.executable,
        "-m",
        "napari_factortopy.app.cli",
        "train",
        "--cache",
        str(root / "features.zarr"),
        "--phantom",
        str(root),
        "--out",
        str(out),
        "--seed",
        str(train_seed),
        "--device",
        args.device,
    ]
    if args.max_seconds is not None:
        cmd += ["--max-seconds", str(args.max_seconds)]
    cmd += extra
    log = Path(args.work) / f"train-{seed}-t{train_seed}.log"
    _log(f"phantom {seed}, train seed {train_seed}: {' '.join(cmd[3:])}  (log {log})")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    if rc == 0:
        return out, wall, "ok"
    tail = log.read_text()[-2000:]
    if not out.exists() or out.stat().st_mtime < time.time() - wall - 1:
        raise SystemExit(f"factortopy train failed (exit {rc}) on phantom {seed}:\n{tail}")
    last = [line for line in tail.splitlines() if line.strip()][-1:] or [""]
    return out, wall, f"exit {rc}: {last[0].strip()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="phantom seeds")
    p.add_argument(
        "--train-seeds", type=int, nargs="+", default=[0], help="training seeds per phantom"
    )
    p.add_argument("--max-seconds", type=float, default=None, help="passed to factortopy train")
    p.add_argument(
        "--work",
        required=True,
        help="folder for phantoms, models, logs and results (reused when run again)",
    )
    p.add_argument("--n-vertices", type=int, default=2000)
    p.add_argument("--n-images", type=int, default=2000)
    p.add_argument("--device", default="auto")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    sys.path.insert(0, str(ROOT))
    from napari_factortopy.app.recovery import markdown_table, recovery_report, seed_consistency
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.data.phantom import load_phantom

    Path(args.work).mkdir(parents=True, exist_ok=True)
    results = []
    print(
        f"# Mismatch-phantom recovery: {args.n_vertices} vertices, {args.n_images} images, "
        f"EfficientNet-Lite0 (16 layers); train args: "
        f"--max-seconds {args.max_seconds} {' '.join(extra)}\n"
    )
    for seed in args.seeds:
        root, build_s, reused = build(seed, args)
        ph = load_phantom(root)
        rows, layers = [], []
        for ts in args.train_seeds:
            out, wall, status = train(root, seed, ts, args, extra)
            fitted = FittedModel.load(out)
            rep = recovery_report(fitted, ph)
            rep.update(train_seed=ts, wall=wall, model=str(out), status=status)
            val_s = fitted.summary.get("validation_seconds")
            rep["validation_seconds"] = val_s
            if args.max_seconds is not None and val_s is not None:
                rep["budget_ok"] = "yes" if wall <= 1.05 * args.max_seconds + val_s else "NO"
            rows.append(rep)
            layers.append(fitted.layer)
        build_txt = "reused" if reused else f"built in {build_s:.0f} s"
        print(f"## phantom seed {seed} ({build_txt}; {root})\n")
        print(markdown_table(rows, COLUMNS))
        for r in rows:
            if r.get("convergence"):
                print(f"\ntrain seed {r['train_seed']}: {r['convergence']}")
            if r["status"] != "ok":
                print(f"\ntrain seed {r['train_seed']}: factortopy train {r['status']}")
        entry = {"seed": seed, "build_seconds": build_s, "reused": reused, "runs": rows}
        if len(layers) > 1:
            sc = seed_consistency(layers)
            entry["seed_consistency"] = sc
            print(
                f"\nseed consistency over {sc['n_models']} training seeds: argmax identical "
                f"on {sc['all_exact']:.3f} of vertices, within ±1 on {sc['all_within1']:.3f}, "
                f"pairwise {sc['pairwise_exact']:.3f}"
            )
        per_roi = rows[0]["per_roi"]
        print(
            "\nper ROI (train seed {}): ".format(rows[0]["train_seed"])
            + "; ".join(
                f"{name} ±1 {d['layer_within1']:.2f} exact {d['layer_exact']:.2f} "
                f"RF {d['rf_error_median']:.3f}"
                for name, d in per_roi.items()
                if d.get("n_vertices")
            )
            + "\n"
        )
        results.append(entry)
        with open(Path(args.work) / "results.json", "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
