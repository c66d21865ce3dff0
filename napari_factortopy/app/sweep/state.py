"""Where each job of a sweep stands: done, running, failed or missing.

Whether a job is finished is read from its output, never from a marker alone: a model
is done when :meth:`FittedModel.load` accepts its file, an extraction job when the
cache marks every row of its range written, the collection when ``results.csv`` lists
exactly the finished models. Re-running a sweep submits only what is missing or
failed; a training job that was killed resumes from its checkpoint (``--resume``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ...core.host import process_alive
from ._records import _read_json
from .index import read_index
from .plan import Job, Plan
from .spec import Sweep

__all__ = ["JOB_STATES", "JobState", "job_states", "output_done", "status_lines"]

JOB_STATES = ("done", "running", "failed", "missing")


@dataclass
class JobState:
    """Where one job stands: ``done``, ``running``, ``failed`` or ``missing``."""

    key: str
    kind: str
    state: str
    detail: str = ""
    log: str | None = None
    job_id: str | None = None


def _jobs_dir(sweep: Sweep) -> Path:
    return sweep.out / "jobs"


def output_done(job: Job) -> tuple[bool, str]:
    """Whether a job's output is there and valid (its own check, not a marker)."""
    from ...core.fitted_model import FittedModel

    if job.kind == "train":
        if not job.output.exists():
            return False, "no model file"
        try:
            FittedModel.load(job.output)
        except Exception as exc:
            return False, f"invalid model file: {str(exc)[:120]}"
        return True, str(job.output)
    if job.kind == "extract":
        from ...data.cache import CacheError, FeatureCache

        if not job.output.exists():
            return False, "cache not created"
        try:
            c = FeatureCache.open(job.output, "r", allow_damaged=True)
        except CacheError as exc:
            return False, str(exc)[:160]
        a, b = job.range if job.range[0] is not None else (0, c.n_images)
        w = c.written[a:b]
        return bool(w.all()), f"{int(w.sum())}/{b - a} rows written"
    if job.kind == "collect":
        index = read_index(job.output.parent) if job.output.exists() else None
        if index is None:
            return False, "no index"
        done = sorted(str(Path(d).resolve()) for d in (job.meta.get("done_models") or []))
        listed = sorted(str((job.output.parent / r["path"]).resolve()) for r in index)
        if listed != done:
            return False, f"index lists {len(listed)} models, {len(done)} are finished"
        return True, f"{len(index)} rows"
    raise ValueError(job.kind)


def _slurm_alive(job_ids: Iterable[str]) -> set[str] | None:
    """Job ids SLURM still knows as pending/running (None: cannot ask)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    alive = set()
    for line in res.stdout.split():
        alive.add(line.strip())
        alive.add(line.strip().split("_")[0])
    return alive


def _last_error(log: str | None) -> str:
    if not log:
        return ""
    try:
        lines = [s for s in Path(log).read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "Error" in line:
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else ""


def job_states(plan: Plan) -> dict[str, JobState]:
    """The state of every job of the plan, from outputs first, then job records."""
    sweep = plan.sweep
    jd = _jobs_dir(sweep)
    host = socket.gethostname()
    states: dict[str, JobState] = {}
    records = {}
    for job in plan.jobs:
        records[job.key] = (
            _read_json(jd / f"{job.key}.submit.json"),
            _read_json(jd / f"{job.key}.run.json"),
        )
    slurm_ids = [
        s.get("job_id") for s, _ in records.values() if s and s.get("executor") == "slurm"
    ]
    alive = _slurm_alive(slurm_ids) if slurm_ids else None
    done_models = []
    for job in plan.jobs:
        if job.kind == "collect":
            job.meta["done_models"] = done_models
        ok, detail = output_done(job)
        sub, run = records[job.key]
        log = (sub or {}).get("stderr")
        jid = (sub or {}).get("job_id")
        if ok:
            if job.kind == "train":
                done_models.append(str(job.output))
            states[job.key] = JobState(job.key, job.kind, "done", detail, log, jid)
            continue
        if sub is None and run is None:
            states[job.key] = JobState(job.key, job.kind, "missing", detail, None, None)
            continue
        st, why = "failed", detail
        if run and run.get("state") == "running":
            if run.get("host") == host:
                st = "running" if process_alive(int(run.get("pid", -1))) else "failed"
                why = "running" if st == "running" else "killed (its process is gone)"
            elif sub and sub.get("executor") == "slurm" and alive is not None:
                known = str(jid) in alive or str(jid).split("_")[0] in alive
                st = "running" if known else "failed"
                why = "running" if st == "running" else "gone from the queue (killed, timeout?)"
            else:
                st, why = "running", f"running on {run.get('host')}"
        elif run and run.get("state") in ("failed", "finished"):
            why = f"exit status {run.get('rc')}: {detail}"
        elif sub:  # submitted, not started
            if sub.get("executor") == "local":
                same = sub.get("host") == host
                if same and process_alive(int(str(jid).split("_")[0] or -1)):
                    st, why = "running", "starting"
                else:
                    why = "never started (its driver stopped?)"
            elif alive is not None:
                in_q = str(jid) in alive or str(jid).split("_")[0] in alive
                st, why = ("running", "queued") if in_q else ("failed", "left the queue unstarted")
            else:
                st, why = "running", "submitted (no squeue here to ask)"
        states[job.key] = JobState(job.key, job.kind, st, why, log, jid)
    return states


def status_lines(plan: Plan, states: Mapping[str, JobState] | None = None) -> list[str]:
    """``factortopy sweep status``: counts per kind and state, then each job not done."""
    states = states or job_states(plan)
    lines = [f"sweep {plan.sweep.name}: {plan.sweep.out}"]
    for kind in ("extract", "train", "collect"):
        ks = [s for s in states.values() if s.kind == kind]
        counts = {k: sum(s.state == k for s in ks) for k in JOB_STATES}
        lines.append(
            f"  {kind:<8} {len(ks):>4} jobs: "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k == "done")
        )
    for s in states.values():
        if s.state == "done":
            continue
        line = f"  {s.state:<8} {s.kind:<8} {s.key}: {s.detail}"
        if s.state == "failed":
            line += f"\n           log: {s.log or '(none: never submitted)'}"
            err = _last_error(s.log)
            if err:
                line += f"\n           last error: {err}"
        elif s.job_id:
            line += f" (job {s.job_id})"
        lines.append(line)
    return lines
