"""What a model can be shown as: the map names, their numbers and their colours.

Qt-free and mesh-free: every function takes a
:class:`~napari_factortopy.core.fitted_model.FittedModel` and returns per-vertex arrays
over its modelled vertices (METHOD.md §4). :class:`~napari_factortopy.scene.brain.BrainScene`
paints them on a mesh; the figure writer, the ROI tables and the plugin read them too.
"""

from __future__ import annotations

from types import EllipsisType
from typing import NamedTuple

import numpy as np

from napari_factortopy.core import colours
from napari_factortopy.core.analyses import layer_argmax

__all__ = [
    "BAR_MAPS",
    "ENSEMBLE_MAPS",
    "EVALUATION_MAPS",
    "GROUP_MAPS",
    "MAPS",
    "SCORE_LABELS",
    "CustomMap",
    "available_maps",
    "convergence_line",
    "ensemble_layer_rgba",
    "ensemble_map",
    "extra_map",
    "map_rgba",
    "map_values",
    "method_name",
    "missing_rows",
    "real_maps",
    "score_label",
    "selector_line",
    "warning_parts",
]

#: Maps a model can be shown as (METHOD.md §4).
MAPS = ("layer", "layer weights", "space", "scale", "score", "clusters", "roi")
#: Maps of a seed ensemble (``model.ensemble``), offered only for such models (a group
#: file is stored as one and has them too).
ENSEMBLE_MAPS = ("agreement", "space spread", "scale SD")
#: Maps of a group file (``factortopy group``): the number of models fitting a vertex.
GROUP_MAPS = ("n",)
#: Maps of a model evaluated on its test split (``factortopy evaluate``): the layer
#: carrying most of each vertex's R² (brightness: its share) and the standard error of
#: each RF's location.
EVALUATION_MAPS = ("R² layer", "RF uncertainty")
#: ``model.evaluation`` key behind each of :data:`EVALUATION_MAPS`.
_EVALUATION_KEYS = {"R² layer": "r2_split", "RF uncertainty": "space_se"}
#: Maps drawn with a colour bar from :func:`extra_map`.
BAR_MAPS = ("agreement", "space spread", "scale SD", "n", "RF uncertainty")
#: Ensemble map → (``model.ensemble`` key, colormap, fixed top or None, legend label).
_ENSEMBLE_SPEC = {
    "agreement": ("layer_agreement", "viridis", 1.0, "seeds on the modal layer (share)"),
    "space spread": ("space_spread", "magma", None, "space spread of seeds (image = 2)"),
    "scale SD": ("scale_sd", "magma", None, "scale α SD over seeds"),
    "n": ("n", "viridis", None, "models at the vertex"),
}  # fmt: skip
#: Legend labels of a group file's maps (its members are subjects or seeds).
_GROUP_LABELS = {
    "agreement": "share on the group layer",
    "space spread": "space spread of models (image = 2)",
    "scale SD": "scale α SD over models",
}
#: Maps whose numbers come from the selectors (a baseline lists the real ones).
_SELECTOR_MAPS = {"layer": "layer", "layer weights": "layer", "space": "space", "scale": "scale"}
#: How score keys read in legends and panels.
SCORE_LABELS = {"r2": "R²", "r": "r", "nc": "noise-normalised score %",
                "noise_ceiling": "noise ceiling %"}  # fmt: skip


def convergence_line(model) -> str | None:
    """The one-line reason when the model file says training did not converge, else None.

    Reads ``model.summary["convergence"]`` (``state``, ``reason``, ``line``): maps of
    such a model are unfinished and say so (panel banner, layer name, figure stamp).
    """
    conv = (getattr(model, "summary", None) or {}).get("convergence") or {}
    if conv.get("state") != "not_converged":
        return None
    return str(conv.get("line") or conv.get("reason") or "training did not converge")


def selector_line(model) -> str | None:
    """Why a model's selectors are degenerate (collapsed space, undecided or single
    layer: :func:`~napari_factortopy.core.selector_check.assess_selectors`), else None.

    Measured from the stored selector outputs, so any trained or group file is checked
    when it is shown; a phantom's truth and a baseline are not checked.
    """
    from napari_factortopy.core.selector_check import model_selector_check

    check = model_selector_check(model)
    return None if check is None else check["line"]


