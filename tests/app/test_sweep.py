"""factortopy sweep: planning, bad input, and a real 2 backbones × 2 seeds sweep.

The sweep runs through submitit's LocalExecutor (real subprocesses, each running the
``factortopy`` command) on a tiny folder dataset; the driver is killed once the first
model is written, and the rerun must submit only the jobs that are missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("submitit")

from napari_factortopy.app import sweep as sw
from napari_factortopy.app.sweep._records import _read_json
from napari_factortopy.app.sweep.executors import _resources

ROOT = Path(__file__).resolve().parents[2]
TOML = """\
name = "tiny"
out = "out"
seeds = [0, 1]
device = "cpu"

[[datasets]]
name = "subjA"
path = "subjA"

[[backbones]]
name = "effnet-early"
spec = "efficientnet_lite0"
layers = "blocks.1.0,blocks.3.0"

[[backbones]]
name = "effnet-late"
spec = "{spec2}"
layers = "blocks.5.0,blocks.6.0"

[[recipes]]
name = "tiny"
steps_per_epoch = 5
max_epochs = 1
bottleneck = 8
batch_size = 8
no_soup = true

[extract]
chunk_images = 12
batch_size = 12
jobs_per_cache = {jobs}
grid = [2, 2]

[local]
max_parallel = 2
"""


def tiny_dataset(root: Path, n: int = 24, per_hemi: int = 16, seed: int = 0) -> Path:
    """A folder dataset: n small images, 2·per_hemi fsaverage5 vertices in 4 ROIs."""
    from napari_factortopy.data.datasets.folder import write_folder

    rng = np.random.default_rng(seed)
    level = rng.uniform(0, 255, n)
    images = {
        f"im{i:03d}.png": np.clip(level[i] + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(
            np.uint8
        )
        for i in range(n)
    }
    v = 2 * per_hemi
    ids = np.concatenate([np.arange(per_hemi), np.arange(per_hemi)]) * 7
    resp = (level[:, None] / 255 - 0.5) * rng.normal(size=v)[None] + 0.3 * rng.normal(size=(n, v))
    roi = np.tile(np.repeat(np.arange(1, 5), per_hemi // 4), 2)
    return write_folder(
        root,
        images,
        resp,
        ids,
        per_hemi,
        "fsaverage5",
        roi=roi,
        roi_names=["V1", "V2", "OPA", "EBA"],
    )


def write_sweep(tmp: Path, spec2: str = "efficientnet_lite0", jobs: int = 2) -> Path:
    """The tiny sweep; ``jobs`` extraction jobs per cache (chunk-aligned ranges)."""
    tiny_dataset(tmp / "subjA")
    path = tmp / "sweep.toml"
    path.write_text(TOML.format(spec2=spec2, jobs=jobs), encoding="utf-8")
    return path


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_factortopy.app.cli", *args]


def _valid(path: Path) -> bool:
    from napari_factortopy.core.fitted_model import FittedModel

    try:
        FittedModel.load(path)
        return True
    except Exception:
        return False


# ------------------------------------------------------------------ planning


def test_plan_has_chunk_aligned_arrays_then_training_then_collection(tmp_path):
    sweep = sw.load_sweep(write_sweep(tmp_path))
    plan = sw.plan_jobs(sweep)  # caches not created yet: one extraction job per cache
    assert [j.kind for j in plan.jobs] == ["extract"] * 2 + ["train"] * 4 + ["collect"]
    assert all(j.deps == [f"extract__{j.cache}"] for j in plan.of_kind("train"))
    assert plan.by_key["collect"].deps == [j.key for j in plan.of_kind("train")]
    loaded = sw.validate(sweep)
    sw.prepare_caches(sweep, loaded)
    plan = sw.plan_jobs(sweep)
    ext = plan.of_kind("extract")
    assert [j.range for j in ext] == [(0, 12), (12, 24)] * 2
    assert all(j.argv[j.argv.index("--range") + 1] in ("0", "12") for j in ext)
    states = sw.job_states(plan)
    assert {s.state for s in states.values()} == {"missing"}
    train = plan.of_kind("train")[0]
    assert train.argv[:1] == ["train"] and "--checkpoints" in train.argv
    assert {"--steps-per-epoch", "--no-soup", "--bottleneck"} <= set(train.argv)


def test_job_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A training job whose checkpoint exists runs `train … --resume`."""
    calls = []

    class Child:
        def __init__(self, cmd):
            calls.append(cmd)
            self.pid, self.returncode = os.getpid(), 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Child)
    ckpt = tmp_path / "ckpt"
    argv = [
        "train",
        "--cache",
        "c",
        "--out",
        str(tmp_path / "m.ftopy"),
        "--checkpoints",
        str(ckpt),
    ]
    sw.job_main("m", argv, str(tmp_path / "jobs"))
    assert "--resume" not in calls[-1]
    ckpt.mkdir()
    (ckpt / "checkpoint.pt").write_bytes(b"x")
    sw.job_main("m", argv, str(tmp_path / "jobs"))
    assert calls[-1][-1] == "--resume"
    run = _read_json(tmp_path / "jobs" / "m.run.json")
    assert run["state"] == "finished" and run["resumed"] and run["peak_rss_mb"] >= 0


