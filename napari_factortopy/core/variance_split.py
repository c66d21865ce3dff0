"""How much of each vertex's R² each layer carries (the product-measure split).

FactorTopy's prediction is linear in the layer weights: with ``h_vl(x)`` the aligned
token of layer l that vertex v reads (its space point, its scale mix),

``ŷ_v(x) = Σ_l c_vl(x) + b_v``,  ``c_vl(x) = π_vl · β_v · h_vl(x) / D``,

so each layer contributes one additive part of the prediction. With centred parts
``c̃_vl`` and centred responses ``ỹ_v`` over the test images, the split (the
"product measure" of himalaya's ``r2_score_split``, written here from its formula)

``R²_vl = (2 ⟨ỹ_v, c̃_vl⟩ − ⟨c̃_vl, Σ_k c̃_vk⟩) / ‖ỹ_v‖²``

adds up, over the layers, to the R² of the centred prediction; the rest of R² is the
squared offset of the prediction's mean, ``−N (mean ŷ_v − mean y_v)² / ‖ỹ_v‖²``
(≤ 0; ``offset``), so ``Σ_l R²_vl + offset_v = R²_v`` exactly. A layer's share can be
negative: a part that adds variance the responses lack lowers R².

:class:`R2Split` accumulates the sums over batches of images (nothing of size
images × vertices × layers is kept); :func:`layer_contributions` computes the parts
``c_vl`` of a FactorTopy module for a batch (torch, imported inside).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["R2Split", "dominant_layer", "layer_contributions", "r2_layer_weights", "r2_split"]


class R2Split:
    """Sums over images for :func:`r2_split`, added one batch at a time.

    Parameters
    ----------
    n_layers, n_vertices : int
    """

    def __init__(self, n_layers: int, n_vertices: int) -> None:
        shape = (n_layers, n_vertices)
        self.n = 0
        self.s_y = np.zeros(n_vertices)
        self.s_yy = np.zeros(n_vertices)
        self.s_c = np.zeros(shape)
        self.s_yc = np.zeros(shape)
        self.s_ct = np.zeros(shape)  # Σ_i c_l · (Σ_k c_k)
        self.s_t = np.zeros(n_vertices)
        self.s_yt = np.zeros(n_vertices)
        self.s_tt = np.zeros(n_vertices)

    def add(self, y: np.ndarray, contributions: np.ndarray) -> None:
        """Add a batch.

        Parameters
        ----------
        y : array of shape (n, V)
            Responses.
        contributions : array of shape (L, n, V)
            Each layer's part of the prediction (without the bias).
        """
        y = np.asarray(y, np.float64)
        c = np.asarray(contributions, np.float64)
        if c.ndim != 3 or c.shape[1:] != y.shape or c.shape[0] != self.s_c.shape[0]:
            raise ValueError(
                f"contributions must have shape ({self.s_c.shape[0]}, *{y.shape}); found {c.shape}"
            )
        t = c.sum(0)
        self.n += len(y)
        self.s_y += y.sum(0)
        self.s_yy += (y * y).sum(0)
        self.s_c += c.sum(1)
        self.s_yc += np.einsum("nv,lnv->lv", y, c)
        self.s_ct += np.einsum("nv,lnv->lv", t, c)
        self.s_t += t.sum(0)
        self.s_yt += (y * t).sum(0)
        self.s_tt += (t * t).sum(0)

    def result(self, intercept: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The split and the offset term.

        Parameters
        ----------
        intercept : array of shape (V,) or float
            The readout bias ``b_v`` (it moves only the offset term).

        Returns
        -------
        split : array of shape (V, L)
            ``R²_vl``; NaN where the responses are constant.
        offset : array of shape (V,)
            ``R²_v − Σ_l R²_vl`` (≤ 0).
        """
        n = float(self.n)
        if n < 2:
            raise ValueError("the split needs at least 2 images")
        my, mc, mt = self.s_y / n, self.s_c / n, self.s_t / n
        sst = self.s_yy - n * my**2
        cov_yc = self.s_yc - n * my[None] * mc  # Σ ỹ c̃_l
        cov_ct = self.s_ct - n * mc * mt[None]  # Σ c̃_l t̃
        with np.errstate(invalid="ignore", divide="ignore"):
            split = (2 * cov_yc - cov_ct) / sst[None]
            offset = -n * (mt + np.asarray(intercept, np.float64) - my) ** 2 / sst
        bad = ~(sst > 0)
        split[:, bad] = np.nan
        offset[bad] = np.nan
        return split.T, offset


