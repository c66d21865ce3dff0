"""``factortopy train --seeds S [--jobs J]``: several initialisations trained one after
the other or in worker processes, each saved as ``OUT.seedS.ftopy`` until the ensemble
(:func:`~napari_factortopy.core.ensemble.combine_seeds`) is written."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import _progress

__all__ = ["train_seeds"]


def _seed_part(out: Path, seed: int) -> Path:
    """The model file of one seed of an ensemble (kept until the ensemble is written)."""
    return out.with_name(f"{out.stem}.seed{seed}{out.suffix}")


def train_seeds(args, inputs, tcfg, fit_args, out: Path, started: float):
    """Train ``args.seeds`` initialisations one after the other; write the ensemble.

    Each finished seed is saved as ``OUT.seedS.ftopy`` first, so a killed run reruns
    only the seeds it lacks (and, with ``--checkpoints``, resumes the one it was
    training); the budget is shared among the seeds still to train.
    """
    from dataclasses import replace

    from ..core.ensemble import combine_seeds
    from ..core.estimator import fit
    from ..core.fitted_model import FittedModel
    from ..core.modelfile import ModelFileError

    seeds = [args.seed + k for k in range(args.seeds)]
    kept = fit_args.get("kept_dir")
    if getattr(args, "jobs", 1) > 1:
        _train_seeds_in_processes(args, seeds, out, started)
    models = []
    for i, seed in enumerate(seeds):
        part = _seed_part(out, seed)
        if part.exists():
            try:
                models.append(FittedModel.load(part))
                print(f"seed {seed}: already trained ({part})", file=sys.stderr)
                continue
            except ModelFileError as exc:
                print(f"seed {seed}: retraining ({exc})", file=sys.stderr)
        cfg = replace(tcfg, seed=seed)
        if tcfg.max_seconds is not None:
            left = tcfg.max_seconds - (time.perf_counter() - started)
            cfg = replace(cfg, max_seconds=max(left / (len(seeds) - i), 1e-3))
        ckpt = None
        if args.checkpoints:
            ckpt = Path(args.checkpoints) / f"seed{seed}"
            ckpt.mkdir(parents=True, exist_ok=True)
        if kept is not None:  # the seed's own folder (its checkpoints name its files)
            fit_args = {**fit_args, "kept_dir": ckpt / "kept" if ckpt else kept / f"seed{seed}"}
        print(f"seed {seed} ({i + 1} of {len(seeds)})", file=sys.stderr)
        gen = fit(
            inputs.features,
            inputs.responses,
            inputs.subject,
            inputs.split,
            train_config=cfg,
            checkpoint_dir=ckpt,
            resume=bool(args.resume and ckpt and (ckpt / "checkpoint.pt").exists()),
            seed=seed,
            **fit_args,
        )
        model = _progress.drain_training(gen, cfg)
        model.save(part)
        models.append(model)
    fitted = combine_seeds(models, seeds)
    fitted.save(out)
    for seed in seeds:
        _seed_part(out, seed).unlink(missing_ok=True)
    agree = fitted.summary["ensemble"]["layer_agreement_mean"]
    print(
        f"{len(seeds)} seeds: argmax layer agrees on {agree:.1%} of seed pairs' votes",
        file=sys.stderr,
    )
    return fitted


#: Options of ``factortopy train`` that the seed worker processes get their own values of.
_WORKER_OWN = {"--seeds": 1, "--jobs": 1, "--out": 1, "--seed": 1, "--max-seconds": 1,
               "--checkpoints": 1, "--threads": 1}  # fmt: skip


def _worker_argv(argv: list[str]) -> list[str]:
    """``argv`` (after ``train``) without the options each worker sets itself."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in _WORKER_OWN:
            skip = 0 if "=" in a else _WORKER_OWN[name]
            continue
        out.append(a)
    return out


def _train_seeds_in_processes(args, seeds: list[int], out: Path, started: float) -> None:
    """Train the seeds that have no ``OUT.seedS.ftopy`` yet, ``args.jobs`` at a time,
    each in a ``factortopy train --seeds 1`` process; the caller then combines them.

    Raises
    ------
    RuntimeError
        Naming the seed and its log when a worker fails (finished seeds are kept).
    """
    import math
    import subprocess

    import torch

    argv = list(getattr(args, "argv", []))
    if "train" in argv:
        argv = argv[argv.index("train") + 1 :]
    base = _worker_argv(argv)
    todo = [s for s in seeds if not _seed_part(out, s).exists()]
    jobs = min(args.jobs, len(todo)) or 1
    # the cores (or the --threads given) shared between the workers
    threads = max(1, (getattr(args, "threads", None) or os.cpu_count() or 1) // jobs)
    n_gpu = torch.cuda.device_count() if args.device in ("auto", "cuda") else 0
    running: list[tuple[int, subprocess.Popen, Path]] = []
    failed: list[str] = []

    def launch(seed: int, k: int) -> None:
        part = _seed_part(out, seed)
        cmd = [sys.executable, "-m", "napari_factortopy.app.cli", "train", *base,
               "--seed", str(seed), "--out", str(part), "--threads", str(threads)]  # fmt: skip
        if args.max_seconds:
            left = args.max_seconds - (time.perf_counter() - started)
            rounds = math.ceil((len(todo) - k) / jobs)
            cmd += ["--max-seconds", f"{max(left / max(rounds, 1), 1e-3):.3f}"]
        if args.checkpoints:
            cmd += ["--checkpoints", str(Path(args.checkpoints) / f"seed{seed}")]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if n_gpu:
            env["CUDA_VISIBLE_DEVICES"] = str(k % n_gpu)
        log = part.with_suffix(".log")
        with log.open("w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        print(f"seed {seed}: started in process {proc.pid} (log {log})", file=sys.stderr)
        running.append((seed, proc, log))

    for k, seed in enumerate(todo):
        while len(running) >= jobs:
            time.sleep(0.2)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                if item[1].returncode:
                    failed.append(f"seed {item[0]} (exit {item[1].returncode}, log {item[2]})")
        launch(seed, k)
    for seed, proc, log in running:
        if proc.wait():
            failed.append(f"seed {seed} (exit {proc.returncode}, log {log})")
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(todo)} seed processes failed: {'; '.join(failed)}; "
            "the finished seeds are kept: rerun the same command to train the rest"
        )
