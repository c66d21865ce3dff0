"""What a sweep's jobs run: any ``factortopy`` command (:func:`job_main`), and the collection.

Every job runs the ``factortopy`` command itself (``python -m napari_factortopy.app.cli
…``) in a child process, so a sweep job behaves exactly as the same command typed by
hand; :func:`collect` is what the collection job's command (``factortopy sweep
collect``) does.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._records import _read_json, _write_json
from .index import INDEX_NAME, index_row, write_index
from .plan import plan_jobs
from .spec import load_sweep
from .state import _jobs_dir, output_done

__all__ = ["collect", "job_main"]


def _peak_rss_kib(pid: int) -> int:
    """A process's peak resident memory (VmHWM, KiB) on Linux; 0 elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def job_main(key: str, argv: list[str], jobs_dir: str) -> int:
    """What a submitted job runs: ``factortopy ARGV`` in a child process.

    Records ``jobs/<key>.run.json`` (running → finished / failed with the exit status,
    wall seconds and the child's peak resident memory). A training job whose checkpoint
    exists resumes from it. Raises (so submitit marks the job failed) when the command
    fails.
    """
    import resource

    argv = list(argv)
    if argv and argv[0] == "train" and "--checkpoints" in argv and "--resume" not in argv:
        ckpt = Path(argv[argv.index("--checkpoints") + 1])
        if ckpt.is_dir() and any(ckpt.rglob("checkpoint.pt")):
            argv.append("--resume")
    run_path = Path(jobs_dir) / f"{key}.run.json"
    base = {
        "key": key,
        "argv": argv,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.time(),
    }
    _write_json(run_path, {**base, "state": "running"})
    cmd = [sys.executable, "-m", "napari_factortopy.app.cli", *argv]
    print("$", shlex.join(["factortopy", *argv]), flush=True)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    peak_kib, last = 0, 0.0
    while child.poll() is None:  # the child's peak RSS so far, kept if the job is killed
        peak_kib = max(peak_kib, _peak_rss_kib(child.pid))
        if time.perf_counter() - last > 5.0 and peak_kib:
            _write_json(run_path, {**base, "state": "running", "peak_rss_mb": peak_kib / 1024})
            last = time.perf_counter()
        try:
            child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    rc = child.returncode
    seconds = time.perf_counter() - t0
    peak_kib = max(peak_kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    _write_json(
        run_path,
        {
            **base,
            "state": "finished" if rc == 0 else "failed",
            "rc": rc,
            "seconds": seconds,
            "peak_rss_mb": peak_kib / 1024.0,
            "resumed": "--resume" in argv,
        },
    )
    if rc != 0:
        raise RuntimeError(f"factortopy {argv[0]} exited with status {rc}")
    return rc


def collect(path: str | os.PathLike, say: Callable[[str], None] = print) -> Path:
    """Write ``results.csv``: one row per finished model of the sweep."""
    sweep = load_sweep(path)
    plan = plan_jobs(sweep)
    rows = []
    for job in plan.of_kind("train"):
        ok, _ = output_done(job)
        if not ok:
            continue
        run = _read_json(_jobs_dir(sweep) / f"{job.key}.run.json")
        rows.append(index_row(job.output, {"key": job.key, **job.meta}, run, sweep.out))
    out = write_index(rows, sweep.out / INDEX_NAME)
    say(f"wrote {out}: {len(rows)} of {len(plan.of_kind('train'))} models")
    return out
