"""Bitwise identity of fixed-seed training runs between two source trees.

Written for issue 19 (the split of ``core/training.py``): the outputs of fixed-seed CPU
training runs on a small phantom must be bitwise equal before and after a refactor.
Two runs cover the loop's paths:

- ``job``: the app's training job (:func:`napari_factortopy.app.jobs.training_job`,
  the paper recipe with top-k, greedy soup and the calibration) writes a ``.ftopy``
  model file; its state arrays, maps and scores are compared.
- ``auto``: :func:`napari_factortopy.core.training.train` with the ``auto`` recipe
  under a budget on a simulated clock (batch probe, recipe, re-planned validation
  interval, regulariser decay by the clock, soup under a deadline, calibration),
  closed after a few validations and resumed from its checkpoint. Every record it
  yields (clock readings included: the simulated clock advances per call, so the
  order of ``clock()`` calls is compared too) and the final weights are compared.

Usage (the "before" tree from a worktree, never by resetting the shared tree)::

    git worktree add WORK/before <commit>
    python scripts/training_identity.py compare --before WORK/before --after . \\
        --work WORK/identity

Each side runs in its own process with ``PYTHONPATH`` pointing at its tree; the phantom
is built once (by the "after" tree) and shared. Exit status 0 when every array and
record is bitwise equal, 1 otherwise (the differing keys are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PHANTOM = {"n_vertices": 300, "n_images": 240, "image_size": 64, "grid": (4, 4), "seed": 3}


def _phantom(work: Path) -> Path:
    from napari_factortopy.data.phantom import PhantomConfig, build_phantom

    root = work / "phantom"
    if not (root / "phantom.json").exists():
        for _ in build_phantom(root, PhantomConfig(**PHANTOM), device="cpu"):
            pass
    return root


class _SimClock:
    """Deterministic clock: each reading advances it by 0.01 s; feature reads cost more."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


class _TimedFeatures:
    def __init__(self, inner, clock: _SimClock) -> None:
        self.inner, self.clock = inner, clock

    def get(self, idx):
        self.clock.now += 0.02 + 0.001 * len(idx)
        return self.inner.get(idx)


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return {"array": x.dtype.str, "shape": list(x.shape), "hex": x.tobytes().hex()}
    if isinstance(x, float | np.floating):
        return float(x).hex()  # bitwise
    if isinstance(x, np.integer):
        return int(x)
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if hasattr(x, "state_dict"):
        return "<module>"
    return x if isinstance(x, str | int | bool | type(None)) else repr(type(x))


def _no_wall_clock(x):
    """``x`` without the wall-clock readings of a real run (keys naming seconds, elapsed
    time or an ETA), at any depth."""
    if isinstance(x, dict):
        return {k: _no_wall_clock(v) for k, v in x.items()
                if "seconds" not in str(k) and k not in ("elapsed", "eta")}  # fmt: skip
    if isinstance(x, list | tuple):
        return [_no_wall_clock(v) for v in x]
    return x


