"""The comparison methods of METHOD.md §6 (paper Table 3) and the field's ridge baseline.

Torch baselines — same backbone tokens, same readout ``ŷ_v = (1/D) Σ_d β_vd f_vd + b_v``
as FactorTopy, trained by the same loop (:func:`napari_factortopy.core.training.train`):

- :class:`ClassToken` (``classToken``): ``f = mean_l G_l g_l`` — a layer-unique linear
  map of every layer's global token, averaged over layers; one f for all vertices.
- :class:`PatchComp` (``patchComp``, the paper's *patchToken*): ``f = mean_l P_l
  vec(F_l)`` — each layer's flattened local tokens through a layer-unique linear
  compression to D, averaged over layers.
- :class:`GNet` (``gnet``, the paper's *GNetViT*): ``f_v = mean_l Σ_cell m_vl(cell)
  (U_l F_l)(cell)`` — a free, softmax-normalised spatial pooling field per vertex and
  layer over the channel-aligned local tokens (zero-initialised: uniform pooling).
  Memory and compute grow as V·L·h·w (per image, V·L·h·w·D multiply-adds).

The torch baselines have no selectors; :meth:`Baseline.selectors` returns a neutral
placeholder (one layer, scale ½) on which the training loop's regulariser is exactly
0, so ``train()`` runs them unchanged.

:func:`ridge_per_layer` — the field's standard voxel-wise encoding model, one ridge
regression per layer (himalaya, imported when called): features per layer are the
global token and the local tokens average-pooled to a coarse grid (default 2×2),
standardised on the training images and, when wider than ``n_components``, reduced by
PCA fitted on the training images; per vertex a ridge with its own alpha chosen by
cross-validation on the training images (himalaya's ``RidgeCV``, local alphas); the
best layer of each vertex is the one with the highest *validation* R², and its test
scores are those of that layer's model (the "best-layer map", paper Fig. 9's
single-layer grid search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import FactorTopyConfig
from .metrics import pearson_r, r2_score
from .model import FactorTopy, Selectors, readout_parameters

__all__ = [
    "BASELINES",
    "Baseline",
    "ClassToken",
    "GNet",
    "PatchComp",
    "RidgeLayers",
    "grid_centres",
    "make_baseline",
    "ridge_features",
    "ridge_per_layer",
]


def grid_centres(grid: tuple[int, int]) -> np.ndarray:
    """``grid_sample`` coordinates (x, y) of the cell centres, row-major: (h·w, 2)."""
    h, w = grid
    xs = (2 * np.arange(w) + 1) / w - 1
    ys = (2 * np.arange(h) + 1) / h - 1
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], 1)


class Baseline(nn.Module):
    """Common part of the torch baselines: coordinates, readout, placeholder selectors.

    Parameters
    ----------
    coords : array of shape (V, 3)
        Vertex positions (kept for the model file; the baselines ignore position).
    config : FactorTopyConfig
        ``widths``, ``grid`` and ``bottleneck`` D are used.
    """

    method = "baseline"
    #: Which of :meth:`maps` mean something for this method (the others are fillers).
    shown_maps: tuple[str, ...] = ()

    def __init__(self, coords: np.ndarray, config: FactorTopyConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("coords", torch.as_tensor(np.asarray(coords), dtype=torch.float32))
        self._build()
        d, n_v = config.bottleneck, len(coords)
        self.beta, self.bias = readout_parameters(n_v, d)  # as FactorTopy

    def _build(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def n_vertices(self) -> int:
        return self.beta.shape[0]

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    def check_inputs(self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]) -> int:
        """Validate token shapes (as FactorTopy does); return the batch size."""
        return FactorTopy.check_inputs(self, local, global_)  # type: ignore[arg-type]

    def selectors(self) -> Selectors:
        """A neutral placeholder (the baselines select nothing): space at the centre,
        one layer of weight 1, scale ½ — ``regulariser()`` of it is exactly 0 and it
        carries no gradient."""
        n_v, dev = self.n_vertices, self.beta.device
        return Selectors(
            space=torch.zeros(n_v, 2, device=dev),
            layer=torch.ones(n_v, 1, device=dev),
            scale=torch.full((n_v,), 0.5, device=dev),
        )

    def features(
        self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Features: (B, D) shared by all vertices, or (B, V, D) per vertex."""
        raise NotImplementedError  # pragma: no cover

    def forward(
        self,
        local: Sequence[torch.Tensor],
        global_: Sequence[torch.Tensor],
        sel: Selectors | None = None,
    ) -> torch.Tensor:
        """Predicted responses (B, V); ``sel`` is accepted and ignored."""
        self.check_inputs(local, global_)
        f = self.features(local, global_)
        beta = self.beta.to(f.dtype)
        y = f @ beta.T if f.dim() == 2 else (f * beta[None]).sum(-1)
        return y / self.config.bottleneck + self.bias.to(y.dtype)

    def maps(self) -> dict[str, np.ndarray]:
        """FactorTopy-shaped maps for display: ``space`` (V, 2), ``layer`` (V, L),
        ``scale`` (V,) — what this method uses (layers: uniform, it averages them)."""
        n_v, n_l = self.n_vertices, self.n_layers
        return {
            "space": np.zeros((n_v, 2), np.float32),
            "layer": np.full((n_v, n_l), 1.0 / n_l, np.float32),
            "scale": np.full(n_v, self._scale, np.float32),
        }

    _scale = 0.0  # weight of the global token in the method (for the scale map)