def r2_split(
    y_true: np.ndarray, contributions: np.ndarray, intercept: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer split of R² for predictions made of additive layer parts.

    Parameters
    ----------
    y_true : array of shape (N, V)
    contributions : array of shape (L, N, V)
        Layer l's part of the prediction ``ŷ = Σ_l contributions[l] + intercept``.
    intercept : array of shape (V,) or float

    Returns
    -------
    split : array of shape (V, L)
    offset : array of shape (V,)
        ``split.sum(1) + offset`` equals the R² of ``ŷ`` (see the module notes).
    """
    c = np.asarray(contributions)
    acc = R2Split(c.shape[0], c.shape[2])
    acc.add(y_true, c)
    return acc.result(intercept)


def dominant_layer(split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer carrying most of each vertex's R², and its share of the positive part.

    Parameters
    ----------
    split : array of shape (V, L)

    Returns
    -------
    layer : int array of shape (V,)
        0-based argmax of the split (ties: the lower layer); 0 where the row is NaN.
    share : array of shape (V,)
        ``max_l R²_vl / Σ_l max(R²_vl, 0)`` in [0, 1]; NaN where no layer carries a
        positive part (or the row is NaN).
    """
    s = np.asarray(split, np.float64)
    ok = np.isfinite(s).all(1)
    safe = np.where(ok[:, None], s, -np.inf)
    layer = np.where(ok, np.argmax(safe, 1), 0).astype(np.int64)
    pos = np.clip(np.where(ok[:, None], s, 0.0), 0.0, None).sum(1)
    top = np.where(ok, safe.max(1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ok & (pos > 0), np.clip(top, 0.0, None) / pos, np.nan)
    return layer, share


def r2_layer_weights(split: np.ndarray) -> np.ndarray:
    """Each vertex's positive R² parts as weights over the layers (rows sum to 1).

    A layer map built from where the explained variance sits rather than from the
    selector's softmax: a layer with a small weight π but no share of R² gets none, so
    the tail mass of a soft selector does not pull the layer position toward the middle.
    Its :func:`~napari_factortopy.core.analyses.hierarchy_slope` is the R²-weighted
    slope ``factortopy info`` prints beside the selector's.

    Parameters
    ----------
    split : array of shape (V, L)

    Returns
    -------
    weights : array of shape (V, L)
        ``max(R²_vl, 0) / Σ_k max(R²_vk, 0)``; NaN rows where no layer has a positive
        part (or the row is not finite).
    """
    s = np.asarray(split, np.float64)
    ok = np.isfinite(s).all(1)
    pos = np.clip(np.where(ok[:, None], s, 0.0), 0.0, None)
    tot = pos.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = pos / tot
    w[~(ok & (tot[:, 0] > 0))] = np.nan
    return w


def layer_contributions(module: Any, local, global_, selectors: Any = None):
    """Each layer's additive part of a FactorTopy module's prediction for a batch.

    Runs :meth:`~napari_factortopy.core.model.FactorTopy.select` once per layer with the
    other layers' weights set to zero (the selection is linear in the layer weights),
    then the readout without its bias.

    Parameters
    ----------
    module : FactorTopy
    local, global_ : sequences of L tensors
        A batch of tokens, as for ``module(local, global_)``.
    selectors : Selectors, optional
        Fixed selector outputs (default ``module.selectors()``).

    Returns
    -------
    tensor of shape (L, B, V)
        ``Σ_l out[l] + module.bias`` is ``module(local, global_, selectors)``.
    """
    import torch

    from .model import Selectors

    sel = module.selectors() if selectors is None else selectors
    d = module.config.bottleneck
    beta = module.beta
    parts = []
    for layer in range(module.n_layers):
        mask = torch.zeros_like(sel.layer)
        mask[:, layer] = 1.0
        one = Selectors(sel.space, sel.layer * mask, sel.scale, sel.samples)
        f = module.select(local, global_, one)  # (V, B, D)
        y = torch.bmm(f, beta.to(f.dtype)[:, :, None])[..., 0].T / d  # (B, V)
        parts.append(y)
    return torch.stack(parts)
