"""One function builds a training run's inputs, for the CLI, the Train panel and Python.

:func:`training_inputs` reads a feature cache and the responses from one of three
sources — a phantom subject folder, a loaded dataset (Algonauts 2023, NSD, folder
format) or a responses ``.npy`` with a subject ``.npz`` — and returns a
:class:`TrainingInputs`: features on the device, responses, the subject's vertices
and sphere coordinates, a split that keeps repeats of an image together, and the
records (backbone, dataset) that the model file keeps. Every check happens here
once, before any training: the cache's image ids against the responses' images,
rows without features (dropped, and said so in ``notes``), the responses' shape and
values, the subject's vertex ids on its mesh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import FactorTopyConfig
from ..core.responses import ResponseRows
from ..core.splits import Split, make_split
from ..core.subject import Subject, check_responses
from ..data.cache import FeatureCache

__all__ = ["TrainingInputs", "training_inputs"]


@dataclass(frozen=True)
class TrainingInputs:
    """Everything :func:`napari_factortopy.core.estimator.fit` needs, checked.

    Attributes
    ----------
    features : FeatureSource
        Tokens of the rows' images (row ``i`` reads image ``image_index[i]``).
    responses : array of shape (N, V)
    image_index : array of shape (N,)
        Cache row (image) of each response row; repeats share one.
    subject : Subject
    split : Split
        Row indices; all rows of an image fall in one split.
    layer_names : list of str, length L
    widths : tuple of int, length L
    grid : (h, w)
    backbone : dict
        ``name``, ``layer_names``, ``widths``, ``preprocessing`` (kept in the model file).
    dataset : dict
        Where the data came from: ``kind`` (``"phantom"``, ``"algonauts"``, ``"nsd"``,
        ``"folder"`` or ``"arrays"``), ``root``, ``cache``, ``responses`` (absolute
        paths) and, for a phantom, its ``config``.
    notes : tuple of str
        What the user should know (e.g. rows dropped for missing features).
    noise_ceiling : array of shape (V,), optional
        Fraction of explainable variance per vertex (NaN: unknown), from a
        ``noise_ceiling`` file, else the dataset's own (NSD's ncsnr, a folder's
        ``noise_ceiling.npy``, a phantom's truth); None when no ceiling is known.
    noise_ceiling_source : str
        Where it came from ("" when there is none).
    identity : dict
        What the data are, for checkpoints (:func:`napari_factortopy.core.training.train`'s
        ``identity``): ``dataset`` (its kind, the images of the response rows, the
        vertices) and ``cache`` (backbone, layers, weights, grid, image ids), each
        ``{"what": text, "digest": str}``; paths are shown, not compared, so moved data
        still resumes.
    """

    features: Any
    responses: np.ndarray
    image_index: np.ndarray
    subject: Subject
    split: Split
    layer_names: list[str]
    widths: tuple[int, ...]
    grid: tuple[int, int]
    backbone: dict
    dataset: dict
    notes: tuple[str, ...] = field(default_factory=tuple)
    noise_ceiling: np.ndarray | None = None
    noise_ceiling_source: str = ""
    identity: dict = field(default_factory=dict)

    def model_config(self, **options: Any) -> FactorTopyConfig:
        """The :class:`FactorTopyConfig` for these features (``bottleneck=``, ``hidden=``…)."""
        return FactorTopyConfig(widths=self.widths, grid=self.grid, **options)


class _LayerSubset:
    """A feature cache seen through a subset of its layers (same ``read``/``nbytes``,
    ``widths``, ``grid``, ``n_images``, ``chunk_images``: what a feature source reads)."""

    def __init__(self, cache: FeatureCache, layers: Sequence[str]) -> None:
        self.cache, self.layers = cache, list(layers)
        self.widths = [int(cache.widths[cache.layer_names.index(n)]) for n in self.layers]
        self.grid = tuple(cache.grid)
        self.n_images, self.chunk_images = cache.n_images, cache.chunk_images

    def read(self, indices=None, dtype=np.float32):
        return self.cache.read(indices, layers=self.layers, dtype=dtype)

    def nbytes(self, indices=None):
        return self.cache.nbytes(indices, layers=self.layers)


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(
            np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode()
        )
    return h.hexdigest()[:16]


def _identity(record: dict, fc: FeatureCache, names: list[str], image_index, subj) -> dict:
    """The ``identity`` of :class:`TrainingInputs` (see there)."""
    ids = [str(i) for i in fc.image_ids]
    rows = np.asarray(image_index, np.int64)
    widths = [int(fc.widths[fc.layer_names.index(n)]) for n in names]
    h, w = fc.grid
    dataset = {
        "what": f"{record['kind']} {record.get('root', '?')} ({len(rows)} response rows, "
        f"{subj.n_vertices} vertices on {subj.mesh})",
        "digest": _digest(
            record["kind"],
            [ids[i] for i in rows],
            np.asarray(subj.vertex_ids, np.int64),
            int(subj.n_lh),
            subj.mesh,
        ),
    }
    cache = {
        "what": f"feature cache {fc.path} ({fc.backbone}, {len(names)} layers, grid "
        f"{h}×{w}, {fc.n_images} images)",
        "digest": _digest(fc.backbone, names, widths, (h, w), ids, fc.weights),
    }
    return {"dataset": dataset, "cache": cache}


def _abs(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _from_phantom(root: Path) -> tuple:
    from ..data.phantom import load_phantom

    ph = load_phantom(root)
    responses = ph.responses
    ids = [f"phantom-{i:05d}" for i in range(len(responses))]
    record = {
        "kind": "phantom",
        "root": _abs(root),
        "cache": _abs(ph.cache_path),
        "responses": _abs(root / "responses.npy"),
        "config": ph.config.to_dict(),
    }
    nc = ph.truth.get("ceiling")
    ceiling = (None, "") if nc is None else (nc, f"the phantom's truth ({_abs(root)})")
    return ph.cache_path, responses, np.arange(len(responses)), ids, ph.subject(), record, ceiling


def _from_dataset(ds, subjects_dir, allow_download) -> tuple:
    from ..data.surfaces import sphere_coordinates

    sphere = sphere_coordinates(
        ds.mesh,
        ds.vertex_ids,
        ds.n_lh,
        subjects_dir=subjects_dir,
        allow_download=allow_download,
        source=str(ds.root),
    )
    subject = Subject(ds.vertex_ids, ds.n_lh, sphere, ds.mesh, ds.roi, list(ds.roi_names))
    record = {"kind": ds.kind, "root": _abs(ds.root), "responses": _abs(ds.root)}
    ids = [str(i) for i in ds.image_ids]
    ceiling = (None, "")
    if ds.noise_ceiling is not None:
        note = ds.info.get("noise_ceiling") or f"the {ds.kind} dataset's noise_ceiling"
        ceiling = (ds.noise_ceiling, f"{note} ({_abs(ds.root)})")
    image_index = np.asarray(ds.image_index, np.int64)
    return None, ds.responses, image_index, ids, subject, record, ceiling


def _from_arrays(responses_path, subject_path, mesh, subjects_dir, allow_download) -> tuple:
    from ..data.surfaces import sphere_coordinates

    responses_path, subject_path = Path(responses_path), Path(subject_path)
    try:
        responses = np.load(responses_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{responses_path}: expected a .npy array of responses (images, vertices); "
            f"it cannot be read ({exc})"
        ) from exc
    try:
        with np.load(subject_path, allow_pickle=False) as s:
            ids = np.asarray(s["vertex_ids"], np.int64)
            n_lh = int(s["n_lh"])
            roi = np.asarray(s["roi"], np.int64) if "roi" in s.files else None
            roi_names = [str(x) for x in s["roi_names"]] if "roi_names" in s.files else []
            mesh = str(s["mesh"]) if "mesh" in s.files else mesh
    except KeyError as exc:
        raise ValueError(
            f"{subject_path}: expected a subject .npz with 'vertex_ids' and 'n_lh' "
            f"(optionally 'roi', 'roi_names', 'mesh'); {exc.args[0]!r} is missing"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{subject_path}: expected a subject .npz; cannot read it ({exc})"
        ) from exc
    sphere = sphere_coordinates(
        mesh,
        ids,
        n_lh,
        subjects_dir=subjects_dir,
        allow_download=allow_download,
        source=str(subject_path),
    )
    subject = Subject(ids, n_lh, sphere, mesh, roi, roi_names)
    record = {
        "kind": "arrays",
        "root": _abs(subject_path.parent),
        "responses": _abs(responses_path),
    }
    return None, responses, np.arange(len(responses)), None, subject, record, (None, "")


def _read_source(phantom, dataset, responses, subject, mesh, subjects_dir, allow_download):
    """Read the one source of responses :func:`training_inputs` was given.

    Returns
    -------
    tuple
        ``(own cache or None, responses (N, V), image index (N,), image ids or None,
        subject, dataset record, (noise ceiling or None, its source))``.
    """
    given = [phantom is not None, dataset is not None, responses is not None]
    if sum(given) != 1 or (responses is not None and subject is None):
        raise ValueError(
            "give exactly one source of responses: a phantom folder, a dataset, or a "
            "responses .npy together with a subject .npz"
        )
    if phantom is not None:
        own_cache, y, image_index, ids, subj, record, ceiling = _from_phantom(Path(phantom))
    elif dataset is not None:
        own_cache, y, image_index, ids, subj, record, ceiling = _from_dataset(
            dataset, subjects_dir, allow_download
        )
    else:
        own_cache, y, image_index, ids, subj, record, ceiling = _from_arrays(
            responses, subject, mesh, subjects_dir, allow_download
        )
    return own_cache, y, image_index, ids, subj, record, ceiling


def _matching_cache(cache, own_cache, record: dict, ids, y: np.ndarray, dataset) -> FeatureCache:
    """Open the feature cache (``cache``, else the source's own) and check that it
    holds the source's images (ids, image content, one row per response row);
    records its path in ``record["cache"]``."""
    source = record["responses"]
    cache = cache if cache is not None else own_cache
    if cache is None:
        raise ValueError(f"{source}: no feature cache given; extract features first")
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache.open(cache)
    record["cache"] = _abs(fc.path) if getattr(fc, "path", None) else record.get("cache")
    if ids is not None and list(map(str, fc.image_ids)) != ids:
        raise ValueError(
            f"{fc.path}: the cache's {fc.n_images} image ids do not match the "
            f"{len(ids)} images of {source}; extract features for this dataset first"
        )
    if dataset is not None:  # same names, other pictures? (decodes a few images)
        from ..data.extract import check_images

        check_images(fc, dataset.load_images)
    if ids is None and len(y) != fc.n_images:
        raise ValueError(
            f"{source}: {len(y)} response rows, but the feature cache {fc.path} has "
            f"{fc.n_images} images; expected one row per cached image, in the cache's order"
        )
    return fc


def _written_rows(fc: FeatureCache, y: np.ndarray, image_index: np.ndarray):
    """Drop the response rows whose images have no features in the cache.

    Returns
    -------
    y, image_index, notes : the kept rows, their images, a note when rows were dropped
    """
    notes: list[str] = []
    written = np.asarray(fc.written)[image_index]
    if not written.all():
        notes.append(
            f"{fc.path}: {int((~written).sum())} response rows have no features "
            "(images skipped or not extracted yet); training without them"
        )
        keep = np.flatnonzero(written)
        y = y.subset_rows(keep) if isinstance(y, ResponseRows) else y[keep]
        image_index = image_index[keep]
    return y, image_index, notes


def _layer_subset(fc: FeatureCache, layers: Sequence[str] | None):
    """The layers to train on (default: all of the cache's), their widths and the
    store that reads only them."""
    names = list(layers) if layers else list(fc.layer_names)
    unknown = [n for n in names if n not in fc.layer_names]
    if unknown:
        raise ValueError(
            f"{fc.path}: layers {unknown} are not in the cache (it has {list(fc.layer_names)})"
        )
    widths = tuple(int(fc.widths[fc.layer_names.index(n)]) for n in names)
    store = _LayerSubset(fc, names) if layers else fc
    return names, widths, store


def training_inputs(
    cache: str | Path | FeatureCache | None = None,
    *,
    phantom: str | Path | None = None,
    dataset: Any = None,
    responses: str | Path | None = None,
    subject: str | Path | None = None,
    mesh: str = "fsaverage5",
    layers: Sequence[str] | None = None,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    device: Any = "cpu",
    memory_limit: int | None = None,
    subjects_dir: str | Path | None = None,
    allow_download: bool = False,
    noise_ceiling: str | Path | None = None,
) -> TrainingInputs:
    """Read, check and assemble a training run's inputs.

    Give exactly one source: ``phantom`` (a phantom subject folder; its own feature
    cache is used unless ``cache`` is given), ``dataset`` (a loaded
    :class:`~napari_factortopy.data.datasets.Dataset`) or ``responses`` + ``subject``
    (an (N, V) ``.npy`` whose rows are the cache's images in order, and a ``.npz``
    with ``vertex_ids`` (V,), ``n_lh`` and optionally ``roi`` (V,), ``roi_names``,
    ``mesh``).

    Parameters
    ----------
    cache : path or FeatureCache
        The feature cache (zarr) of the source's images.
    layers : sequence of str, optional
        Backbone layers to train on (default: every layer of the cache).
    split_seed, split_fractions
        The train/val/test split of images (repeats of an image stay together).
    device : str or torch.device
        Where the features are placed (when they fit in ``memory_limit`` bytes).
    subjects_dir, allow_download
        Where the mesh of the subject's vertices is looked for (see
        :func:`napari_factortopy.data.surfaces.sphere_coordinates`).
    noise_ceiling : path, optional
        A noise-ceiling file (:func:`napari_factortopy.data.noise_ceiling.read_noise_ceiling`);
        it replaces the source's own ceiling, if any.

    Returns
    -------
    TrainingInputs

    Raises
    ------
    ValueError
        Inputs that do not fit together, naming the file and what was expected.
    """
    from ..core.feature_source import RowMappedFeatures, feature_source
    from ..core.runtime import resolve_device

    own_cache, y, image_index, ids, subj, record, ceiling = _read_source(
        phantom, dataset, responses, subject, mesh, subjects_dir, allow_download
    )
    source = record["responses"]
    if noise_ceiling is not None:
        from ..data.noise_ceiling import read_noise_ceiling

        ceiling = read_noise_ceiling(noise_ceiling, subj.vertex_ids, subj.n_lh, subj.mesh)
    fc = _matching_cache(cache, own_cache, record, ids, y, dataset)
    y, image_index, notes = _written_rows(fc, y, image_index)
    check_responses(y, len(image_index), subj.n_vertices, source)

    names, widths, store = _layer_subset(fc, layers)
    dev = resolve_device(device)
    split = make_split(len(y), image_index, fractions=split_fractions, seed=split_seed)
    # streamed (a cache larger than the limit): the validation images stay in memory
    val_images = np.unique(image_index[split.val])
    tokens = feature_source(store, np.unique(image_index), dev, memory_limit, val_images)
    features = RowMappedFeatures(tokens, image_index)
    return TrainingInputs(
        features=features,
        responses=y,
        image_index=image_index,
        subject=subj,
        split=split,
        layer_names=names,
        widths=widths,
        grid=tuple(int(g) for g in fc.grid),
        backbone={
            "name": fc.backbone,
            "layer_names": names,
            "widths": list(widths),
            "preprocessing": fc.preprocessing,
        },
        dataset=record,
        notes=tuple(notes),
        noise_ceiling=None if ceiling[0] is None else np.asarray(ceiling[0], np.float32),
        noise_ceiling_source=ceiling[1],
        identity=_identity(record, fc, names, image_index, subj),
    )