class ClassToken(Baseline):
    """``classToken``: mean over layers of ``G_l g_l``, then the readout."""

    method = "classToken"
    _scale = 1.0

    def _build(self) -> None:
        d = self.config.bottleneck
        self.global_align = nn.ModuleList(nn.Linear(c, d, bias=False) for c in self.config.widths)

    def features(self, local, global_):
        return torch.stack([g(t) for g, t in zip(self.global_align, global_, strict=True)]).mean(0)


class PatchComp(Baseline):
    """``patchComp`` (patchToken): mean over layers of ``P_l vec(F_l)``, then the readout."""

    method = "patchComp"

    def _build(self) -> None:
        d = self.config.bottleneck
        h, w = self.config.grid
        self.patch_align = nn.ModuleList(
            nn.Linear(c * h * w, d, bias=False) for c in self.config.widths
        )

    def features(self, local, global_):
        return torch.stack(
            [p(f.flatten(1)) for p, f in zip(self.patch_align, local, strict=True)]
        ).mean(0)


class GNet(Baseline):
    """``gnet`` (GNetViT): per-vertex, per-layer softmax pooling fields over the aligned
    local tokens, averaged over layers, then the readout."""

    method = "gnet"
    shown_maps = ("space",)

    def _build(self) -> None:
        d = self.config.bottleneck
        h, w = self.config.grid
        self.local_align = nn.ModuleList(
            nn.Conv2d(c, d, 1, bias=False) for c in self.config.widths
        )
        self.mask = nn.Parameter(torch.zeros(len(self.coords), self.config.n_layers, h * w))

    def fields(self) -> torch.Tensor:
        """Pooling fields (V, L, h·w), each row summing to 1."""
        mask = self.mask
        return torch.softmax(
            mask.float() if mask.dtype in (torch.float16, torch.bfloat16) else mask, -1
        )

    def features(self, local, global_):
        b = local[0].shape[0]
        d = self.config.bottleneck
        n_l, hw = self.mask.shape[1:]
        # table (L·hw, B·D): row l·hw + cell = aligned token of layer l at cell
        table = torch.cat(
            [
                u(f).flatten(2).permute(2, 0, 1).reshape(hw, b * d)
                for u, f in zip(self.local_align, local, strict=True)
            ]
        )
        weights = self.fields().reshape(self.n_vertices, n_l * hw) / n_l
        out = weights.to(table.dtype) @ table  # (V, B·D)
        return out.view(self.n_vertices, b, d).transpose(0, 1)

    def maps(self) -> dict[str, np.ndarray]:
        """``space``: the centre of mass of each vertex's layer-averaged pooling field."""
        out = super().maps()
        with torch.no_grad():
            field_ = self.fields().mean(1).cpu().numpy()  # (V, hw)
        out["space"] = (field_ @ grid_centres(self.config.grid)).astype(np.float32)
        return out


#: Method name → torch baseline class.
BASELINES: dict[str, type[Baseline]] = {
    "classToken": ClassToken,
    "patchComp": PatchComp,
    "gnet": GNet,
}


def make_baseline(name: str, coords: np.ndarray, config: FactorTopyConfig) -> Baseline:
    """A torch baseline by method name (``classToken``, ``patchComp``, ``gnet``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](coords, config)


# ------------------------------------------------------------------ ridge


def ridge_features(
    features: Any,
    indices: np.ndarray,
    pool: tuple[int, int] = (2, 2),
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Per-layer ridge features of images ``indices``.

    Parameters
    ----------
    features : FeatureSource
        ``get(indices) -> (local, global_)``.
    indices : array of shape (n,)
    pool : (ph, pw)
        Grid the local tokens are average-pooled to (adaptive average pooling).

    Returns
    -------
    list of L float32 arrays of shape (n, C_l · (ph·pw + 1))
        ``[global token, pooled local tokens (channel-major)]`` per layer.
    """
    indices = np.asarray(indices, np.int64)
    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for lo in range(0, len(indices), batch_size):
            loc, glo = features.get(indices[lo : lo + batch_size])
            rows = [
                torch.cat([g.float(), F.adaptive_avg_pool2d(f.float(), pool).flatten(1)], 1)
                .cpu()
                .numpy()
                for f, g in zip(loc, glo, strict=True)
            ]
            if not parts:
                parts = [[] for _ in rows]
            for acc, r in zip(parts, rows, strict=True):
                acc.append(r)
    return [np.concatenate(p).astype(np.float32) for p in parts]


