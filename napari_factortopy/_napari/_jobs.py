"""Long jobs of the plugin as plain generators (no Qt): training a model from the viewer.

The train widget runs :func:`training_job` in a napari ``thread_worker``; tests and
the sample data run it directly. Records are those of
:func:`napari_factortopy.core.training.train` plus:

- ``{"kind": "phantom", "stage": ...}`` while a missing phantom subject is built;
- ``{"kind": "start", "preview": FittedModel, "total_steps": int}`` before the first
  step (a model with uniform selectors, for the live map);
- ``{"kind": "saved", "path": str, "model": FittedModel}`` at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import napari_factortopy  # noqa: F401  (installs the Mesa/triton guard first)

__all__ = ["TrainJob", "training_job"]


@dataclass
class TrainJob:
    """What to train on and how (defaults: the paper's recipe, METHOD.md §3).

    Attributes
    ----------
    out : path
        The ``.ftopy`` file to write.
    phantom : path, optional
        A phantom subject folder (built first when empty, with ``phantom_config``).
    cache, responses, subject : paths, optional
        Otherwise: a feature cache (zarr), responses ``.npy`` (N, V) and a subject
        ``.npz`` with ``vertex_ids`` (V,), ``n_lh`` and optionally ``roi`` (V,).
    mesh : str
        Mesh the subject's vertex ids refer to.
    layers : sequence of str, optional
        Backbone layers to use (default all).
    train : dict
        :class:`~napari_factortopy.core.training.TrainConfig` fields to override.
    bottleneck, hidden : int
    device : str
    """

    out: str | Path
    phantom: str | Path | None = None
    phantom_config: dict = field(default_factory=dict)
    cache: str | Path | None = None
    responses: str | Path | None = None
    subject: str | Path | None = None
    mesh: str = "fsaverage5"
    layers: Sequence[str] | None = None
    train: dict = field(default_factory=dict)
    bottleneck: int = 128
    hidden: int = 128
    device: str = "auto"
    seed: int = 0


class _LayerSubset:
    """A feature cache seen through a subset of its layers."""

    def __init__(self, cache, layers: Sequence[str]) -> None:
        self.cache, self.layers = cache, list(layers)

    def read(self, indices=None, dtype=np.float32):
        return self.cache.read(indices, layers=self.layers, dtype=dtype)

    def nbytes(self, indices=None):
        return self.cache.nbytes(indices, layers=self.layers)


def _load_inputs(job: TrainJob) -> Iterator[dict]:
    """Yield phantom-building records, then ``{"kind": "inputs", ...}``."""
    from napari_factortopy.data.cache import FeatureCache

    if job.phantom is not None:
        from napari_factortopy.data.phantom import PhantomConfig, build_phantom, load_phantom

        root = Path(job.phantom)
        if not (root / "phantom.json").exists():
            cfg = PhantomConfig(**job.phantom_config)
            for rec in build_phantom(root, cfg, device=job.device):
                yield {"kind": "phantom", **{k: v for k, v in rec.items() if k != "subject"}}
        subject = load_phantom(root)
        s = subject.surface
        yield {
            "kind": "inputs",
            "cache": FeatureCache.open(subject.cache_path),
            "responses": subject.responses,
            "vertex_ids": s.vertex_ids,
            "n_lh": s.n_lh,
            "roi": s.roi,
            "roi_names": ["V1", "V2/V3", "OPA", "EBA"],
            "mesh": "fsaverage5",
            "dataset": {"kind": "phantom", "root": str(root), "config": subject.config.to_dict()},
        }
        return
    if job.cache is None or job.responses is None or job.subject is None:
        raise ValueError("choose a phantom folder, or a feature cache, responses and subject")
    cache = FeatureCache.open(job.cache)
    responses = np.load(job.responses, allow_pickle=False)
    with np.load(job.subject, allow_pickle=False) as s:
        ids, n_lh = s["vertex_ids"], int(s["n_lh"])
        roi = s["roi"] if "roi" in s.files else None
        roi_names = [str(x) for x in s["roi_names"]] if "roi_names" in s.files else []
    if responses.ndim != 2 or responses.shape != (cache.n_images, len(ids)):
        raise ValueError(
            f"the responses {job.responses} have shape {responses.shape}; the feature cache "
            f"has {cache.n_images} images and the subject {len(ids)} vertices, so expected "
            f"({cache.n_images}, {len(ids)})"
        )
    yield {
        "kind": "inputs",
        "cache": cache,
        "responses": responses,
        "vertex_ids": ids,
        "n_lh": n_lh,
        "roi": roi,
        "roi_names": roi_names,
        "mesh": job.mesh,
        "dataset": {"kind": "cache", "root": str(job.cache)},
    }


def training_job(job: TrainJob) -> Iterator[dict]:
    """Load the data, train FactorTopy, save the ``.ftopy`` file; yield progress records.

    Raises
    ------
    ValueError
        For inputs that do not match (named in the message).
    napari_factortopy.core.training.TrainingDiverged
        When the loss diverges before any checkpoint was kept.
    """
    from napari_factortopy.core.features import feature_source
    from napari_factortopy.core.fitted import FittedModel
    from napari_factortopy.core.fitting import Subject, fit
    from napari_factortopy.core.model import FactorTopyConfig
    from napari_factortopy.core.runtime import resolve_device
    from napari_factortopy.core.training import TrainConfig, make_split
    from napari_factortopy.data.surfaces import sphere_coordinates

    inputs = None
    for rec in _load_inputs(job):
        if rec["kind"] == "inputs":
            inputs = rec
        else:
            yield rec
    cache = inputs["cache"]
    names = list(job.layers) if job.layers else list(cache.layer_names)
    source = _LayerSubset(cache, names) if job.layers else cache
    widths = [cache.widths[cache.layer_names.index(n)] for n in names]
    ids, n_lh = np.asarray(inputs["vertex_ids"]), int(inputs["n_lh"])
    dev = resolve_device(job.device)
    subject = Subject(
        ids,
        n_lh,
        sphere_coordinates(inputs["mesh"], ids, n_lh, source=str(job.subject or job.phantom)),
        inputs["mesh"],
        inputs["roi"],
        list(inputs["roi_names"]),
    )
    config = FactorTopyConfig(
        widths=tuple(widths), grid=cache.grid, bottleneck=job.bottleneck, hidden=job.hidden
    )
    tcfg = TrainConfig(**job.train)
    split = make_split(len(inputs["responses"]), seed=job.seed)
    features = feature_source(source, np.arange(len(inputs["responses"])), dev)
    v, n_layers = len(ids), len(widths)
    preview = FittedModel(
        config=config.to_dict(),
        state={},
        space=np.zeros((v, 2)),
        layer=np.full((v, n_layers), 1 / n_layers),
        scale=np.full(v, 0.5),
        vertex_ids=ids,
        n_lh=n_lh,
        mesh=inputs["mesh"],
        roi=inputs["roi"],
        roi_names=inputs["roi_names"],
    )
    yield {
        "kind": "start",
        "preview": preview,
        "total_steps": tcfg.max_epochs * tcfg.steps_per_epoch,
    }
    fitted = None
    for rec in fit(
        features,
        inputs["responses"],
        subject,
        split,
        widths=tuple(widths),
        grid=cache.grid,
        backbone={
            "name": cache.backbone,
            "layer_names": names,
            "widths": widths,
            "preprocessing": cache.preprocessing,
        },
        model_options={"bottleneck": job.bottleneck, "hidden": job.hidden},
        train_config=tcfg,
        device=dev,
        snapshots=True,
        seed=job.seed,
        extra={"dataset": inputs["dataset"]},
    ):
        if rec["kind"] == "fitted":
            fitted = rec["model"]
        else:
            yield rec
    path = fitted.save(job.out)
    yield {"kind": "saved", "path": str(path), "model": fitted}
