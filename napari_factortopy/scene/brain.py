"""The brain object: a model's maps painted on both hemispheres for one napari layer.

A :class:`BrainScene` turns a :class:`~napari_factortopy.core.fitted_model.FittedModel` into
what one napari ``Surface`` layer shows: both hemispheres side by side
(``vertices``, ``faces``) and one opaque RGBA colour per mesh vertex for the chosen
map, with unmodelled vertices in curvature grey. It also answers clicks
(:meth:`BrainScene.pick`). The jobs it is built from live beside it, one module each:

- :mod:`~napari_factortopy.scene.maps`: map names, their numbers and colours;
- :mod:`~napari_factortopy.scene.meshes`: meshes, the side-by-side layout (display
  coordinates), ROI borders;
- :mod:`~napari_factortopy.scene.picking`: the click ray cast.

Every name they define stays importable from here, as before the split.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from napari_factortopy.core import colours
from napari_factortopy.scene.closed_surface import surface_orientation
from napari_factortopy.scene.maps import (
    BAR_MAPS,
    ENSEMBLE_MAPS,
    EVALUATION_MAPS,
    GROUP_MAPS,
    MAPS,
    SCORE_LABELS,
    CustomMap,
    _default_score_key,  # noqa: F401  (scene.figure and scene.tables import it from here)
    available_maps,
    convergence_line,
    ensemble_layer_rgba,
    ensemble_map,
    extra_map,
    map_rgba,
    map_values,
    method_name,
    missing_rows,
    real_maps,
    score_label,
    selector_line,
)
from napari_factortopy.scene.meshes import (
    HEMIS,
    MESH_KINDS,
    VIEWS,
    MeshSet,
    hemisphere_caption,
    hemisphere_order,
    layout,
    load_meshset,
    roi_boundary,
)
from napari_factortopy.scene.picking import Pick, first_hit, vertex_rays

__all__ = [
    "BAR_MAPS",
    "ENSEMBLE_MAPS",
    "EVALUATION_MAPS",
    "GROUP_MAPS",
    "HEMIS",
    "MAPS",
    "MESH_KINDS",
    "SCORE_LABELS",
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
    "load_meshset",
    "load_scene",
    "map_rgba",
    "map_values",
    "method_name",
    "missing_rows",
    "real_maps",
    "roi_boundary",
    "score_label",
]


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

    def degenerate(self) -> str | None:
        """Why the model's selectors are degenerate (:func:`selector_line`), measured
        once per scene; None when they chose something."""
        if "degenerate" not in self._cache:
            self._cache["degenerate"] = selector_line(self.model)
        return self._cache["degenerate"]

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
            self._cache[key] = vertex_rays(*self.geometry())
        return self._cache[key]

    def warm_picking(self) -> None:
        """Build the current mesh and view's pick structure now (≈ 0.2–0.4 s at
        fsaverage7), so that the first click after a view change is answered at once,
        and measure the mesh's :meth:`orientation` (≈ 0.5 s the first time per mesh
        kind); the panel calls it on a worker thread."""
        self._tree()
        self.orientation()

    def orientation(self, measure: bool = True) -> int | None:
        """Which way the current mesh kind's faces turn
        (:func:`~napari_factortopy.scene.closed_surface.surface_orientation`): +1 closed
        and outward, −1 closed and inward, 0 open or mixed. Measured once per kind;
        with ``measure=False`` None until then (a renderer's question that must not
        wait). Every view is a rotation of the mesh (:func:`layout`), so the answer
        holds for every view."""
        key = ("orientation", self.kind)
        if key not in self._cache:
            if not measure:
                return None
            self._cache[key] = surface_orientation(self.meshes())
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
        """Where a click ray first crosses the displayed mesh, and the vertex picked.

        :func:`~napari_factortopy.scene.picking.first_hit`: the crossed triangle's
        corner nearest to the crossing (napari's vertex); a ray crossing no triangle
        picks the first vertex within one edge length of it.

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
        return first_hit(self._tree(), position, direction)

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
