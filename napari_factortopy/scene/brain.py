"""Display logic of the brain view, in numpy only (no Qt, no napari).

A :class:`BrainScene` turns a :class:`~napari_factortopy.core.fitted_model.FittedModel` into
what one napari ``Surface`` layer shows: both hemispheres side by side
(``vertices``, ``faces``) and one opaque RGBA colour per mesh vertex for the chosen
map, with unmodelled vertices in curvature grey. It also answers clicks
(:meth:`BrainScene.pick`) with a KD-tree over the displayed vertices.

Display coordinates
-------------------
Each hemisphere is rotated into the screen frame of a view
(:func:`~napari_factortopy.scene.render.view_basis`), centred, and placed left or right
of the other with a gap. The columns of the napari data are then
``(toward the camera, screen down, screen right)``, so napari's default 3-D camera
(looking along the first data axis) shows every view preset without moving.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from napari_factortopy.core import colours
from napari_factortopy.core.analyses import layer_argmax
from napari_factortopy.scene.render import view_basis

__all__ = [
    "BAR_MAPS",
    "ENSEMBLE_MAPS",
    "EVALUATION_MAPS",
    "GROUP_MAPS",
    "MAPS",
    "MESH_KINDS",
    "VIEWS",
    "BrainScene",
    "CustomMap",
    "MeshSet",
    "Pick",
    "available_maps",
    "convergence_line",
    "ensemble_layer_rgba",
    "ensemble_map",
    "extra_map",
    "hemisphere_caption",
    "hemisphere_order",
    "layout",
    "load_scene",
    "map_rgba",
    "map_values",
    "method_name",
    "missing_rows",
    "real_maps",
    "roi_boundary",
    "score_label",
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
#: Mesh kinds offered by the mesh switch.
MESH_KINDS = ("inflated", "sphere", "pial", "flat")
#: Camera presets.
VIEWS = ("lateral", "medial", "ventral", "posterior", "flat")
HEMIS = ("lh", "rh")
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


# --------------------------------------------------------------------------- maps
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


# ------------------------------------------------------------------------- meshes
@dataclass(frozen=True)
class MeshSet:
    """Both hemispheres of one mesh kind, with curvature.

    Attributes
    ----------
    name : str
        Mesh name (``"fsaverage5"`` …).
    kind : str
        One of :data:`MESH_KINDS`.
    vertices : dict hemi → array of shape (n_h, 3)
    faces : dict hemi → int array of shape (m_h, 3)
    curv : dict hemi → array of shape (n_h,)
    """

    name: str
    kind: str
    vertices: dict
    faces: dict
    curv: dict

    def n(self, hemi: str) -> int:
        return len(self.vertices[hemi])


@lru_cache(maxsize=16)
def _load_meshset(name: str, kind: str) -> MeshSet:
    from napari_factortopy.data import surfaces

    verts, faces, curv = {}, {}, {}
    for hemi in HEMIS:
        mesh = surfaces.load_mesh(name, kind, hemi)
        verts[hemi], faces[hemi] = mesh.vertices, mesh.faces
        try:
            curv[hemi] = surfaces.load_morph(name, "curv", hemi)
        except (surfaces.SurfaceError, ValueError, OSError):
            curv[hemi] = np.zeros(len(mesh.vertices), np.float32)
    return MeshSet(name, kind, verts, faces, curv)


def load_meshset(name: str, kind: str) -> MeshSet:
    """Both hemispheres of an fsaverage mesh (cached in the process).

    Raises
    ------
    napari_factortopy.data.surfaces.SurfaceError
        When the mesh is not on this machine.
    """
    return _load_meshset(name, kind)


def layout(meshes: MeshSet, view: str, gap: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Both hemispheres side by side in display coordinates (see the module notes).

    Parameters
    ----------
    meshes : MeshSet
    view : str
        One of :data:`VIEWS` (``"flat"``, or a flat mesh, uses the mesh's x and y).
    gap : float
        Space between the hemispheres (mesh units).

    Returns
    -------
    vertices : array of shape (n_lh + n_rh, 3), float32
        Columns ``(toward camera, screen down, screen right)``; left hemisphere first.
    faces : int array of shape (m_lh + m_rh, 3)
    """
    if view == "flat" and meshes.kind != "flat":
        raise ValueError(
            f"the flat view needs the flat mesh; this is the {meshes.kind} mesh "
            "(a 3-D mesh seen flat would be squashed into a plane)"
        )
    placed = {}
    for hemi in HEMIS:
        p = np.asarray(meshes.vertices[hemi], np.float64)
        if meshes.kind == "flat":
            right, up, toward = p[:, 0], p[:, 1], np.zeros(len(p))
        else:
            r, u, f = view_basis(view, hemi)
            right, up, toward = p @ r, p @ u, -(p @ f)
        scr = np.stack([toward, -up, right], axis=1)
        lo, hi = scr.min(0), scr.max(0)
        placed[hemi] = scr - (lo + hi) / 2.0
    left, right_h = hemisphere_order(view, meshes.kind)
    wl = np.ptp(placed[left][:, 2]) if len(placed[left]) else 0.0
    wr = np.ptp(placed[right_h][:, 2]) if len(placed[right_h]) else 0.0
    placed[left][:, 2] -= wl / 2 + gap / 2
    placed[right_h][:, 2] += wr / 2 + gap / 2
    verts = np.concatenate([placed["lh"], placed["rh"]]).astype(np.float32)
    faces = np.concatenate(
        [meshes.faces["lh"], np.asarray(meshes.faces["rh"]) + meshes.n("lh")]
    ).astype(np.int64)
    return verts, faces


