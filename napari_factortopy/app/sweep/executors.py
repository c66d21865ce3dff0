"""Running a sweep: what is missing or failed goes to submitit, locally or on SLURM.

submitit (imported inside functions) submits the jobs: ``LocalExecutor`` runs them as
subprocesses of this machine, ``SlurmExecutor`` as SLURM jobs with dependencies.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._records import _write_json
from .job import job_main
from .plan import Job, Plan, plan_jobs, prepare_caches, validate
from .spec import Sweep, SweepError, load_sweep
from .state import _jobs_dir, job_states, output_done

__all__ = ["EXECUTORS", "make_executor", "run_sweep"]

EXECUTORS = ("local", "slurm")


def _resources(sweep: Sweep, kind: str) -> dict[str, Any]:
    """SLURM parameters of one stage: [slurm] overridden by [slurm.<kind>]."""
    base = {k: v for k, v in sweep.slurm.items() if not isinstance(v, dict)}
    base.update(sweep.slurm.get(kind, {}))
    extra = dict(sweep.slurm.get("additional", {}))
    extra.update(base.pop("additional", {}) if isinstance(base.get("additional"), dict) else {})
    out: dict[str, Any] = {}
    names = {
        "partition": "partition",
        "gpus": "gpus_per_node",
        "gpus_per_node": "gpus_per_node",
        "cpus": "cpus_per_task",
        "cpus_per_task": "cpus_per_task",
        "account": "account",
        "qos": "qos",
        "constraint": "constraint",
        "array_parallelism": "array_parallelism",
        "setup": "setup",
        "exclude": "exclude",
    }
    for k, v in base.items():
        if k in names:
            out[names[k]] = v
        elif k in ("mem_gb", "memory_gb"):
            out["mem"] = f"{int(v)}G"
        elif k == "mem":
            out["mem"] = str(v)
        elif k in ("time_min", "timeout_min"):
            out["time"] = int(v)
        elif k == "time":
            out["time"] = v
        elif k != "additional":
            extra[k] = v
    if not out.get("gpus_per_node"):  # 0: a CPU-only stage (collection, extraction)
        out.pop("gpus_per_node", None)
    if extra:
        out["additional_parameters"] = extra
    out.setdefault("time", 60)
    return out


def make_executor(sweep: Sweep, kind: str):
    """A submitit executor for ``kind`` ('local' or 'slurm') writing logs under OUT/logs.

    Raises
    ------
    SweepError
        ``slurm`` without ``sbatch`` on PATH; submitit missing.
    """
    try:
        import submitit
    except ModuleNotFoundError:
        raise SweepError(
            "sweeps need submitit: pip install submitit (or pip install napari-factortopy)"
        ) from None
    logs = sweep.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        return submitit.LocalExecutor(folder=logs / "%j")
    if kind == "slurm":
        if shutil.which("sbatch") is None:
            raise SweepError(
                "--executor slurm: `sbatch` is not on PATH, so no SLURM jobs can be submitted "
                "from this machine. Run the sweep on a SLURM login node, or use "
                "--executor local to run the jobs here"
            )
        return submitit.SlurmExecutor(folder=logs / "%j")
    raise SweepError(f"unknown executor {kind!r}; choose from {EXECUTORS}")


def _record_submission(sweep: Sweep, job: Job, sj, executor: str) -> None:
    _write_json(
        _jobs_dir(sweep) / f"{job.key}.submit.json",
        {
            "key": job.key,
            "kind": job.kind,
            "job_id": str(sj.job_id),
            "executor": executor,
            "host": socket.gethostname(),
            "submitted": time.time(),
            "stdout": str(sj.paths.stdout),
            "stderr": str(sj.paths.stderr),
            "argv": job.argv,
        },
    )
    # a new attempt: the previous attempt's run record no longer describes it
    (_jobs_dir(sweep) / f"{job.key}.run.json").unlink(missing_ok=True)


def run_sweep(
    path: str | os.PathLike,
    executor: str = "local",
    *,
    max_parallel: int | None = None,
    wait: bool | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, check and submit what is missing or failed; returns what was submitted.

    Local jobs run as subprocesses, at most ``max_parallel`` at once ([local]
    max_parallel, default 1), and the call waits for them. SLURM jobs are submitted
    with dependencies (extraction array → training → collection) and the call returns
    unless ``wait``.

    Returns
    -------
    dict
        ``submitted``: {kind: [keys]}, ``states``: the job states at the end,
        ``plan``: the :class:`Plan`.
    """
    sweep = load_sweep(path)
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; choose from {EXECUTORS}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        make_executor(sweep, "slurm")  # raises the clear message before any work
    t0 = time.perf_counter()
    loaded = validate(sweep)
    say(
        f"sweep {sweep.name}: {len(sweep.datasets)} datasets × {len(sweep.backbones)} "
        f"backbones × {len(sweep.recipes)} recipes × {len(sweep.seeds)} seeds, checked in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for sub in ("models", "checkpoints", "jobs", "logs", "caches"):
        (sweep.out / sub).mkdir(parents=True, exist_ok=True)
    copy = sweep.out / "sweep.toml"
    if copy.resolve() != sweep.path:
        copy.write_text(sweep.text, encoding="utf-8")
        _write_json(sweep.out / "sweep.json", {"source": str(sweep.path), "name": sweep.name})
    if not dry_run:
        prepare_caches(sweep, loaded)
    del loaded
    plan = plan_jobs(sweep)
    states = job_states(plan)
    todo = [j for j in plan.jobs if states[j.key].state in ("missing", "failed")]
    counts = {k: sum(j.kind == k for j in todo) for k in ("extract", "train", "collect")}
    say(
        "to submit: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f" (of {len(plan.jobs)} jobs; "
        + f"{sum(s.state == 'done' for s in states.values())} done, "
        + f"{sum(s.state == 'running' for s in states.values())} running)"
    )
    if dry_run:
        return {"submitted": {}, "states": states, "plan": plan, "todo": todo}
    if executor == "local":
        parallel = int(max_parallel or sweep.local.get("max_parallel", 1))
        submitted = _run_local(plan, states, todo, parallel, say)
    else:
        submitted = _submit_slurm(plan, states, todo, say)
        if wait:
            _wait(plan, say)
    final = job_states(plan)
    return {"submitted": submitted, "states": final, "plan": plan, "todo": todo}


def _run_local(plan, states, todo, parallel, say) -> dict[str, list[str]]:
    """Run the jobs as local subprocesses in dependency order; wait for all."""
    sweep = plan.sweep
    ex = make_executor(sweep, "local")
    timeout = int(sweep.local.get("timeout_min", 24 * 60))
    ex.update_parameters(timeout_min=timeout)
    by_key = plan.by_key
    pending = [j.key for j in todo]
    done = {k for k, s in states.items() if s.state == "done"}
    elsewhere = {k for k, s in states.items() if s.state == "running"}
    failed: set[str] = set()
    mine: dict[str, Any] = {}
    submitted: dict[str, list[str]] = {"extract": [], "train": [], "collect": []}
    while pending or mine or elsewhere:
        for key, sj in list(mine.items()):
            if sj.done():
                del mine[key]
                job = by_key[key]
                if job.kind == "collect":
                    job.meta["done_models"] = [
                        str(by_key[d].output) for d in job.deps if d in done
                    ]
                ok, detail = output_done(job)
                (done if ok else failed).add(key)
                why = "" if ok else f" ({detail}; log {sj.paths.stderr})"
                say(f"{'done' if ok else 'FAILED'}: {key}{why}")
        if elsewhere:
            fresh = job_states(plan)
            for key in list(elsewhere):
                if fresh[key].state != "running":
                    elsewhere.discard(key)
                    (done if fresh[key].state == "done" else failed).add(key)
        for key in list(pending):
            job = by_key[key]
            deps = job.deps
            if job.kind == "collect":
                ready = all(d in done or d in failed for d in deps)
            else:
                if any(d in failed for d in deps):
                    pending.remove(key)
                    failed.add(key)
                    say(f"skipped: {key} (a job it needs failed)")
                    continue
                ready = all(d in done for d in deps)
            if ready and len(mine) < parallel:
                sj = ex.submit(job_main, key, job.argv, str(_jobs_dir(sweep)))
                _record_submission(sweep, job, sj, "local")
                mine[key] = sj
                pending.remove(key)
                submitted[job.kind].append(key)
                say(f"started: {key} (pid {sj.job_id})")
        time.sleep(0.2)
    return submitted


def _submit_slurm(plan, states, todo, say) -> dict[str, list[str]]:
    """Submit extraction arrays, training jobs and the collection with dependencies."""
    sweep = plan.sweep
    by_key = plan.by_key
    ids: dict[str, str] = {
        k: str(s.job_id) for k, s in states.items() if s.state == "running" and s.job_id
    }
    todo_keys = {j.key for j in todo}
    submitted: dict[str, list[str]] = {"extract": [], "train": [], "collect": []}
    jd = str(_jobs_dir(sweep))

    def dependency(keys: Iterable[str], how: str) -> dict[str, Any]:
        pend = sorted({ids[k].split("_")[0] for k in keys if k in ids})
        return {"dependency": f"{how}:" + ":".join(pend)} if pend else {}

    # extraction: one array per cache
    for ckey in dict.fromkeys(j.cache for j in plan.of_kind("extract")):
        jobs = [j for j in plan.of_kind("extract") if j.cache == ckey and j.key in todo_keys]
        if not jobs:
            continue
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(job_name=f"ft-extract-{ckey}", **_resources(sweep, "extract"))
        sjs = ex.map_array(
            job_main, [j.key for j in jobs], [j.argv for j in jobs], [jd] * len(jobs)
        )
        for j, sj in zip(jobs, sjs, strict=True):
            _record_submission(sweep, j, sj, "slurm")
            ids[j.key] = str(sj.job_id)
            submitted["extract"].append(j.key)
        array = sjs[0].job_id.split("_")[0]
        say(f"submitted extraction array {array}: {len(jobs)} tasks ({ckey})")
    # training: one array per cache, after its extraction
    for ckey in dict.fromkeys(j.cache for j in plan.of_kind("train")):
        jobs = [j for j in plan.of_kind("train") if j.cache == ckey and j.key in todo_keys]
        if not jobs:
            continue
        res = _resources(sweep, "train")
        extra = dict(res.pop("additional_parameters", {}))
        dep = dependency(jobs[0].deps, "afterok")
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(
            job_name=f"ft-train-{ckey}", **res, **dep,
            **({"additional_parameters": extra} if extra else {}),
        )  # fmt: skip
        sjs = ex.map_array(
            job_main, [j.key for j in jobs], [j.argv for j in jobs], [jd] * len(jobs)
        )
        for j, sj in zip(jobs, sjs, strict=True):
            _record_submission(sweep, j, sj, "slurm")
            ids[j.key] = str(sj.job_id)
            submitted["train"].append(j.key)
        say(
            f"submitted training array {sjs[0].job_id.split('_')[0]}: {len(jobs)} tasks "
            f"({ckey}){' after ' + dep['dependency'] if dep else ''}"
        )
    collect = by_key["collect"]
    if collect.key in todo_keys:
        ex = make_executor(sweep, "slurm")
        ex.update_parameters(
            job_name=f"ft-collect-{sweep.name}",
            **_resources(sweep, "collect"),
            **dependency(collect.deps, "afterany"),
        )
        sj = ex.submit(job_main, collect.key, collect.argv, jd)
        _record_submission(sweep, collect, sj, "slurm")
        submitted["collect"].append(collect.key)
        say(f"submitted collection {sj.job_id}")
    say(f"follow it with: factortopy sweep status {sweep.path}")
    return submitted


def _wait(plan: Plan, say: Callable[[str], None], poll: float = 30.0) -> None:
    while True:
        states = job_states(plan)
        if not any(s.state == "running" for s in states.values()):
            return
        time.sleep(poll)