def warning_parts(model, degenerate: str | EllipsisType | None = ...) -> list[str]:
    """What a map of ``model`` must carry in capitals (figure stamps, the ROI table):
    ``"UNFINISHED MODEL: <why>"`` and ``"DEGENERATE SELECTORS: <why>"``, as apply.

    ``degenerate`` is the :func:`selector_line` already computed (a scene caches it;
    None: the selectors are fine); by default (``...``) it is computed here.
    """
    parts = []
    line = convergence_line(model)
    if line:
        parts.append(f"UNFINISHED MODEL: {line}")
    bad = selector_line(model) if degenerate is ... else degenerate
    if bad:
        parts.append(f"DEGENERATE SELECTORS: {bad}")
    return parts


def score_label(key: str | None) -> str:
    """A score key as people read it: ``"r2_test"`` → ``"R² (test)"``, ``"r_val"`` → ``"r (val)"``.

    Unknown keys come back unchanged; None reads ``"score"``.
    """
    if not key:
        return "score"
    if str(key) in SCORE_LABELS:  # a whole key (noise_ceiling)
        return SCORE_LABELS[str(key)]
    head, _, split = str(key).partition("_")
    name = SCORE_LABELS.get(head.lower())
    if name is None:
        return str(key)
    return f"{name} ({split})" if split else name


def method_name(model) -> str | None:
    """What made a model's maps, when it is not plain FactorTopy, else None.

    A baseline file: ``extra["baseline"]["method"]``; a FactorTopy model whose config
    is an ablation: :func:`~napari_factortopy.core.ablations.ablation_name`.
    """
    if getattr(model, "kind", "factortopy") == "baseline":
        return str(((model.extra or {}).get("baseline") or {}).get("method") or "baseline")
    if getattr(model, "kind", "factortopy") != "factortopy":
        return None
    from napari_factortopy.core.ablations import ablation_name

    try:
        name = ablation_name(model.config or {})
    except (KeyError, TypeError, AttributeError):
        return None
    return None if name == "factortopy" else name


def real_maps(model) -> set[str] | None:
    """The selector maps a baseline file really has (None: every map is real).

    ``extra["baseline"]["maps"]`` names them among ``layer``, ``space``, ``scale``;
    ``layer weights`` goes with ``layer``. The other selectors of a baseline are fillers.
    """
    if getattr(model, "kind", "factortopy") != "baseline":
        return None
    listed = set(((model.extra or {}).get("baseline") or {}).get("maps") or ())
    return {m for m, sel in _SELECTOR_MAPS.items() if sel in listed}


def available_maps(model) -> list[str]:
    """The maps worth offering for ``model``, in :data:`MAPS` order.

    A baseline shows only its real selector maps, its scores and the ROIs (no readout
    clusters: a baseline's readout is not FactorTopy's); a seed ensemble adds
    :data:`ENSEMBLE_MAPS`. A map the model has no numbers for is not offered: ``score``
    without scores (a phantom's ``truth.ftopy``), ``clusters`` without a readout,
    ``roi`` without ROIs.
    """
    real = real_maps(model)
    if real is not None:
        maps = [m for m in MAPS if m in real or m in ("roi", "score")]
    else:
        maps = list(MAPS)
    has = {
        "score": bool(model.scores),
        "clusters": real is None and "beta" in (getattr(model, "state", None) or {}),
        "roi": bool(len(model.roi_names)) and bool(np.any(np.asarray(model.roi) > 0)),
    }
    maps = [m for m in maps if has.get(m, True)]
    if "beta" not in (getattr(model, "state", None) or {}):  # a group file: no readout
        maps = [m for m in maps if m != "clusters"]
    if _has_ensemble(model):
        maps += list(ENSEMBLE_MAPS)
        maps += [m for m in GROUP_MAPS if _ENSEMBLE_SPEC[m][0] in model.ensemble]
    ev = getattr(model, "evaluation", None) or {}
    maps += [m for m in EVALUATION_MAPS if _EVALUATION_KEYS[m] in ev]
    return maps


def _has_ensemble(model) -> bool:
    ens = getattr(model, "ensemble", None) or {}
    return all(_ENSEMBLE_SPEC[name][0] in ens for name in ENSEMBLE_MAPS)


def ensemble_map(model, name: str) -> CustomMap:
    """A seed-consistency map of an ensemble model as colours, numbers and legend.

    ``agreement`` over [0, 1] (viridis), ``space spread`` and ``scale SD`` over
    [0, max] (magma).

    Raises
    ------
    ValueError
        ``name`` is not in :data:`ENSEMBLE_MAPS`, or the model is not an ensemble.
    """
    if name not in _ENSEMBLE_SPEC:
        raise ValueError(f"unknown ensemble map {name!r}; choose from {ENSEMBLE_MAPS}")
    key, cmap, top, label = _ENSEMBLE_SPEC[name]
    if not _has_ensemble(model) or key not in model.ensemble:
        raise ValueError(
            f"the {name!r} map needs a seed ensemble (factortopy train --seeds K)"
            if name != "n"
            else "the 'n' map needs a group file (factortopy group)"
        )
    if getattr(model, "kind", None) == "group":
        label = _GROUP_LABELS.get(name, label)
    v = np.asarray(model.ensemble[key], np.float64)
    finite = v[np.isfinite(v)]
    hi = top if top is not None else (float(finite.max()) if finite.size else 0.0)
    hi = hi if hi > 0 else 1.0
    return CustomMap(colours.weight_rgba(v, 0.0, hi, cmap=cmap), v, cmap, 0.0, hi, label)