# ----------------------------------------------------------------- bad input


def _line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, s in enumerate(text.splitlines()) if needle in s)


def test_unknown_backbone_fails_at_planning_naming_its_line(tmp_path):
    path = write_sweep(tmp_path, spec2="efficientnet_lite9")
    with pytest.raises(sw.SweepError) as err:
        sw.run_sweep(path, "local", say=lambda s: None)
    line = _line_of(path.read_text(), 'spec = "efficientnet_lite9"')
    assert f"sweep.toml:{line}:" in str(err.value) and "efficientnet_lite9" in str(err.value)
    assert not (tmp_path / "out" / "jobs").exists()  # nothing was submitted


def test_missing_dataset_and_bad_recipe_name_their_lines(tmp_path):
    path = write_sweep(tmp_path)
    text = path.read_text()
    path.write_text(text.replace('path = "subjA"', 'path = "nowhere"'))
    with pytest.raises(sw.SweepError, match=rf"sweep.toml:{_line_of(text, 'path = ')}:.*nowhere"):
        sw.validate(sw.load_sweep(path), load_backbones=False)
    path.write_text(text.replace("max_epochs = 1", "max_epochs = 0"))
    with pytest.raises(sw.SweepError, match=r"sweep.toml:\d+: recipe 'tiny'.*max-epochs"):
        sw.validate(sw.load_sweep(path), load_backbones=False)
    path.write_text(text + "\n[extrakt]\nx = 1\n")
    with pytest.raises(sw.SweepError, match=rf"sweep.toml:{len(text.splitlines()) + 2}:.*extrakt"):
        sw.load_sweep(path)


