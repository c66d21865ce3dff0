"""app/jobs.live_training_job: the Train panel's worker loads the live map's mesh in its
own thread, then runs training_job unchanged."""

from __future__ import annotations

import pytest

import napari_factortopy.scene.brain as brain
from napari_factortopy.app import jobs
from napari_factortopy.data.surfaces import SurfaceError


def _fakes(monkeypatch, calls, mesh_error=None):
    def load_meshset(name, kind):
        calls.append(("mesh", name, kind))
        if mesh_error is not None:
            raise mesh_error

    def training_job(job, should_stop=None, clock=None):
        calls.append(("train", job, should_stop, clock))
        yield {"kind": "start"}
        yield {"kind": "saved"}

    monkeypatch.setattr(brain, "load_meshset", load_meshset)
    monkeypatch.setattr(jobs, "training_job", training_job)


def test_mesh_first_then_the_training_job(monkeypatch):
    calls = []
    _fakes(monkeypatch, calls)
    job = jobs.TrainJob(out="m.ftopy", mesh="fsaverage6")
    stop, clock = (lambda: False), (lambda: 0.0)
    records = jobs.live_training_job(job, stop, clock)
    assert calls == []  # a generator: nothing runs before the worker iterates it
    assert [r["kind"] for r in records] == ["start", "saved"]
    assert calls == [("mesh", "fsaverage6", "inflated"), ("train", job, stop, clock)]


@pytest.mark.parametrize("error", [SurfaceError("no mesh"), OSError("disk"), ValueError("bad")])
def test_a_missing_mesh_does_not_stop_training(monkeypatch, error):
    calls = []
    _fakes(monkeypatch, calls, mesh_error=error)
    job = jobs.TrainJob(out="m.ftopy")
    assert [r["kind"] for r in jobs.live_training_job(job)] == ["start", "saved"]
    assert [c[0] for c in calls] == ["mesh", "train"]


def test_other_mesh_errors_are_raised(monkeypatch):
    calls = []
    _fakes(monkeypatch, calls, mesh_error=RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        list(jobs.live_training_job(jobs.TrainJob(out="m.ftopy")))
    assert [c[0] for c in calls] == ["mesh"]
