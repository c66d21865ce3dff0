"""The FactorTopy brain encoding model (METHOD.md §2).

For every vertex v, three small MLPs of the vertex's positional encoding choose a
point on the token grid (space selector ``s_v``), a convex combination of layers
(layer selector ``π_v``) and the weight of the global token (scale selector
``α_v``). Channel-aligned tokens of all layers are read at that point, mixed by
``π_v`` and ``α_v`` into ``f_v ∈ R^D``, and a per-vertex readout predicts the response.

The selection is computed without ever materialising a tensor of size B×V×D×L:
the space point is shared by all layers, so each vertex's whole selection is one
weighted sum over ``5 L`` rows of a small token table (4 bilinear taps per layer
for the local tokens, 1 row per layer for the global token), done on the CPU by
:func:`torch.nn.functional.embedding_bag` with ``per_sample_weights`` and on a GPU
by a matrix product with a per-vertex selection matrix built on the fly
(:mod:`.gather`; on the CPU the gather and the readout run fused in blocks of vertices,
:func:`~.gather.gather_readout`); gradients reach both the table (hence the
channel-align weights) and the weights (hence the selectors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import FactorTopyConfig
from .encoding import encoding_dim, positional_encoding
from .gather import GATHER_METHODS, gather_method, gather_readout, weighted_gather

__all__ = [
    "GATHER_METHODS",
    "FactorTopy",
    "Selectors",
    "bilinear_taps",
    "gather_method",
    "gather_readout",
    "weighted_gather",
]


@dataclass
class Selectors:
    """Per-vertex selector outputs.

    Attributes
    ----------
    space : tensor of shape (V, 2)
        Point on the token grid in ``grid_sample`` coordinates ([-1, 1], x then y).
    layer : tensor of shape (V, L)
        Layer weights, rows on the simplex.
    scale : tensor of shape (V,)
        Weight of the global token.
    samples : tensor of shape (V, K, 2), optional
        The *multiple samples* ablation's K space points per vertex (``space`` is then
        their mean, for display); None for FactorTopy (one point).
    """

    space: torch.Tensor
    layer: torch.Tensor
    scale: torch.Tensor
    samples: torch.Tensor | None = None

    def numpy(self) -> dict[str, np.ndarray]:
        """Detached float32 numpy copies keyed ``space``, ``layer``, ``scale``."""
        return {
            k: getattr(self, k).detach().float().cpu().numpy() for k in ("space", "layer", "scale")
        }


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Selector outputs are kept in float32 (or float64) even under bf16 autocast."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def readout_parameters(n_vertices: int, d: int) -> tuple[nn.Parameter, nn.Parameter]:
    """The per-vertex readout ``beta (V, D)`` and ``bias (V,)``, initialised as
    ``nn.Linear(D, V)`` would (uniform in ±1/√D, beta drawn first)."""
    bound = 1.0 / math.sqrt(d)
    beta = nn.Parameter(torch.empty(n_vertices, d).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(n_vertices).uniform_(-bound, bound))
    return beta, bias


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    last = nn.Linear(hidden, n_out, bias=False)
    nn.init.zeros_(last.weight)
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), last
    )


def sample_offsets(k: int) -> torch.Tensor:
    """Fixed pre-``tanh`` offsets of the K space samples (the *multiple samples*
    ablation, ours): K points on a circle of radius 0.25 around the selector's output,
    so that the samples, which start from one zero-initialised layer, differ."""
    angle = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
    return 0.25 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def bilinear_taps(space: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear interpolation taps of ``grid_sample`` (``align_corners=False``, zeros padding).

    Parameters
    ----------
    space : tensor of shape (V, 2)
        Points in [-1, 1]² (x along the grid's width, y along its height).
    grid : (h, w)

    Returns
    -------
    index : int64 tensor of shape (V, 4)
        Flat positions ``row * w + col`` of the four neighbours (clamped into range;
        out-of-range taps carry zero weight).
    weight : tensor of shape (V, 4)
        Interpolation weights, zero for taps outside the grid; differentiable in
        ``space``.
    """
    h, w = grid
    ix = ((space[:, 0] + 1) * w - 1) / 2
    iy = ((space[:, 1] + 1) * h - 1) / 2
    x0 = torch.floor(ix).detach()
    y0 = torch.floor(iy).detach()
    fx, fy = ix - x0, iy - y0
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=1)
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=1)
    wts = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    valid = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    wts = wts * valid.to(wts.dtype)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).long()
    return index, wts