@dataclass
class RidgeLayers:
    """What :func:`ridge_per_layer` returns.

    Attributes
    ----------
    best_layer : int array (V,)
        Per vertex, the layer with the highest validation R².
    val_r2, test_r2_layers : arrays (L, V)
        Validation and test R² of every layer's ridge (the single-layer grid search).
    alphas : array (L, V)
        Cross-validated alpha of each layer's ridge per vertex.
    test_r2, test_r : arrays (V,)
        Test R² / Pearson r of each vertex's best-layer model.
    test_pred : array (n_test, V)
    n_features : list of int
        Feature dimension of each layer after PCA.
    """

    best_layer: np.ndarray
    val_r2: np.ndarray
    test_r2_layers: np.ndarray
    alphas: np.ndarray
    test_r2: np.ndarray
    test_r: np.ndarray
    test_pred: np.ndarray
    n_features: list[int] = field(default_factory=list)

    def layer_profile(self) -> np.ndarray:
        """(V, L) one-hot rows at the best layer (a "layer selector" to draw)."""
        n_l, n_v = self.val_r2.shape
        out = np.zeros((n_v, n_l), np.float32)
        out[np.arange(n_v), self.best_layer] = 1
        return out


def _standardise_pca(train: np.ndarray, others: Sequence[np.ndarray], n_components: int | None):
    mu = train.mean(0)
    sd = train.std(0)
    sd[sd == 0] = 1
    z = [(x - mu) / sd for x in (train, *others)]
    # ridge's solution lies in the span of the training rows: projecting onto their
    # principal axes (at most n_train of them) loses nothing and makes p <= n
    n_components = min(n_components or train.shape[1], len(train))
    if train.shape[1] > n_components:
        _, _, vt = np.linalg.svd(z[0], full_matrices=False)
        basis = vt[:n_components].T
        z = [x @ basis for x in z]
    return [x.astype(np.float32) for x in z]


def ridge_per_layer(
    train_x: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_x: Sequence[np.ndarray],
    val_y: np.ndarray,
    test_x: Sequence[np.ndarray],
    test_y: np.ndarray,
    *,
    alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 7)),
    cv: Any = 5,
    n_components: int | None = 256,
    backend: str = "numpy",
    blas_threads: int | None = None,
) -> RidgeLayers:
    """One cross-validated ridge per layer; per-vertex best layer on validation.

    Parameters
    ----------
    train_x, val_x, test_x : sequences of L arrays (n, p_l)
        Per-layer features (e.g. :func:`ridge_features`).
    train_y, val_y, test_y : arrays (n, V)
    alphas : sequence of float
        Candidate penalties; each vertex gets its own (himalaya ``local_alpha``).
    cv : int or iterable of (train, test) index arrays
        Folds over the training rows (pass grouped folds when images repeat).
    n_components : int or None
        PCA dimension per layer (fitted on the training rows) when the layer is wider
        (never more than the training rows: lossless for ridge).
    backend : {"numpy", "torch"}
        himalaya backend (CPU).
    blas_threads : int, optional
        Cap on BLAS threads while fitting (threadpoolctl); small problems on a busy
        machine run far faster with 1.

    Returns
    -------
    RidgeLayers
    """
    from himalaya.backend import get_backend, set_backend
    from himalaya.ridge import RidgeCV
    from threadpoolctl import threadpool_limits

    previous = get_backend().name
    bk = set_backend(backend, on_error="raise")
    limits = threadpool_limits(blas_threads) if blas_threads else None
    try:
        n_l = len(train_x)
        val_r2, test_r2, alpha_l, preds, dims = [], [], [], [], []
        cv_folds = cv if isinstance(cv, int) else list(cv)
        for li in range(n_l):
            xtr, xva, xte = _standardise_pca(train_x[li], [val_x[li], test_x[li]], n_components)
            model = RidgeCV(
                alphas=np.asarray(alphas, np.float64),
                cv=cv_folds,
                fit_intercept=True,
                solver_params={"warn": False},
            )
            model.fit(xtr, train_y.astype(np.float32))
            pv = np.asarray(bk.to_numpy(model.predict(xva)), np.float32)
            pt = np.asarray(bk.to_numpy(model.predict(xte)), np.float32)
            val_r2.append(r2_score(val_y, pv))
            test_r2.append(r2_score(test_y, pt))
            alpha_l.append(np.asarray(bk.to_numpy(model.best_alphas_), np.float32))
            preds.append(pt)
            dims.append(int(xtr.shape[1]))
    finally:
        set_backend(previous)
        if limits is not None:
            limits.unregister()
    val = np.stack(val_r2)
    best = np.nan_to_num(val, nan=-np.inf).argmax(0)
    pred = np.stack(preds)[best, :, np.arange(val.shape[1])].T  # (n_test, V)
    return RidgeLayers(
        best_layer=best.astype(np.int64),
        val_r2=val.astype(np.float32),
        test_r2_layers=np.stack(test_r2).astype(np.float32),
        alphas=np.stack(alpha_l),
        test_r2=r2_score(test_y, pred),
        test_r=pearson_r(test_y, pred),
        test_pred=pred,
        n_features=dims,
    )
