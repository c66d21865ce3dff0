"""Long jobs of the plugin as plain generators (no Qt): training a model from the viewer.

The train widget runs :func:`live_training_job` (:func:`training_job` after loading the
live map's mesh) in a napari ``thread_worker``; tests and the sample data run
:func:`training_job` directly. Records are those of
:func:`napari_factortopy.core.training.train` plus:

- ``{"kind": "phantom", "stage": ...}`` while a missing phantom subject is built;
- ``{"kind": "start", "preview": FittedModel, "total_steps": int}`` before the first
  step (a model with uniform selectors, for the live map);
- ``{"kind": "saved", "path": str, "model": FittedModel}`` at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_factortopy.core.config import TrainConfig
from napari_factortopy.data.phantom import PhantomConfig

__all__ = ["PausableClock", "TrainJob", "live_training_job", "training_job"]


class PausableClock:
    """A monotonic clock (seconds) that stands still while paused.

    A training budget measured by it (:func:`training_job`'s ``clock``) is not used up
    by a pause. Thread-safe: the viewer pauses and resumes it while the training thread
    reads it.

    Parameters
    ----------
    clock : callable
        The underlying monotonic clock (default :func:`time.perf_counter`).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._paused_at: float | None = None
        self._paused_for = 0.0

    def __call__(self) -> float:
        with self._lock:
            now = self._clock() if self._paused_at is None else self._paused_at
            return now - self._paused_for

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def pause(self) -> None:
        """Stop the clock (again: no effect)."""
        with self._lock:
            if self._paused_at is None:
                self._paused_at = self._clock()

    def resume(self) -> None:
        """Run the clock on from where it stopped (when running: no effect)."""
        with self._lock:
            if self._paused_at is not None:
                self._paused_for += self._clock() - self._paused_at
                self._paused_at = None


@dataclass(frozen=True)
class TrainJob:
    """What to train on and how (defaults: the paper's recipe, METHOD.md §3).

    Attributes
    ----------
    out : path
        The ``.ftopy`` file to write.
    phantom : path, optional
        A phantom subject folder (built first when empty, with ``phantom_config``).
    phantom_config : PhantomConfig, optional
        How to build a missing phantom (default :class:`PhantomConfig()`).
    cache, responses, subject : paths, optional
        Otherwise: a feature cache (zarr), responses ``.npy`` (N, V) and a subject
        ``.npz`` with ``vertex_ids`` (V,), ``n_lh`` and optionally ``roi`` (V,).
    mesh : str
        Mesh the subject's vertex ids refer to.
    layers : tuple of str, optional
        Backbone layers to use (default all).
    train : TrainConfig
        The optimisation recipe.
    bottleneck, hidden : int
        Architecture (:class:`~napari_factortopy.core.model.FactorTopyConfig`).
    device : str
    seed : int
        Seeds the initialisation and the split.
    """

    out: str | Path
    phantom: str | Path | None = None
    phantom_config: PhantomConfig | None = None
    cache: str | Path | None = None
    responses: str | Path | None = None
    subject: str | Path | None = None
    mesh: str = "fsaverage5"
    layers: tuple[str, ...] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    bottleneck: int = 128
    hidden: int = 128
    device: str = "auto"
    seed: int = 0


def _build_phantom_if_missing(job: TrainJob) -> Iterator[dict]:
    from napari_factortopy.data.phantom import build_phantom

    root = Path(job.phantom)
    if not (root / "phantom.json").exists():
        for rec in build_phantom(root, job.phantom_config or PhantomConfig(), device=job.device):
            yield {"kind": "phantom", **{k: v for k, v in rec.items() if k != "subject"}}


def training_job(
    job: TrainJob,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[dict]:
    """Load the data, train FactorTopy, save the ``.ftopy`` file; yield progress records.

    ``should_stop`` (polled before every step) ends training early the way a budget
    does: the current weights are validated, the soup made, the model calibrated (when
    the recipe calibrates), scored and saved as usual (its summary says "stopped by the
    user"); closing the generator instead saves nothing. ``clock`` measures the time
    budget (default :func:`time.perf_counter`); a :class:`PausableClock` paused while
    the caller holds the generator keeps a pause out of the budget.

    Raises
    ------
    ValueError
        For inputs that do not match (named in the message).
    napari_factortopy.core.training.TrainingDiverged
        When the loss diverges before any checkpoint was kept.
    """
    from napari_factortopy.app.inputs import training_inputs
    from napari_factortopy.core.estimator import fit
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.runtime import resolve_device

    dev = resolve_device(job.device)
    if job.phantom is not None:
        yield from _build_phantom_if_missing(job)
        source = {"phantom": job.phantom}
    elif job.cache is None or job.responses is None or job.subject is None:
        raise ValueError("choose a phantom folder, or a feature cache, responses and subject")
    else:
        source = {"responses": job.responses, "subject": job.subject, "mesh": job.mesh}
    inputs = training_inputs(
        job.cache, **source, layers=job.layers, split_seed=job.seed, device=dev
    )
    config = inputs.model_config(bottleneck=job.bottleneck, hidden=job.hidden)
    subject = inputs.subject
    v, n_layers = subject.n_vertices, config.n_layers
    roi = subject.roi if subject.roi is not None else np.zeros(v, np.int64)
    preview = FittedModel(
        config=config.to_dict(),
        state={},
        space=np.zeros((v, 2)),
        layer=np.full((v, n_layers), 1 / n_layers),
        scale=np.full(v, 0.5),
        vertex_ids=subject.vertex_ids,
        n_lh=subject.n_lh,
        mesh=subject.mesh,
        roi=roi,
        roi_names=list(subject.roi_names),
    )
    yield {
        "kind": "start",
        "preview": preview,
        "total_steps": job.train.max_epochs * job.train.steps_per_epoch,
        "notes": list(inputs.notes),
    }
    fitted = None
    for rec in fit(
        inputs.features,
        inputs.responses,
        subject,
        inputs.split,
        config=config,
        train_config=job.train,
        backbone=inputs.backbone,
        device=dev,
        snapshots=True,
        should_stop=should_stop,
        clock=clock,
        seed=job.seed,
        extra={"dataset": inputs.dataset},
        noise_ceiling=inputs.noise_ceiling,
        noise_ceiling_source=inputs.noise_ceiling_source,
    ):
        if rec["kind"] == "fitted":
            fitted = rec["model"]
        else:
            yield rec
    path = fitted.save(job.out)
    yield {"kind": "saved", "path": str(path), "model": fitted}


def live_training_job(
    job: TrainJob,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[dict]:
    """:func:`training_job`, after loading the live map's mesh in the calling thread.

    The Train panel runs this in its worker thread: the first mesh load imports nilearn
    (seconds); done there, the viewer stays live and the "start" record finds the mesh
    cached. A mesh that cannot be loaded is left to the live map to report.
    """
    from napari_factortopy.data.surfaces import SurfaceError
    from napari_factortopy.scene.brain import load_meshset

    try:
        load_meshset(job.mesh, "inflated")
    except (SurfaceError, OSError, ValueError):
        pass  # the preview says so when it is shown
    yield from training_job(job, should_stop, clock=clock)