def extra_map(model, name: str) -> CustomMap:
    """A map of :data:`BAR_MAPS` as colours, numbers and a colour-bar legend.

    The ensemble and group maps (:func:`ensemble_map`), and ``RF uncertainty``: the
    standard error of each RF's location (``evaluation["space_se"]``) over
    ``[0, 0.5]`` grid units (magma); an unlocated RF (``se ≥ 0.5`` or inf) takes the
    top colour and the value 0.5.
    """
    if name != "RF uncertainty":
        return ensemble_map(model, name)
    from napari_factortopy.core.rf_uncertainty import UNLOCATED_SE

    se = (getattr(model, "evaluation", None) or {}).get("space_se")
    if se is None:
        raise ValueError("the 'RF uncertainty' map needs `factortopy evaluate` on the model")
    v = np.minimum(np.asarray(se, np.float64), UNLOCATED_SE)  # inf (unlocated) → the cap
    label = f"RF standard error (≥ {UNLOCATED_SE:g}: unlocated)"
    rgba = colours.weight_rgba(v, 0.0, UNLOCATED_SE, cmap="magma")
    return CustomMap(rgba, v, "magma", 0.0, UNLOCATED_SE, label)


def ensemble_layer_rgba(model) -> np.ndarray:
    """The layer map of a seed ensemble: brightness from confidence × seed agreement."""
    return colours.ensemble_layer_rgba(model.layer, model.ensemble["layer_agreement"])


class CustomMap(NamedTuple):
    """A map computed outside :func:`map_rgba` (a prediction, a difference of two models).

    Attributes
    ----------
    rgba : array of shape (V, 4)
        Colours of the modelled vertices.
    values : array of shape (V,)
        The numbers behind them (NaN = no value).
    cmap : str
        Matplotlib colormap of the colour bar.
    lo, hi : float
        Range of the colour bar.
    label : str
        What the values are (colour bar title); default the map's name.
    """

    rgba: np.ndarray
    values: np.ndarray
    cmap: str = "coolwarm"
    lo: float | None = None
    hi: float | None = None
    label: str = ""

    @classmethod
    def from_values(
        cls, values: np.ndarray, cmap: str = "coolwarm", symmetric: bool = True, label: str = ""
    ) -> CustomMap:
        """Colour ``values (V,)`` over ``±max|v|`` (``symmetric``) or ``[0, max v]``."""
        from napari_factortopy.core import colours

        v = np.asarray(values, np.float64)
        finite = v[np.isfinite(v)]
        top = float(np.max(np.abs(finite))) if finite.size else 0.0
        top = top or 1.0
        lo, hi = (-top, top) if symmetric else (0.0, top)
        return cls(colours.weight_rgba(v, lo, hi, cmap=cmap), v, cmap, lo, hi, label)