def run(work: Path, out: Path) -> None:
    """Both runs with the importable package; arrays → ``out.npz``, records → ``out.json``."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import napari_factortopy
    from napari_factortopy.app.inputs import training_inputs
    from napari_factortopy.app.jobs import TrainJob, training_job
    from napari_factortopy.core.config import TrainConfig
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.core.training import train

    root = _phantom(work)
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"package": str(Path(napari_factortopy.__file__).parent)}

    # 1. the app's job: paper recipe, soup, calibration → a model file
    cfg = TrainConfig(batch_size=8, steps_per_epoch=12, max_epochs=5, top_k=4, lr=3e-3,
                      log_every=5, calibrate=True, seed=0)  # fmt: skip
    model_path = out.with_suffix(".ftopy")
    job = TrainJob(model_path, phantom=root, train=cfg, bottleneck=16, hidden=16,
                   device="cpu", seed=0)  # fmt: skip
    for _ in training_job(job):
        pass
    fm = FittedModel.load(model_path)
    for k, v in fm.state.items():
        arrays[f"job/state/{k}"] = np.asarray(v)
    for k in ("space", "layer", "scale"):
        arrays[f"job/{k}"] = np.asarray(getattr(fm, k))
    for k, v in fm.scores.items():
        arrays[f"job/scores/{k}"] = np.asarray(v)
    meta["job_summary"] = _jsonable(_no_wall_clock(fm.summary or {}))

    # 2. core train(): auto recipe on a simulated clock, closed and resumed
    inputs = training_inputs(phantom=root, split_seed=0, device="cpu")
    config = inputs.model_config(bottleneck=16, hidden=16)
    auto = TrainConfig(recipe="auto", max_seconds=60.0, patience=50, max_epochs=1000, seed=1)
    records = []
    clock = _SimClock()
    feats = _TimedFeatures(inputs.features, clock)
    coords = inputs.subject.joint_coords()
    torch.manual_seed(0)
    model = FactorTopy(coords, config)
    ckpt = work / f"ckpt-{out.stem}"
    gen = train(model, feats, inputs.responses, inputs.split, auto, checkpoint_dir=ckpt,
                clock=clock, started_at=0.0, snapshots=True)  # fmt: skip
    n_val = 0
    for rec in gen:
        records.append(rec)
        n_val += rec["kind"] == "validation"
        if n_val == 3:
            gen.close()
            break
    torch.manual_seed(0)
    model = FactorTopy(coords, config)
    result = None
    for rec in train(model, feats, inputs.responses, inputs.split, auto, checkpoint_dir=ckpt,
                     resume=True, clock=clock, snapshots=True):  # fmt: skip
        records.append(rec)
        if rec["kind"] == "done":
            result = rec["result"]
    for k, v in result.state.items():
        arrays[f"auto/state/{k}"] = v.numpy()
    arrays["auto/test_r2"], arrays["auto/test_r"] = result.test_r2, result.test_r
    meta["auto_records"] = _jsonable([{k: v for k, v in r.items() if k != "result"}
                                      for r in records])  # fmt: skip
    meta["auto_result"] = _jsonable(
        {
            k: getattr(result, k)
            for k in (
                "val_score",
                "history",
                "steps",
                "diverged",
                "soup_members",
                "seconds",
                "epochs",
                "stop_reason",
                "reg_strength",
                "config",
                "recipe",
                "validation_seconds",
                "calibration",
            )
        }
    )
    meta["clock_end"] = clock.now.hex()
    np.savez(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> list[str]:
    """Keys whose arrays or records differ (bitwise) between two runs' outputs."""
    import numpy as np

    xa, xb = np.load(a.with_suffix(".npz")), np.load(b.with_suffix(".npz"))
    bad = sorted(set(xa.files) ^ set(xb.files))
    for k in sorted(set(xa.files) & set(xb.files)):
        u, v = xa[k], xb[k]
        if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
            bad.append(k)
    ma = json.loads(a.with_suffix(".json").read_text())
    mb = json.loads(b.with_suffix(".json").read_text())
    for k in sorted(set(ma) | set(mb)):
        if k != "package" and ma.get(k) != mb.get(k):
            bad.append(k)
    print(f"{len(xa.files)} arrays ({sum(xa[k].size for k in xa.files):,} numbers), "
          f"{len(ma['auto_records'])} records of the resumed auto run compared")  # fmt: skip
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("--before", type=Path, required=True)
    c.add_argument("--after", type=Path, default=Path("."))
    c.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.work, args.out)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    outs = {}
    for side in ("after", "before"):  # "after" first: it builds the shared phantom
        tree = getattr(args, side).resolve()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        outs[side] = args.work / side
        res = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "run",
                "--work",
                str(args.work),
                "--out",
                str(outs[side]),
            ],
            env=env,
            cwd=tree,
        )
        if res.returncode:
            return res.returncode
        pkg = json.loads(outs[side].with_suffix(".json").read_text())["package"]
        print(f"{side}: {pkg}")
        if not pkg.startswith(str(tree)):
            print(f"{side} imported the package from {pkg}, not {tree}")
            return 1
    bad = compare(outs["before"], outs["after"])
    print("bitwise equal" if not bad else "DIFFERENT: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