class FactorTopy(nn.Module):
    """FactorTopy encoder: backbone tokens (B images) → responses (B, V).

    Parameters
    ----------
    coords : array of shape (V, 3)
        Vertex positions on the registered sphere, both hemispheres joined
        (:func:`~napari_factortopy.core.encoding.joint_sphere_coordinates`).
    config : FactorTopyConfig
        Layer widths, grid, bottleneck and selector sizes, and the ablations
        (METHOD.md §6): a factor that is not selected has no MLP (nor free
        parameters); with ``topology=False`` each selected factor is a free
        per-vertex parameter (``space_free`` (V, 2K), ``layer_free`` (V, L),
        ``scale_free`` (V, 1), zero-initialised like the MLPs' last layer).
    """

    def __init__(self, coords: np.ndarray, config: FactorTopyConfig) -> None:
        super().__init__()
        self.config = config
        coords = np.asarray(coords, dtype=np.float64)
        enc = positional_encoding(coords, config.n_freqs, config.max_period)
        self.register_buffer("coords", torch.as_tensor(coords, dtype=torch.float32))
        self.register_buffer("encoding", torch.from_numpy(enc))
        n_enc = encoding_dim(config.n_freqs)
        d = config.bottleneck
        self.local_align = nn.ModuleList(nn.Conv2d(c, d, 1, bias=False) for c in config.widths)
        self.global_align = nn.ModuleList(nn.Linear(c, d, bias=False) for c in config.widths)
        n_vertices = len(coords)
        n_space = 2 * config.space_samples
        wanted = [
            ("space", config.select_space, n_space),
            ("layer", config.select_layer, config.n_layers),
            ("scale", config.select_scale, 1),
        ]
        for name, selected, n_out in wanted:  # FactorTopy: the three MLPs, in this order
            if not selected:
                continue
            if config.topology:
                setattr(self, f"{name}_mlp", _mlp(n_enc, config.hidden, n_out))
            else:
                setattr(self, f"{name}_free", nn.Parameter(torch.zeros(n_vertices, n_out)))
        self.beta, self.bias = readout_parameters(n_vertices, d)
        #: The weighted gather's implementation (:data:`GATHER_METHODS`); None: the
        #: one made for the device the tokens are on (:func:`gather_method`).
        self.gather: str | None = None

    # ------------------------------------------------------------------ shapes
    @property
    def n_vertices(self) -> int:
        return self.beta.shape[0]

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    def check_inputs(self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]) -> int:
        """Validate token shapes against the configuration; return the batch size."""
        cfg = self.config
        if len(local) != cfg.n_layers or len(global_) != cfg.n_layers:
            raise ValueError(
                f"model expects {cfg.n_layers} layers; found {len(local)} local and "
                f"{len(global_)} global token arrays"
            )
        b = local[0].shape[0]
        for i, (loc, glo, c) in enumerate(zip(local, global_, cfg.widths, strict=True)):
            want = (b, c, *cfg.grid)
            if tuple(loc.shape) != want:
                raise ValueError(
                    f"layer {i}: local tokens must have shape {want}; found {tuple(loc.shape)}"
                )
            if tuple(glo.shape) != (b, c):
                raise ValueError(
                    f"layer {i}: global token must have shape {(b, c)}; found {tuple(glo.shape)}"
                )
        return b

    # --------------------------------------------------------------- selectors
    def selectors(self) -> Selectors:
        """Evaluate the three selector MLPs for all vertices (once per step).

        They run in the parameters' precision even under autocast: they cost a few
        per cent of a step, and in bfloat16 the high-frequency positional features
        and the space gradients (differences of neighbouring taps) lose most of
        their digits.

        Ablations: an unselected factor is a constant (space: the centre, unused;
        layer: uniform; scale: ½); without topology the free parameters replace the
        MLP outputs; with K space samples, ``samples`` holds the K points and
        ``space`` their mean.
        """
        with torch.autocast(self.encoding.device.type, enabled=False):
            return self._selectors()

    def _selectors(self) -> Selectors:
        cfg = self.config
        enc = self.encoding
        if not cfg.is_ablation:
            space = torch.tanh(_at_least_f32(self.space_mlp(enc)))
            layer = torch.softmax(_at_least_f32(self.layer_mlp(enc)), dim=-1)
            scale = torch.sigmoid(_at_least_f32(self.scale_mlp(enc))).squeeze(-1)
            return Selectors(space=space, layer=layer, scale=scale)
        n_v = self.n_vertices

        def raw(name: str) -> torch.Tensor:
            out = (
                getattr(self, f"{name}_mlp")(enc)
                if cfg.topology
                else getattr(self, f"{name}_free")
            )
            return _at_least_f32(out)

        samples = None
        if not cfg.select_space:
            space = enc.new_zeros(n_v, 2)
        elif cfg.space_samples > 1:
            k = cfg.space_samples
            pts = raw("space").view(n_v, k, 2) + sample_offsets(k).to(enc.device)
            samples = torch.tanh(pts)
            space = samples.mean(1)
        else:
            space = torch.tanh(raw("space"))
        if cfg.select_layer:
            layer = torch.softmax(raw("layer"), dim=-1)
        else:
            layer = enc.new_full((n_v, cfg.n_layers), 1.0 / cfg.n_layers)
        if cfg.select_scale:
            scale = torch.sigmoid(raw("scale")).squeeze(-1)
        else:
            scale = enc.new_full((n_v,), 0.5)
        return Selectors(space=space, layer=layer, scale=scale, samples=samples)

    # ------------------------------------------------------------- alignment
    def aligned_local(self, local: Sequence[torch.Tensor]) -> torch.Tensor:
        """Channel-aligned local tokens ``A_l = U_l F_l``.

        Parameters
        ----------
        local : sequence of L tensors of shape (B, C_l, h, w)

        Returns
        -------
        tensor of shape (B, L, D, h, w)
        """
        return torch.stack([u(f) for u, f in zip(self.local_align, local, strict=True)], dim=1)

    def token_table(
        self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """All aligned tokens of a batch as one table.

        Returns
        -------
        tensor of shape (L * (h*w + 1), B * D)
            Rows ``l*h*w + r*w + c`` hold layer l's aligned local token at grid cell
            (r, c); rows ``L*h*w + l`` hold layer l's aligned global token. Columns are
            (image, channel) pairs.
        """
        b = local[0].shape[0]
        h, w = self.config.grid
        d = self.config.bottleneck
        rows = [
            u(f).permute(2, 3, 0, 1).reshape(h * w, b * d)
            for u, f in zip(self.local_align, local, strict=True)
        ]
        rows += [g(t).reshape(1, b * d) for g, t in zip(self.global_align, global_, strict=True)]
        return torch.cat(rows, dim=0)

    def gather_plan(self, sel: Selectors) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of :meth:`token_table` each vertex reads, and with which weights.

        Returns
        -------
        index : int64 tensor of shape (V, 5 L)
        weight : tensor of shape (V, 5 L)
            ``π_vl (1-α_v) w_vk`` for the 4 bilinear taps k of layer l and
            ``π_vl α_v`` for its global token.
        """
        n_l = self.n_layers
        h, w = self.config.grid
        hw = h * w
        if sel.samples is None:
            taps, tap_w = bilinear_taps(_at_least_f32(sel.space), (h, w))  # (V,4)
        else:  # K points per vertex, averaged: 4K taps of weight 1/K
            n_v, k = sel.samples.shape[:2]
            taps, tap_w = bilinear_taps(_at_least_f32(sel.samples).reshape(-1, 2), (h, w))
            taps, tap_w = taps.reshape(n_v, 4 * k), tap_w.reshape(n_v, 4 * k) / k
        dev = taps.device
        layer_off = torch.arange(n_l, device=dev) * hw  # (L,)
        local_idx = (layer_off[None, :, None] + taps[:, None, :]).reshape(len(taps), -1)
        local_w = (
            sel.layer[:, :, None] * (1 - sel.scale)[:, None, None] * tap_w[:, None, :]
        ).reshape(len(taps), -1)
        global_idx = (n_l * hw + torch.arange(n_l, device=dev)).expand(len(taps), n_l)
        global_w = sel.layer * sel.scale[:, None]
        return torch.cat([local_idx, global_idx], 1), torch.cat([local_w, global_w], 1)

    def pooled_table(
        self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The *no space selection* ablation's table: per layer the grid mean of the
        aligned local tokens (rows ``0..L-1``; ``U_l`` is linear, so it is ``U_l`` of
        the mean), then the aligned global tokens (rows ``L..2L-1``); shape (2L, B·D)."""
        b = local[0].shape[0]
        d = self.config.bottleneck
        rows = [
            u(f.mean(dim=(2, 3), keepdim=True)).reshape(1, b * d)
            for u, f in zip(self.local_align, local, strict=True)
        ]
        rows += [g(t).reshape(1, b * d) for g, t in zip(self.global_align, global_, strict=True)]
        return torch.cat(rows, dim=0)

    def pooled_plan(self, sel: Selectors) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of :meth:`pooled_table` and weights ``π_vl (1-α_v)``, ``π_vl α_v``."""
        n_v, n_l = sel.layer.shape
        index = torch.arange(2 * n_l, device=sel.layer.device).expand(n_v, 2 * n_l)
        weight = torch.cat(
            [sel.layer * (1 - sel.scale)[:, None], sel.layer * sel.scale[:, None]], 1
        )
        return index, weight

    # ---------------------------------------------------------------- forward
    def select(
        self,
        local: Sequence[torch.Tensor],
        global_: Sequence[torch.Tensor],
        sel: Selectors | None = None,
    ) -> torch.Tensor:
        """Selected features ``f_v`` for each image.

        ``sel`` may be the selectors of a subset of the vertices (V' rows); the result
        then has V' rows.

        Returns
        -------
        tensor of shape (V, B, D)
        """
        table, index, weight = self._table_and_plan(local, global_, sel)
        out = weighted_gather(index, weight, table, self.gather)
        d = self.config.bottleneck
        return out.view(len(index), table.shape[1] // d, d)  # sel may hold a row subset

    def _table_and_plan(
        self,
        local: Sequence[torch.Tensor],
        global_: Sequence[torch.Tensor],
        sel: Selectors | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token table (R, B·D) and each vertex's rows and weights (V, K), checked."""
        self.check_inputs(local, global_)
        sel = self.selectors() if sel is None else sel
        if self.config.select_space:
            return self.token_table(local, global_), *self.gather_plan(sel)
        # ablation: the grid mean instead of a point
        return self.pooled_table(local, global_), *self.pooled_plan(sel)

    def forward(
        self,
        local: Sequence[torch.Tensor],
        global_: Sequence[torch.Tensor],
        sel: Selectors | None = None,
    ) -> torch.Tensor:
        """Predict responses.

        Parameters
        ----------
        local : sequence of L tensors of shape (B, C_l, h, w)
            Local tokens on the model's grid.
        global_ : sequence of L tensors of shape (B, C_l)
            Global tokens.
        sel : Selectors, optional
            Precomputed selector outputs (computed when omitted).

        Returns
        -------
        tensor of shape (B, V)
        """
        if self._fused_readout(local[0]):
            table, index, weight = self._table_and_plan(local, global_, sel)
            y = gather_readout(index, weight, table, self.beta).T  # (B, V)
        else:
            f = self.select(local, global_, sel)  # (V, B, D)
            y = torch.bmm(f, self.beta.to(f.dtype)[:, :, None])[..., 0].T  # (B, V)
        return y / self.config.bottleneck + self.bias.to(y.dtype)

    def _fused_readout(self, tokens: torch.Tensor) -> bool:
        """Whether :meth:`forward` reads out in blocks (:func:`gather_readout`): with
        the embedding-bag gather and no autocast; the dense (GPU) gather and autocast
        keep the gather, then the readout."""
        dev = tokens.device.type
        method = gather_method(tokens.device) if self.gather is None else self.gather
        return method == "bag" and not torch.is_autocast_enabled(dev)
