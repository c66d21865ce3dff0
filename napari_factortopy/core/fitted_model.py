"""A trained FactorTopy mapping with everything needed to show and reuse it.

:class:`FittedModel` bundles the weights, the selector outputs (so maps can be
drawn without torch), the subject (mesh, vertex ids, hemisphere split, ROIs), the
backbone (name, layers, widths, preprocessing), the split, the training history and
the test scores; it is stored as one ``.ftopy`` file (:mod:`.modelfile`).

Loading validates the whole file against one schema
(:func:`~napari_factortopy.core.model_schema.validate_model_file`, in
:mod:`.model_schema` with the file kinds and the fsaverage sizes, all importable from
here too).

Non-finite values are refused in the shared weights (alignment, selector MLPs,
coordinates). Per-vertex values may be non-finite (a vertex that could not be fitted):
such vertices are kept and listed in :attr:`FittedModel.missing`, a (V,) bool mask the
display greys.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .model_schema import (  # noqa: F401 (the kinds and the schema are re-exported)
    EVALUATION_MAPS,
    FSAVERAGE_SIZES,
    KIND_BASELINE,
    KIND_GROUP,
    KIND_MODEL,
    KIND_TRUTH,
    KINDS,
    validate_model_file,
)
from .modelfile import ModelFileError, load_ftopy, save_ftopy

__all__ = ["FSAVERAGE_SIZES", "FittedModel", "validate_model_file"]


@dataclass
class FittedModel:
    """A trained mapping.

    Attributes
    ----------
    config : dict
        :class:`~napari_factortopy.core.model.FactorTopyConfig` as a dict.
    state : dict of arrays
        Model weights (torch state-dict names; the positional encoding is left out
        and recomputed from ``state["coords"]``).
    space : array of shape (V, 2)
    layer : array of shape (V, L)
    scale : array of shape (V,)
    vertex_ids : array of shape (V,)
        Index of each vertex in its hemisphere's mesh; left hemisphere first.
    n_lh : int
        Number of left-hemisphere vertices.
    mesh : str
        Surface the vertex ids refer to (``"fsaverage5"``, ``"fsaverage"``, …).
    roi : array of shape (V,)
        ROI label per vertex (0 = none); ``roi_names[k - 1]`` names label k.
    roi_names : list of str
    backbone : dict
        ``name``, ``layer_names``, ``widths``, ``preprocessing``.
    split : dict
        ``seed``, ``fractions`` and the ``train``/``val``/``test`` image indices.
    history : list of dict
    scores : dict of arrays of shape (V,)
        e.g. ``r2_test``, ``r_test``.
    summary : dict
        Scalars (means, timings, recovery numbers).
    kind : str
        ``"factortopy"`` (trained; also its ablations, named by the config),
        ``"phantom-truth"`` (fixed selectors) or ``"baseline"`` (a comparison method's
        maps, display-only).
    extra : dict
        Free-form JSON-able metadata (e.g. training recipe, dataset path).
    ensemble : dict of arrays
        For a seed ensemble (:func:`~napari_factortopy.core.ensemble.combine_seeds`):
        every seed's ``layer`` (K, V, L), ``space`` (K, V, 2), ``scale`` (K, V), and
        the per-vertex consistency maps ``layer_agreement``, ``space_spread``,
        ``scale_sd`` (V,). A group file (:func:`~napari_factortopy.core.group.combine_models`)
        stores its K models the same way (NaN where a model lacks a vertex) and adds
        ``n`` (V,). Empty for a single model.
    evaluation : dict of arrays
        Test-set evaluations (``factortopy evaluate``): ``p_value``, ``q_value`` (V,)
        of the permutation null of the score map, ``r2_split`` (V, L), the share of
        each vertex's R² each layer carries, ``space_se`` (V,), the standard error of
        the RF location; ``summary["evaluation"]`` says how they were made. Empty when
        not evaluated.
    """

    config: dict
    state: dict[str, np.ndarray]
    space: np.ndarray
    layer: np.ndarray
    scale: np.ndarray
    vertex_ids: np.ndarray
    n_lh: int
    mesh: str = "fsaverage5"
    roi: np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    kind: str = KIND_MODEL
    extra: dict = field(default_factory=dict)
    ensemble: dict[str, np.ndarray] = field(default_factory=dict)
    evaluation: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = len(self.vertex_ids)
        self.vertex_ids = np.asarray(self.vertex_ids, np.int64)
        self.roi = np.zeros(v, np.int64) if self.roi is None else np.asarray(self.roi, np.int64)
        for name, arr, shape in (
            ("space", self.space, (v, 2)),
            ("layer", self.layer, (v, len(self.config["widths"]))),
            ("scale", self.scale, (v,)),
            ("roi", self.roi, (v,)),
        ):
            if np.shape(arr) != shape:
                raise ValueError(f"{name} must have shape {shape}; found {np.shape(arr)}")
        if not 0 <= self.n_lh <= v:
            raise ValueError(f"n_lh must lie in [0, {v}]; found {self.n_lh}")
        per_vertex = [
            np.asarray(self.space).reshape(v, -1),
            np.asarray(self.layer).reshape(v, -1),
            np.asarray(self.scale).reshape(v, -1),
        ]
        for key in ("beta", "bias"):
            arr = self.state.get(key)
            if arr is not None and np.shape(arr)[:1] == (v,):
                per_vertex.append(np.asarray(arr).reshape(v, -1))
        missing = np.zeros(v, bool)
        for arr in per_vertex:
            missing |= ~np.isfinite(arr).all(axis=1)
        self._missing = missing

    # ------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return len(self.vertex_ids)

    @property
    def n_layers(self) -> int:
        return self.layer.shape[1]

    @property
    def missing(self) -> np.ndarray:
        """(V,) bool: vertices with a non-finite selector (space, layer, scale) or readout
        (``beta`` row, ``bias``). They are kept, but maps and predictions there are
        meaningless: the display greys them."""
        return self._missing.copy()

    @property
    def beta(self) -> np.ndarray:
        """Readout weights, shape (V, D).

        Raises
        ------
        ValueError
            For a file without a readout (a group map).
        """
        if "beta" not in self.state:
            raise ValueError(f"this {self.kind!r} file holds no readout weights (display only)")
        return self.state["beta"]

    def hemi_slices(self) -> dict[str, slice]:
        """Rows of each hemisphere: ``{"lh": slice, "rh": slice}``."""
        return {"lh": slice(0, self.n_lh), "rh": slice(self.n_lh, self.n_vertices)}

    # ----------------------------------------------------------------- torch
    @classmethod
    def from_module(cls, module: Any, **kwargs: Any) -> FittedModel:
        """Bundle a trained :class:`~napari_factortopy.core.model.FactorTopy`."""
        import torch

        with torch.no_grad():
            sel = module.selectors().numpy()
        state = {
            k: v.detach().float().cpu().numpy()
            for k, v in module.state_dict().items()
            if k != "encoding"
        }
        return cls(
            config=module.config.to_dict(),
            state=state,
            space=sel["space"],
            layer=sel["layer"],
            scale=sel["scale"],
            **kwargs,
        )

    def to_module(self, device: Any = "cpu"):
        """Rebuild the torch module (weights loaded, on ``device``)."""
        import torch

        from .config import FactorTopyConfig
        from .model import FactorTopy

        module = FactorTopy(self.state["coords"], FactorTopyConfig.from_dict(self.config))
        absent = sorted(set(module.state_dict()) - set(self.state) - {"encoding"})
        if absent:
            raise ValueError(
                f"this model holds no weights {absent[:4]}{'…' if len(absent) > 4 else ''}; "
                "it can be shown but not run (a preview or display-only model)"
            )
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()}
        sd["encoding"] = module.encoding
        module.load_state_dict(sd)
        return module.to(device)

    def fixed_selectors(self, device: Any = "cpu"):
        """The stored selector outputs as a :class:`~napari_factortopy.core.model.Selectors`
        (used for the phantom's truth, whose selectors are not MLPs)."""
        import torch

        from .model import Selectors

        return Selectors(
            space=torch.as_tensor(self.space, device=device),
            layer=torch.as_tensor(self.layer, device=device),
            scale=torch.as_tensor(self.scale, device=device),
        )

    def check_cache(self, cache: Any, source: str = "the model") -> None:
        """Stop if a feature cache does not hold this model's layers, widths and grid.

        Raises
        ------
        ValueError (the cache's ``CacheError``)
            Naming the cache, the field, the expected and the found value.
        """
        names = self.backbone.get("layer_names")
        widths = list(self.config["widths"])
        if names:
            found = {n: w for n, w in zip(cache.layer_names, cache.widths, strict=True)}
            missing = [n for n in names if n not in found]
            if missing:
                raise ValueError(
                    f"{cache.path}: {source} reads layers {missing[:3]} that the cache does not "
                    f"hold (cache layers: {list(cache.layer_names)[:6]}…)"
                )
            got = [found[n] for n in names]
            if got != widths:
                raise ValueError(
                    f"{cache.path}: {source} expects widths {widths} for layers "
                    f"{names}; the cache has {got}"
                )
        else:
            cache.check_compatible(widths=widths, source=source)
        cache.check_compatible(grid=self.config["grid"], source=source)

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | Path) -> Path:
        """Write a ``.ftopy`` file atomically; returns its path."""
        tensors: dict[str, np.ndarray] = {f"state/{k}": v for k, v in self.state.items()}
        tensors.update(
            {
                "selectors/space": self.space,
                "selectors/layer": self.layer,
                "selectors/scale": self.scale,
                "subject/vertex_ids": self.vertex_ids,
                "subject/roi": self.roi,
            }
        )
        for k in ("train", "val", "test"):
            if k in self.split:
                tensors[f"split/{k}"] = np.asarray(self.split[k], np.int64)
        tensors.update({f"scores/{k}": np.asarray(v) for k, v in self.scores.items()})
        tensors.update({f"ensemble/{k}": np.asarray(v) for k, v in self.ensemble.items()})
        tensors.update({f"evaluation/{k}": np.asarray(v) for k, v in self.evaluation.items()})
        meta = {
            "kind": self.kind,
            "config": self.config,
            "subject": {
                "mesh": self.mesh,
                "n_lh": int(self.n_lh),
                "roi_names": list(self.roi_names),
            },
            "backbone": self.backbone,
            "split": {k: v for k, v in self.split.items() if k not in ("train", "val", "test")},
            "history": self.history,
            "summary": self.summary,
            "extra": self.extra,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        from .version import __version__

        meta["software"] = f"napari-factortopy {__version__}"
        return save_ftopy(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> FittedModel:
        """Read a ``.ftopy`` file (no unpickling).

        Raises
        ------
        ModelFileError
            For missing, foreign, truncated or newer-version files, or a file whose
            contents do not form a model (naming what is missing).
        """
        tensors, meta = load_ftopy(path)
        validate_model_file(path, tensors, meta)
        split = dict(meta["split"])
        for k in ("train", "val", "test"):
            if f"split/{k}" in tensors:
                split[k] = tensors[f"split/{k}"]
        subject = meta["subject"]
        try:
            return cls(
                config=meta["config"],
                state={k[6:]: v for k, v in tensors.items() if k.startswith("state/")},
                space=tensors["selectors/space"],
                layer=tensors["selectors/layer"],
                scale=tensors["selectors/scale"],
                vertex_ids=tensors["subject/vertex_ids"],
                n_lh=subject["n_lh"],
                mesh=subject["mesh"],
                roi=tensors["subject/roi"],
                roi_names=list(subject["roi_names"]),
                backbone=meta["backbone"],
                split=split,
                history=list(meta["history"]),
                scores={k[7:]: v for k, v in tensors.items() if k.startswith("scores/")},
                summary=dict(meta["summary"]),
                kind=meta["kind"],
                extra=dict(meta["extra"]),
                ensemble={k[9:]: v for k, v in tensors.items() if k.startswith("ensemble/")},
                evaluation={k[11:]: v for k, v in tensors.items() if k.startswith("evaluation/")},
            )
        except (ValueError, KeyError) as exc:  # pragma: no cover - the schema catches these
            raise ModelFileError(f"{path}: inconsistent model file: {exc}") from exc