def map_values(
    model,
    name: str,
    *,
    layer_index: int = 0,
    score_key: str | None = None,
    clusters: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """The per-vertex numbers behind a map (what the writer saves).

    Parameters
    ----------
    model : FittedModel
    name : str
        One of :data:`MAPS`.
    layer_index : int
        Layer shown by ``"layer weights"`` (0-based).
    score_key : str, optional
        Key of ``model.scores``; default the first of ``r2_test``, ``r_test``, any.
    clusters : int array of shape (V,), optional
        Cluster labels for ``"clusters"`` (0-based).

    Returns
    -------
    values : array of shape (V,) or (V, 2)
        Float values (NaN = no value); for label maps (``layer``, ``clusters``,
        ``roi``) integer labels with 0 = none (layer and cluster labels are 1-based).
    label_names : list of str or None
        ``label_names[k - 1]`` names label k for label maps; None for scalar maps.
    """
    v = model.n_vertices
    if name == "layer":
        names = list(model.backbone.get("layer_names") or [])
        if len(names) != model.n_layers:
            names = [f"layer {i + 1}" for i in range(model.n_layers)]
        return layer_argmax(model.layer) + 1, names
    if name == "layer weights":
        return np.asarray(model.layer[:, int(layer_index)], np.float64), None
    if name == "space":
        return np.asarray(model.space, np.float64), None
    if name == "scale":
        return np.asarray(model.scale, np.float64), None
    if name == "score":
        key = score_key or _default_score_key(model)
        if key is None:
            return np.full(v, np.nan), None
        return np.asarray(model.scores[key], np.float64), None
    if name == "clusters":
        if clusters is None:
            return np.zeros(v, np.int64), []
        k = int(clusters.max()) + 1 if clusters.size else 0
        return np.asarray(clusters, np.int64) + 1, [f"cluster {i + 1}" for i in range(k)]
    if name == "roi":
        return np.asarray(model.roi, np.int64), list(model.roi_names)
    if name in BAR_MAPS:
        return extra_map(model, name).values, None
    if name == "R² layer":
        from napari_factortopy.core.variance_split import dominant_layer

        names = list(model.backbone.get("layer_names") or [])
        if len(names) != model.n_layers:
            names = [f"layer {i + 1}" for i in range(model.n_layers)]
        return dominant_layer(model.evaluation["r2_split"])[0] + 1, names
    raise ValueError(f"unknown map {name!r}; choose from {MAPS + ENSEMBLE_MAPS}")


def _default_score_key(model) -> str | None:
    for key in ("r2_test", "r_test"):
        if key in model.scores:
            return key
    return next(iter(model.scores), None)


def missing_rows(
    model, name: str, *, layer_index: int = 0, score_key: str | None = None
) -> np.ndarray:
    """Rows whose selector (or score) behind a map is not finite: drawn as no value.

    Parameters
    ----------
    model : FittedModel
    name : str
        One of :data:`MAPS`.

    Returns
    -------
    missing : bool array of shape (V,)
    """
    v = model.n_vertices
    if name == "layer":
        return ~np.isfinite(np.asarray(model.layer, np.float64)).all(axis=1)
    if name == "layer weights":
        return ~np.isfinite(np.asarray(model.layer, np.float64)[:, int(layer_index)])
    if name == "space":
        return ~np.isfinite(np.asarray(model.space, np.float64)).all(axis=1)
    if name == "scale":
        return ~np.isfinite(np.asarray(model.scale, np.float64))
    if name == "score":
        values, _ = map_values(model, "score", score_key=score_key)
        return ~np.isfinite(values)
    if name in BAR_MAPS and name in available_maps(model):
        return ~np.isfinite(extra_map(model, name).values)
    if name == "R² layer":
        from napari_factortopy.core.variance_split import dominant_layer

        return ~np.isfinite(dominant_layer(model.evaluation["r2_split"])[1])
    return np.zeros(v, bool)


def map_rgba(
    model,
    name: str,
    *,
    layer_index: int = 0,
    score_key: str | None = None,
    clusters: np.ndarray | None = None,
    n_clusters: int = 20,
) -> np.ndarray:
    """Colours of the modelled vertices for a map (METHOD.md §4).

    Parameters
    ----------
    model : FittedModel
    name : str
        One of :data:`MAPS`; see :func:`map_values` for the other parameters.
    n_clusters : int
        Palette size for ``"clusters"``.

    Returns
    -------
    rgba : array of shape (V, 4), float64 in [0, 1], opaque
    """
    if name == "layer":
        if _has_ensemble(model):  # where the seeds disagree the map darkens
            return ensemble_layer_rgba(model)
        return colours.layer_rgba(model.layer)
    if name == "layer weights":
        return colours.weight_rgba(model.layer[:, int(layer_index)], 0.0, 1.0)
    if name == "space":  # an evaluated model: the less certain the RF, the darker
        se = (getattr(model, "evaluation", None) or {}).get("space_se")
        return colours.space_rgba(model.space, se)
    if name == "scale":
        return colours.scale_rgba(model.scale)
    if name == "score":
        values, _ = map_values(model, "score", score_key=score_key)
        return colours.score_rgba(values)
    if name == "clusters":
        labels = np.full(model.n_vertices, -1) if clusters is None else clusters
        return colours.cluster_rgba(labels, max(n_clusters, int(np.max(labels, initial=0)) + 1))
    if name == "roi":
        labels = np.asarray(model.roi) - 1
        return colours.cluster_rgba(labels, max(20, len(model.roi_names)))
    if name in BAR_MAPS:
        return extra_map(model, name).rgba
    if name == "R² layer":
        return colours.r2_layer_rgba(model.evaluation["r2_split"])
    raise ValueError(f"unknown map {name!r}; choose from {MAPS + ENSEMBLE_MAPS}")
