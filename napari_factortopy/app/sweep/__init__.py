"""Sweeps: datasets × backbones × recipes × seeds as jobs on a cluster (or one machine).

A sweep is described by a TOML file (see docs/SWEEPS.md) and lives in one output
folder::

    OUT/
      caches/<dataset>__<backbone>.zarr      one feature cache per dataset × backbone
      models/<dataset>__<backbone>__<recipe>__s<seed>.ftopy
      checkpoints/<model key>/               `train --checkpoints` (a killed job resumes)
      jobs/<key>.submit.json                 what the driver submitted (job id, logs)
      jobs/<key>.run.json                    what the job says (running / finished /
                                             failed, exit status, seconds, peak RSS)
      logs/                                  submitit's logs (stdout/stderr of each job)
      results.csv                            the index: one row per model
      sweep.toml                             a copy of the description

One job per module: :mod:`.spec` (the TOML description), :mod:`.plan` (the jobs, checks
before submission, the caches created first), :mod:`.state` (where each job stands),
:mod:`.job` (what a job runs; the collection), :mod:`.executors` (submitit, local or
SLURM), :mod:`.index` (``results.csv``) and :mod:`.gallery` (the models as one grid).
"""

from .executors import EXECUTORS, make_executor, run_sweep
from .gallery import caption, gallery, sort_rows
from .index import INDEX_NAME, index_row, read_index, write_index
from .job import collect, job_main
from .plan import Job, Plan, cache_path, extract_argv, plan_jobs, prepare_caches, validate
from .spec import Sweep, SweepError, load_sweep, sweep_folder
from .state import JOB_STATES, JobState, job_states, output_done, status_lines

__all__ = [
    "EXECUTORS",
    "INDEX_NAME",
    "JOB_STATES",
    "Job",
    "JobState",
    "Plan",
    "Sweep",
    "SweepError",
    "cache_path",
    "caption",
    "collect",
    "extract_argv",
    "gallery",
    "index_row",
    "job_main",
    "job_states",
    "load_sweep",
    "make_executor",
    "output_done",
    "plan_jobs",
    "prepare_caches",
    "read_index",
    "run_sweep",
    "sort_rows",
    "status_lines",
    "sweep_folder",
    "validate",
    "write_index",
]