def hemisphere_caption(view: str, kind: str = "inflated") -> str:
    """ "L | R" or "R | L": the hemispheres on the screen's left and right in a view."""
    left, right = hemisphere_order(view, kind)
    name = {"lh": "L", "rh": "R"}
    return f"{name[left]} | {name[right]}"


def hemisphere_order(view: str, kind: str = "inflated") -> tuple[str, str]:
    """Which hemisphere is drawn on the screen's left and which on its right.

    Views that see both hemispheres from one camera (posterior, anterior, ventral,
    dorsal) place them where that camera sees them: from behind (or above) the left
    hemisphere is on the left; from the front (or below, anterior up) it is on the
    right. Per-hemisphere views (lateral, medial) and the flat patches put the left
    hemisphere on the left.

    Returns
    -------
    (screen left, screen right) : tuple of "lh" / "rh"
    """
    if kind == "flat" or view in ("lateral", "medial", "flat"):
        return HEMIS
    right = view_basis(view, "lh")[0]  # screen right in RAS
    # screen right pointing to −x (the subject's left) puts the left hemisphere right
    return ("rh", "lh") if right[0] < 0 else HEMIS


def roi_boundary(faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Vertices on a border between ROI labels.

    Parameters
    ----------
    faces : int array of shape (m, 3)
    labels : int array of shape (n,)
        Label per mesh vertex (0 = none).

    Returns
    -------
    border : bool array of shape (n,)
        True for a vertex that shares an edge with a vertex of a smaller, non-zero label
        (one vertex wide, on one side of each border between two ROIs; the edge of
        the modelled area shows anyway, against curvature grey).
    """
    lab = np.asarray(labels)
    f = np.asarray(faces)
    border = np.zeros(len(lab), bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        for i, j in ((f[:, a], f[:, b]), (f[:, b], f[:, a])):
            border[i[(lab[i] > lab[j]) & (lab[j] > 0)]] = True
    return border


# ---------------------------------------------------------------------- the scene
@dataclass(frozen=True)
class Pick:
    """What a click hit.

    Attributes
    ----------
    mesh_index : int
        Index into the displayed (both-hemisphere) vertices.
    hemi : str
    hemi_vertex : int
        Index in the hemisphere's mesh.
    row : int or None
        Row in the model's arrays (None for an unmodelled vertex).
    """

    mesh_index: int
    hemi: str
    hemi_vertex: int
    row: int | None


@dataclass
class BrainScene:
    """A model on a mesh: geometry, colours and picking for one napari layer.

    Parameters
    ----------
    model : FittedModel
    mesh_name : str, optional
        Mesh to draw on; default ``model.mesh``.
    loader : callable (name, kind) -> MeshSet, optional
        Where meshes come from (default :func:`load_meshset`; tests and benchmarks
        pass synthetic meshes).

    Attributes
    ----------
    custom : dict name → CustomMap
        Maps computed elsewhere, shown like the built-in ones.
    significant_only : bool, default True
        Grey the vertices whose score is not significant (FDR q > α) in every fitted
        map, when the model holds q-values (``factortopy evaluate``).
    model_path : str or None
        The model file the scene shows (data folders are looked for beside it).
    data_root : str or None
        A data folder the user pointed at, used before the model's own record.
    told : set of str
        Things the user has already been told about this model (said once).
    """

    model: object
    mesh_name: str | None = None
    loader: Callable[[str, str], MeshSet] = load_meshset
    kind: str = "inflated"
    view: str = "lateral"
    map_name: str = "layer"
    layer_index: int = 0
    score_key: str | None = None
    outlines: bool = False
    clusters: np.ndarray | None = None
    stimulus: np.ndarray | None = None
    custom: dict = field(default_factory=dict)
    significant_only: bool = True
    model_path: str | None = None
    data_root: str | None = None
    told: set = field(default_factory=set, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        m = self.model
        self.mesh_name = self.mesh_name or m.mesh
        self.rows = np.arange(m.n_vertices)
        self.vertex_ids = np.asarray(m.vertex_ids, np.int64)
        self.n_lh = int(m.n_lh)

    # ---- mesh-dependent pieces
    def meshes(self, kind: str | None = None) -> MeshSet:
        return self.loader(self.mesh_name, kind or self.kind)

    def has_mesh(self, kind: str) -> bool:
        """Whether the ``kind`` mesh (e.g. the flat patch) is on this machine (asked once)."""
        from napari_factortopy.data.surfaces import SurfaceError

        key = ("has_mesh", kind)
        if key not in self._cache:
            try:
                self.meshes(kind)
                self._cache[key] = True
            except (SurfaceError, OSError, ValueError, LookupError):
                self._cache[key] = False
        return self._cache[key]

    def set_view(self, view: str) -> None:
        """Switch the camera preset; the flat view switches to the flat patch."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
        if view == "flat":
            self.kind = "flat"
        self.view = view

    def set_kind(self, kind: str) -> None:
        """Switch the mesh kind; leaving the flat patch leaves the flat view too."""
        if kind not in MESH_KINDS:
            raise ValueError(f"unknown mesh {kind!r}; choose from {MESH_KINDS}")
        self.kind = kind
        if kind != "flat" and self.view == "flat":
            self.view = "lateral"

    def restrict_to(self, n_per_hemi: int) -> int:
        """Keep only modelled vertices with ids below ``n_per_hemi`` (a coarser mesh).

        Returns how many were dropped.
        """
        keep = np.flatnonzero(np.asarray(self.model.vertex_ids) < n_per_hemi)
        dropped = self.model.n_vertices - len(keep)
        self.rows = keep
        self.vertex_ids = np.asarray(self.model.vertex_ids, np.int64)[keep]
        self.n_lh = int((keep < self.model.n_lh).sum())
        self._cache.clear()
        return dropped

    def mesh_index(self) -> np.ndarray:
        """(V',) index into the displayed vertices of each shown model row."""
        ms = self.meshes()
        offset = np.where(np.arange(len(self.rows)) < self.n_lh, 0, ms.n("lh"))
        return self.vertex_ids + offset

    def geometry(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vertices (n, 3), faces (m, 3))`` of the current mesh kind and view."""
        key = ("geom", self.kind, self.view)
        if key not in self._cache:
            self._cache[key] = layout(self.meshes(), self.view)
        return self._cache[key]

    def background(self) -> np.ndarray:
        """Curvature grey of every displayed vertex, shape (n, 4)."""
        key = ("bg", self.kind)
        if key not in self._cache:
            ms = self.meshes()
            curv = np.concatenate([ms.curv["lh"], ms.curv["rh"]])
            self._cache[key] = colours.curvature_grey(curv)
        return self._cache[key]

    def _outline_mask(self) -> np.ndarray:
        key = ("outline", self.kind)
        if key not in self._cache:
            _, faces = self.geometry()
            lab = np.zeros(len(self.background()), np.int64)
            lab[self.mesh_index()] = np.asarray(self.model.roi)[self.rows]
            self._cache[key] = roi_boundary(faces, lab)
        return self._cache[key]

    def roi_labels(self) -> tuple[np.ndarray, list[str]]:
        """Where to write each ROI's name: one point per ROI and hemisphere.

        The point is the ROI vertex nearest (in the screen plane) to the centroid of
        the ROI's displayed vertices, among the front half of them (so a curved ROI's
        name sits on the side facing the camera), lifted toward the camera by 1 % of
        the scene's width so that the surface does not hide it.

        Returns
        -------
        positions : array of shape (k, 3), float32
            Display coordinates (see the module notes).
        names : list of k str
            ROI names, in hemisphere then label order.
        """
        key = ("roi_labels", self.kind, self.view)
        if key not in self._cache:
            verts, _ = self.geometry()
            shown = verts[self.mesh_index()]
            roi = np.asarray(self.model.roi)[self.rows]
            hemi = np.arange(len(self.rows)) >= self.n_lh
            lift = 0.01 * float(np.ptp(verts[:, 2])) if len(verts) else 0.0
            pos, names = [], []
            for h in (False, True):
                for k, name in enumerate(self.model.roi_names, start=1):
                    p = shown[(hemi == h) & (roi == k)]
                    if not len(p):
                        continue
                    front = p[p[:, 0] >= np.median(p[:, 0])]
                    centre = front[:, 1:].mean(0)
                    best = front[np.argmin(((front[:, 1:] - centre) ** 2).sum(1))]
                    pos.append(best + np.array([lift, 0.0, 0.0]))
                    names.append(str(name))
            self._cache[key] = (np.asarray(pos, np.float32).reshape(-1, 3), names)
        return self._cache[key]

    # ---- colours and values
    def model_rgba(self) -> np.ndarray:
        """(V, 4) colours of all modelled vertices for the current map.

        ``custom[name] = (rgba (V, 4), values (V,))`` adds maps computed elsewhere
        (e.g. a predicted response).
        """
        if self.map_name in self.custom:
            return self.custom[self.map_name][0]
        return map_rgba(
            self.model,
            self.map_name,
            layer_index=self.layer_index,
            score_key=self.score_key,
            clusters=self.clusters,
        )

    #: How many painted full-mesh colour arrays a scene keeps (5 MB each on fsaverage).
    N_PAINTED = 8

    def _map_sources(self) -> tuple:
        """The arrays the current map is painted from (compared by identity)."""
        m = self.model
        return (
            m.layer,
            m.space,
            m.scale,
            m.roi,
            self.clusters,
            self.custom.get(self.map_name),
            *m.scores.values(),
            *(getattr(m, "ensemble", None) or {}).values(),
        )

    def colors(self) -> np.ndarray:
        """(n, 4) float32 colours of every displayed vertex (the layer's vertex_colors).

        Painted arrays are kept (the last :attr:`N_PAINTED`, read-only) per mesh kind,
        map, layer index, score key and outlines, so switching back to a map costs no
        colouring. A kept array is used only while the model arrays, clusters and
        custom map it was painted from are the same objects: replace them (as the
        training preview does), do not edit them in place.
        """
        key = (self.kind, self.map_name, self.layer_index, self.score_key, self.outlines,
               self.significant_only)  # fmt: skip
        sources = self._map_sources()
        painted = self._cache.setdefault("painted", {})
        hit = painted.pop(key, None)
        if hit is not None and len(hit[0]) == len(sources):
            if all(a is b for a, b in zip(hit[0], sources, strict=True)):
                painted[key] = hit  # most recently used last
                return hit[1]
        out = self._background32().copy()
        rgba = np.clip(self.model_rgba()[self.rows], 0.0, 1.0)
        ok = ~self.missing()[self.rows]
        out[self.mesh_index()[ok]] = rgba[ok]
        faded = ok & self.not_significant()[self.rows]
        out[self.mesh_index()[faded], :3] = colours.NOT_SIGNIFICANT_GREY
        if self.outlines:
            out[self._outline_mask(), :3] = 0.0
        out.flags.writeable = False
        painted[key] = (sources, out)
        while len(painted) > self.N_PAINTED:
            painted.pop(next(iter(painted)))
        return out

    def missing(self) -> np.ndarray:
        """(V,) bool: modelled vertices without a finite value in the current map.

        They keep the curvature grey of unmodelled vertices (a map never shows a colour
        for a non-finite selector).
        """
        if self.map_name in self.custom:
            return ~np.isfinite(np.asarray(self.custom[self.map_name][1], np.float64))
        own = missing_rows(
            self.model, self.map_name, layer_index=self.layer_index, score_key=self.score_key
        )
        if self.map_name == "roi":
            return own  # anatomy, not a fitted value
        # a vertex with any non-finite selector or readout (FittedModel.missing) is unfitted
        model_missing = getattr(self.model, "missing", None)
        if model_missing is not None and np.shape(model_missing) == own.shape:
            own = own | np.asarray(model_missing, bool)
        return own

    def not_significant(self) -> np.ndarray:
        """(V,) bool: modelled vertices drawn in the flat "not significant" grey.

        Where the model holds FDR q-values (``factortopy evaluate``) and
        :attr:`significant_only` is on: the vertices with ``q > α`` in every fitted map
        (not the ROIs, not a group's model count, not custom maps).
        """
        v = self.model.n_vertices
        if not self.significant_only or self.map_name in ("roi", *GROUP_MAPS):
            return np.zeros(v, bool)
        if self.map_name in self.custom:
            return np.zeros(v, bool)
        from napari_factortopy.core.significance import not_significant

        return not_significant(self.model)

    def _background32(self) -> np.ndarray:
        key = ("bg32", self.kind)
        if key not in self._cache:
            self._cache[key] = self.background().astype(np.float32)
        return self._cache[key]

    def values(self) -> tuple[np.ndarray, list[str] | None]:
        """Current map's numbers on every displayed vertex (NaN / 0 where unmodelled).

        Returns ``(values (n,) or (n, k), label_names)``; see :func:`map_values`.
        """
        if self.map_name in self.custom:
            vals, names = np.asarray(self.custom[self.map_name][1], np.float64), None
        else:
            vals, names = map_values(
                self.model,
                self.map_name,
                layer_index=self.layer_index,
                score_key=self.score_key,
                clusters=self.clusters,
            )
        n = len(self.background())
        shape = (n, *vals.shape[1:])
        out = np.zeros(shape, vals.dtype) if names is not None else np.full(shape, np.nan)
        out[self.mesh_index()] = vals[self.rows]
        return out, names

    def layer_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vertices, faces)`` for a napari Surface layer.

        The vertices are the :meth:`geometry` ones in column-major (Fortran) order:
        napari takes the layer's extent (``vertices.min(0)``, ``max(0)``) several times
        per data change, and on fsaverage that reduction costs ~20 ms on a row-major
        (n, 3) array against ~0.3 ms on a column-major one.
        """
        key = ("layer_data", self.kind, self.view)
        if key not in self._cache:
            verts, faces = self.geometry()
            self._cache[key] = (np.asfortranarray(verts), faces)
        return self._cache[key]

    # ---- picking
    def _tree(self):
        key = ("tree", self.kind, self.view)
        if key not in self._cache:
            from scipy.spatial import cKDTree

            verts, faces = self.geometry()
            edges = np.linalg.norm(verts[faces[:, 0]] - verts[faces[:, 1]], axis=1)
            radius = float(np.percentile(edges, 90)) if len(edges) else 1.0
            self._cache[key] = (cKDTree(verts), radius, verts.min(0), verts.max(0))
        return self._cache[key]

    def pick(self, position, direction) -> Pick | None:
        """The displayed vertex a click ray hits first (see :meth:`hit`).

        Returns
        -------
        Pick or None
            None when the ray misses the brain.
        """
        hit = self.hit(position, direction)
        return None if hit is None else self.describe(hit[1])

    def hit(self, position, direction) -> tuple[float, int] | None:
        """Where a click ray first meets the displayed vertices.

        The ray ``position + t · direction`` is sampled through the bounding box in
        steps of half the (90th-percentile) edge length; the first sample with a
        vertex within one edge length picks that vertex.

        Parameters
        ----------
        position : array of shape (3,)
            A point on the ray (napari's click position, data coordinates).
        direction : array of shape (3,)
            Viewing direction (from the camera into the scene).

        Returns
        -------
        (t, mesh_index) or None
            Ray parameter of the hit along the unit ``direction`` from ``position``
            (the depth, to choose among several surfaces) and the displayed vertex;
            None when the ray misses the brain.
        """
        tree, radius, lo, hi = self._tree()
        p = np.asarray(position, np.float64)
        d = np.asarray(direction, np.float64)
        if not np.all(np.isfinite(d)) or np.linalg.norm(d) == 0:
            return None
        d = d / np.linalg.norm(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - radius - p) / d, (hi + radius - p) / d
        t_in = np.nanmax(np.where(d != 0, np.minimum(t1, t2), -np.inf))
        t_out = np.nanmin(np.where(d != 0, np.maximum(t1, t2), np.inf))
        if not t_in < t_out:
            return None
        t = np.arange(t_in, t_out, radius / 2.0)
        dist, idx = tree.query(p + t[:, None] * d, distance_upper_bound=radius)
        hit = np.flatnonzero(np.isfinite(dist))
        if hit.size == 0:
            return None
        return float(t[hit[0]]), int(idx[hit[0]])

    def describe(self, mesh_index: int) -> Pick:
        """A :class:`Pick` for a displayed vertex index."""
        n_lh_mesh = self.meshes().n("lh")
        hemi = "lh" if mesh_index < n_lh_mesh else "rh"
        hv = mesh_index if hemi == "lh" else mesh_index - n_lh_mesh
        lookup = self._row_lookup()
        row = lookup.get((hemi, hv))
        return Pick(mesh_index, hemi, hv, row)

    def _row_lookup(self) -> dict:
        if "rows" not in self._cache:
            hemis = np.where(np.arange(len(self.rows)) < self.n_lh, "lh", "rh")
            self._cache["rows"] = {
                (h, int(v)): int(r)
                for h, v, r in zip(hemis, self.vertex_ids, self.rows, strict=True)
            }
        return self._cache["rows"]


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def load_scene(model, loader=None, notify=None) -> BrainScene:
    """A :class:`BrainScene` for ``model`` on its mesh, or on fsaverage5 if it is missing.

    When the model's mesh is not on this machine and every hemisphere's vertex ids fit
    fsaverage5 (ids < 10242 keep their meaning on the coarser mesh), the model is shown
    on fsaverage5, keeping the vertices that exist there, and the user is told so.

    Parameters
    ----------
    model : FittedModel
    loader : callable, optional
        Mesh loader (see :class:`BrainScene`).
    notify : callable(str), optional
        Told about the fallback (default: :func:`warnings.warn`).

    Raises
    ------
    napari_factortopy.data.surfaces.SurfaceError
        When the mesh is missing and no fallback applies (the message says which).
    """
    from napari_factortopy.data.surfaces import MESH_SIZES, SurfaceError

    kwargs = {} if loader is None else {"loader": loader}
    scene = BrainScene(model, **kwargs)
    try:
        scene.meshes()
        return scene
    except SurfaceError as exc:
        small = MESH_SIZES["fsaverage5"]
        if model.mesh == "fsaverage5" or not np.any(np.asarray(model.vertex_ids) < small):
            raise SurfaceError(
                f"this model was fitted on {model.mesh}, which is not on this machine ({exc}); "
                "none of its vertices exists on fsaverage5, so it cannot be shown"
            ) from exc
        scene = BrainScene(model, mesh_name="fsaverage5", **kwargs)
        dropped = scene.restrict_to(small)
        (notify or _warn)(
            f"{model.mesh} meshes are not on this machine; showing the model on fsaverage5 "
            f"({model.n_vertices - dropped} of {model.n_vertices} modelled vertices exist "
            f"there). Point $SUBJECTS_DIR at a FreeSurfer {model.mesh} folder to see all."
        )
        return scene
