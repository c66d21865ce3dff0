"""From features and responses to a :class:`~.fitted.FittedModel`, in one generator.

:func:`fit` is the call the CLI (``factortopy train``/``demo``) and the napari train
widget share: it builds the model on the device, runs :func:`.training.train` and
bundles the result with the subject, backbone, split and scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import FactorTopyConfig, TrainConfig
from .convergence import assess_convergence
from .fitted_model import FittedModel
from .metrics import challenge_scores, roi_table
from .splits import Split
from .subject import Subject, check_responses
from .training import train

__all__ = ["FactorTopyMapper", "fit"]


def fit(
    features: Any,
    responses: np.ndarray,
    subject: Subject,
    split: Split,
    *,
    config: FactorTopyConfig,
    train_config: TrainConfig | None = None,
    backbone: dict | None = None,
    device: Any = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    snapshots: bool = False,
    seed: int = 0,
    extra: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
    started_at: float | None = None,
    clock: Callable[[], float] | None = None,
    noise_ceiling: np.ndarray | None = None,
    noise_ceiling_source: str = "",
    identity: dict | None = None,
    kept_dir: str | Path | None = None,
) -> Iterator[dict]:
    """Train a FactorTopy mapping and bundle it.

    Parameters
    ----------
    features : FeatureSource
        Tokens of all images of ``split`` on ``device``.
    responses : array of shape (N, V)
    subject : Subject
    split : Split
    config : FactorTopyConfig
        The architecture; its ``widths`` and ``grid`` must be those of ``features``.
    train_config : TrainConfig
        The optimisation recipe (default: the paper's, METHOD.md §3).
    backbone : dict
        ``name``, ``layer_names``, ``widths``, ``preprocessing`` (recorded).
    device : str
    checkpoint_dir, resume, snapshots, should_stop, started_at
        Passed to :func:`.training.train` (``should_stop``: finish now, keeping the
        best so far; ``started_at``: when the budget's clock started).
    clock : callable, optional
        The clock of the time budget (default :func:`time.perf_counter`; a pausable one
        keeps a pause out of the budget), passed to :func:`.training.train`.
    seed : int
        Seeds the model's initialisation.
    extra : dict
        Recorded in the model file.
    noise_ceiling : array of shape (V,), optional
        Fraction of explainable variance per vertex (NaN: unknown): the model file then
        holds the challenge's noise-normalised test score
        (:func:`~napari_factortopy.core.metrics.challenge_scores`), with
        ``noise_ceiling_source`` saying where the ceiling came from.
    identity : dict, optional
        What the data are (dataset, cache), for the checkpoints: passed to
        :func:`.training.train`.
    kept_dir : path, optional
        Where the states kept for the soup wait on disk instead of in memory (a run
        under a memory limit): passed to :func:`.training.train`.

    Yields
    ------
    dict
        The training records, then ``{"kind": "fitted", "model": FittedModel}``.
    """
    import torch

    from .model import FactorTopy
    from .runtime import resolve_device

    dev = resolve_device(device)
    check_responses(responses, len(responses), subject.n_vertices, "responses")
    if not isinstance(config, FactorTopyConfig):
        raise TypeError(f"config must be a FactorTopyConfig; found {type(config).__name__}")
    torch.manual_seed(seed)
    module = FactorTopy(subject.joint_coords(), config).to(dev)
    tcfg = train_config or TrainConfig()
    result = None
    for rec in train(
        module,
        features,
        responses,
        split,
        tcfg,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        snapshots=snapshots,
        should_stop=should_stop,
        started_at=started_at,
        **({} if clock is None else {"clock": clock}),
        identity=identity,
        kept_dir=kept_dir,
    ):
        if rec["kind"] == "done":
            result = rec["result"]
        yield rec
    if result is None:  # train() always ends with "done"; a generator closed early does not
        return
    roi = subject.roi if subject.roi is not None else np.zeros(subject.n_vertices, np.int64)
    summary = _fit_summary(result, subject, split, roi, dev)
    scores = {
        "r2_test": result.test_r2.astype(np.float32),
        "r_test": result.test_r.astype(np.float32),
    }
    if noise_ceiling is not None:
        nc_scores, nc_summary = challenge_scores(
            result.test_r, noise_ceiling, noise_ceiling_source, roi, list(subject.roi_names)
        )
        scores.update(nc_scores)
        summary.update(nc_summary)
    fitted = _fitted(module, subject, roi, split, len(responses), result, tcfg, backbone,
                     scores, summary, extra)  # fmt: skip
    yield {"kind": "fitted", "model": fitted}


def _fit_summary(result: Any, subject: Subject, split: Split, roi: np.ndarray, dev: Any) -> dict:
    """The model file's summary of a finished :func:`.training.train` run: mean test
    scores, steps and times, how the run ended (:func:`assess_convergence`), the
    calibration and the per-ROI test R²."""
    r2_mean = _nanmean(result.test_r2)
    summary = {
        "r2_test_mean": r2_mean,
        "r_test_mean": _nanmean(result.test_r),
        "val_score": float(result.val_score),
        "steps": int(result.steps),
        "train_seconds": float(result.seconds),
        "diverged": bool(result.diverged),
        "soup_members": list(result.soup_members),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "device": str(dev),
        "epochs": int(result.epochs),
        "validation_seconds": result.validation_seconds,
        "stop_reason": result.stop_reason,
        "convergence": assess_convergence(
            result.stop_reason,
            result.reg_strength,
            result.epochs,
            result.steps,
            [h["val_score"] for h in result.history],
            r2_mean,
        ),
    }
    if result.calibration is not None:
        summary["calibration"] = _jsonable(result.calibration)
    if subject.roi_names:
        summary["roi_r2_test"] = roi_table(result.test_r2, roi, subject.roi_names)
    return summary


def _fitted(
    module: Any,
    subject: Subject,
    roi: np.ndarray,
    split: Split,
    n_images: int,
    result: Any,
    tcfg: TrainConfig,
    backbone: dict | None,
    scores: dict,
    summary: dict,
    extra: dict | None,
) -> FittedModel:
    """Bundle the trained ``module`` with its subject, split, history, scores and
    recipe as a :class:`FittedModel`."""
    fitted = FittedModel.from_module(
        module,
        vertex_ids=subject.vertex_ids,
        n_lh=subject.n_lh,
        mesh=subject.mesh,
        roi=roi,
        roi_names=list(subject.roi_names),
        backbone=dict(backbone or {}),
        split={
            "seed": split.seed,
            "fractions": list(split.fractions),
            "n": n_images,
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
        history=result.history,
        scores=scores,
        summary=summary,
        extra={
            "train_config": (result.config or tcfg).to_dict(),
            "recipe": dict(result.recipe) or {"name": tcfg.recipe},
            **(extra or {}),
        },
    )
    return fitted


def _nanmean(x: np.ndarray) -> float:
    """Mean of the finite values (NaN when there are none, without a warning)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


class FactorTopyMapper:
    """FactorTopy in the scikit-learn habit, for a notebook.

    ::

        mapper = FactorTopyMapper(train=TrainConfig(max_seconds=300, recipe="auto"))
        mapper.fit((local, global_), responses, subject)
        r2 = mapper.score((local, global_), responses, indices=mapper.split_.test)
        mapper.save("subj01.ftopy")

    Parameters
    ----------
    bottleneck, hidden : int
        Architecture (:class:`~napari_factortopy.core.config.FactorTopyConfig`).
    train : TrainConfig, optional
        Optimisation recipe (default: the paper's, METHOD.md §3).
    device : str
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``…
    seed : int
        Seeds the initialisation and the default split.
    memory_limit : int, optional
        Bytes the features may occupy on the device (for a feature cache; arrays
        are always loaded).

    Attributes
    ----------
    model_ : FittedModel
        The fitted mapping (selectors, weights, scores, convergence).
    split_ : Split
    history_ : list of dict
        One record per validation.
    convergence_ : dict
        :func:`~napari_factortopy.core.convergence.assess_convergence`'s verdict.
    """

    def __init__(
        self,
        bottleneck: int = 128,
        hidden: int = 128,
        train: TrainConfig | None = None,
        device: str = "auto",
        seed: int = 0,
        memory_limit: int | None = None,
    ) -> None:
        self.bottleneck = bottleneck
        self.hidden = hidden
        self.train = train or TrainConfig()
        self.device = device
        self.seed = seed
        self.memory_limit = memory_limit

    # ---------------------------------------------------------------- inputs
    def _features(self, features: Any, indices: np.ndarray, device: Any) -> Any:
        """A FeatureSource for ``features``: (local, global_) arrays, a cache or a source."""
        from .feature_source import InMemoryFeatures, feature_source

        if hasattr(features, "get"):
            return features
        if hasattr(features, "read") and hasattr(features, "nbytes"):
            return feature_source(features, indices, device, self.memory_limit)
        if isinstance(features, tuple | list) and len(features) == 2:
            local, global_ = features
            return InMemoryFeatures(local, global_, device=device)
        raise TypeError(
            "features must be (local, global_) lists of arrays of shapes (N, C_l, h, w) and "
            f"(N, C_l), a FeatureCache or a FeatureSource; found {type(features).__name__}"
        )

    @staticmethod
    def _shape(features: Any) -> tuple[tuple[int, ...], tuple[int, int]]:
        if isinstance(features, tuple | list) and len(features) == 2:
            local = features[0]
            return tuple(int(np.shape(a)[1]) for a in local), tuple(np.shape(local[0])[2:])
        return tuple(int(w) for w in features.widths), tuple(int(g) for g in features.grid)

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        features: Any,
        responses: np.ndarray,
        subject: Subject,
        split: Split | None = None,
        *,
        backbone: dict | None = None,
        progress: Callable[[dict], None] | None = None,
    ) -> FactorTopyMapper:
        """Train on ``features`` → ``responses``.

        Parameters
        ----------
        features : (local, global_) or FeatureCache or FeatureSource
            ``local``: L arrays of shape (N, C_l, h, w); ``global_``: L arrays (N, C_l).
        responses : array of shape (N, V)
        subject : Subject
            The V vertices (ids, sphere coordinates, ROIs).
        split : Split, optional
            Default: a seeded 8:1:1 split of the N images.
        backbone : dict, optional
            Recorded in the model file.
        progress : callable(dict), optional
            Receives every training record.

        Returns
        -------
        self
        """
        from .runtime import resolve_device
        from .splits import make_split

        dev = resolve_device(self.device)
        y = np.asarray(responses)
        split = split or make_split(len(y), seed=self.seed)
        feats = self._features(features, np.arange(len(y)), dev)
        widths, grid = self._shape(features)
        config = FactorTopyConfig(
            widths=widths, grid=grid, bottleneck=self.bottleneck, hidden=self.hidden
        )
        self.model_ = None
        for rec in fit(
            feats,
            y,
            subject,
            split,
            config=config,
            train_config=self.train,
            backbone=backbone,
            device=dev,
            seed=self.seed,
        ):
            if rec["kind"] == "fitted":
                self.model_ = rec["model"]
            elif progress is not None:
                progress(rec)
        self.split_ = split
        self.history_ = list(self.model_.history)
        self.convergence_ = dict(self.model_.summary.get("convergence", {}))
        return self

    # --------------------------------------------------------------- predict
    def _check_fitted(self) -> FittedModel:
        model = getattr(self, "model_", None)
        if model is None:
            raise RuntimeError("this FactorTopyMapper is not fitted yet: call fit() or load()")
        return model

    def predict(self, features: Any, indices: np.ndarray | None = None) -> np.ndarray:
        """Predicted responses.

        Parameters
        ----------
        features : (local, global_) or FeatureCache or FeatureSource
        indices : array of shape (n,), optional
            Images to predict (default: all N rows of ``features``).

        Returns
        -------
        array of shape (n, V)
        """
        from .runtime import resolve_device
        from .training import predict

        model = self._check_fitted()
        dev = resolve_device(self.device)
        if indices is None:
            if isinstance(features, tuple | list):
                n = len(features[0][0])
            elif hasattr(features, "n_images"):
                n = int(features.n_images)
            else:
                raise ValueError("give the image indices to predict for this feature source")
            indices = np.arange(n)
        indices = np.asarray(indices, np.int64)
        module = model.to_module(dev).eval()
        feats = self._features(features, indices, dev)
        return predict(module, feats, indices, self.train.eval_batch_size, self.train.amp)

    def score(
        self,
        features: Any,
        responses: np.ndarray,
        indices: np.ndarray | None = None,
        per_vertex: bool = False,
    ) -> float | np.ndarray:
        """Coefficient of determination R² of the predictions.

        Parameters
        ----------
        features : as :meth:`predict`
        responses : array of shape (N, V)
            Rows indexed like the features' images.
        indices : array of shape (n,), optional
            Images to score (default all).
        per_vertex : bool
            Return the (V,) per-vertex R² instead of its mean over vertices.

        Returns
        -------
        float, or array of shape (V,)
        """
        from .metrics import r2_score

        y = np.asarray(responses)
        idx = np.arange(len(y)) if indices is None else np.asarray(indices, np.int64)
        r2 = r2_score(y[idx], self.predict(features, idx))
        return r2 if per_vertex else _nanmean(r2)

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | Path) -> Path:
        """Write the fitted mapping as a ``.ftopy`` model file (napari opens it)."""
        return self._check_fitted().save(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> FactorTopyMapper:
        """A fitted mapper from a ``.ftopy`` model file."""
        model = FittedModel.load(path)
        cfg = model.config
        train = TrainConfig.from_dict(model.extra.get("train_config") or {})
        mapper = cls(
            bottleneck=int(cfg.get("bottleneck", 128)),
            hidden=int(cfg.get("hidden", 128)),
            train=train,
            device=device,
        )
        mapper.model_ = model
        mapper.history_ = list(model.history)
        mapper.convergence_ = dict(model.summary.get("convergence", {}))
        return mapper


def _jsonable(d: dict) -> dict:
    """Plain floats/ints/lists for the model file's JSON summary."""
    import json

    return json.loads(json.dumps(d, default=float))