def test_slurm_without_sbatch_says_so(tmp_path, monkeypatch, capsys):
    from napari_factortopy.app.cli import main

    path = write_sweep(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["sweep", str(path), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "not on PATH" in err and "--executor local" in err
    assert not (tmp_path / "out" / "jobs").exists()


def test_slurm_submission_uses_arrays_and_dependencies(tmp_path, monkeypatch):
    """With a stand-in sbatch: one array per cache, training after its extraction."""
    path = write_sweep(tmp_path, jobs=2)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "n = 100 + (len(log.read_text().splitlines()) if log.exists() else 0)\n"
        "lines = pathlib.Path(sys.argv[-1]).read_text().splitlines()\n"
        "opts = [s.split(None, 1)[1] for s in lines if s.startswith('#SBATCH')]\n"
        "with log.open('a') as fh:\n"
        "    fh.write(' '.join(opts) + '\\n')\n"
        "print(f'Submitted batch job {n}')\n"
    )
    fake.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = sw.run_sweep(path, "slurm", say=lambda s: None)
    assert {k: len(v) for k, v in result["submitted"].items()} == {
        "extract": 4,
        "train": 4,
        "collect": 1,
    }
    calls = log.read_text().splitlines()
    assert len(calls) == 5  # 2 extraction arrays, 2 training arrays, 1 collection
    assert "--array=0-1" in calls[0] and "--dependency" not in calls[0]
    assert "--dependency=afterok:100" in calls[2] and "--array=0-1" in calls[2]
    assert "--dependency=afterany:102:103" in calls[4]
    sweep = sw.load_sweep(path)
    sweep.slurm = {
        "partition": "gpu",
        "gpus_per_node": 1,
        "mem_gb": 32,
        "time_min": 90,
        "additional": {"account": "lab"},
        "collect": {"gpus_per_node": 0, "mem_gb": 8},
    }
    assert _resources(sweep, "train") == {
        "partition": "gpu",
        "gpus_per_node": 1,
        "mem": "32G",
        "time": 90,
        "additional_parameters": {"account": "lab"},
    }
    assert "gpus_per_node" not in _resources(sweep, "collect")
    assert _resources(sweep, "collect")["mem"] == "8G"
    # a rerun asks squeue (absent here): everything counts as submitted, nothing resubmitted
    again = sw.run_sweep(path, "slurm", say=lambda s: None)
    assert sum(len(v) for v in again["submitted"].values()) == 0


# ------------------------------------------------------------ the real sweep


def _submitted(output: str) -> dict[str, int]:
    m = re.search(r"submitted: (\d+) extract, (\d+) train, (\d+) collect", output)
    assert m, output[-3000:]
    return dict(zip(("extract", "train", "collect"), map(int, m.groups()), strict=True))


def test_local_sweep_killed_midway_resumes_only_missing_jobs(tmp_path):
    pd = pytest.importorskip("pandas")
    path = write_sweep(tmp_path, jobs=1)  # ranges: see the planning and SLURM tests
    out = tmp_path / "out"
    models = out / "models"
    log1 = (tmp_path / "run1.log").open("w")
    t0 = time.monotonic()
    driver = subprocess.Popen(
        _cli("sweep", str(path), "--executor", "local"),
        cwd=tmp_path,
        env=_env(),
        stdout=log1,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while time.monotonic() - t0 < 600:  # a fuse: about 60 s on a quiet machine
            if any(_valid(p) for p in models.glob("*.ftopy")):
                break
            assert driver.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("no model within 600 s")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and every job it started
        driver.wait()
    killed_at = time.monotonic() - t0
    done = sorted(p for p in models.glob("*.ftopy") if _valid(p))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert 1 <= len(done) < 4

    status = subprocess.run(
        _cli("sweep", "status", str(path)), env=_env(), capture_output=True, text=True
    )
    assert f"train       4 jobs: {len(done)} done" in status.stdout, status.stdout
    assert "extract     2 jobs: 2 done" in status.stdout, status.stdout
    for line in status.stdout.splitlines():
        if line.strip().startswith("failed "):  # each failure names its log
            assert "killed" in line or "never started" in line
    assert status.stdout.count("log: ") == status.stdout.count("  failed ")

    rerun = subprocess.run(
        _cli("sweep", str(path), "--executor", "local"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    submitted = _submitted(rerun.stdout)
    assert submitted == {"extract": 0, "train": 4 - len(done), "collect": 1}, rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished models untouched

    index = pd.read_csv(out / "results.csv")
    assert len(index) == 4
    assert set(index["backbone"]) == {"effnet-early", "effnet-late"}
    assert sorted(index["seed"]) == [0, 0, 1, 1]
    for col in ("r2_test_mean", "r2_V1", "r2_EBA", "hierarchy_slope", "convergence_state",
                "convergence_line", "selectors", "train_seconds", "peak_rss_mb",
                "recipe"):  # fmt: skip
        assert col in index.columns
    # measured in every job of the rerun, which ran to its end (a job killed right
    # after writing its model keeps whatever it had sampled: maybe only its start)
    first_run = {p.resolve() for p in done}
    rerun_rows = index[[(out / p).resolve() not in first_run for p in index["path"]]]
    assert len(rerun_rows) == 4 - len(done)
    assert rerun_rows["peak_rss_mb"].notna().all() and (rerun_rows["peak_rss_mb"] > 50).all()
    assert index["hierarchy_slope"].notna().all()

    final = subprocess.run(
        _cli("sweep", "status", str(path)), env=_env(), capture_output=True, text=True
    )
    assert final.returncode == 0 and "failed" not in final.stdout, final.stdout
    print(f"killed after {killed_at:.0f} s with {len(done)} models; rerun {submitted}")


def test_index_row_names_degenerate_selectors(tmp_path):
    """A sweep's index says which models' selectors chose nothing (their slopes are not
    findings), and is empty for the others."""
    from dataclasses import replace

    from napari_factortopy.app.sweep.index import index_row
    from tests.napari.conftest import make_model

    good = make_model(seed=4)
    bad = replace(good, space=np.tile([1.0, -1.0], (good.n_vertices, 1)))
    rows = {}
    for name, m in (("good", good), ("bad", bad)):
        path = m.save(tmp_path / f"{name}.ftopy")
        rows[name] = index_row(path, {}, None, tmp_path)
    assert rows["good"]["selectors"] == ""
    assert rows["bad"]["selectors"].startswith(
        "every vertex looks at one image point (1.00, -1.00) (the image's corner)"
    )
