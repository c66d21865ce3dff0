"""A plain, slow transcription of METHOD.md §1–§2: the independent reference.

Written from the method's formulas, not from :mod:`~napari_factortopy.core.model`: its
own positional encoding, its own selector MLPs (``torch.nn.Linear`` layers and
activations), its own channel-align matrices, and the forward pass done the direct way,
as in the paper's release — per layer a ``grid_sample`` of the aligned local tokens at
every vertex's point, the global tokens broadcast against the layer weights, the layer
sum over a (B, L, D, V) tensor, the readout. Memory grows as B·L·D·V.

It is the reference the tests and ``bench/bench_training.py`` compare
:class:`~napari_factortopy.core.model.FactorTopy` against (weights copied in with
:meth:`ReferenceFactorTopy.copy_from`); it is never used for training. Only torch is
imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ReferenceFactorTopy", "ReferenceSelectors", "reference_encoding", "reference_forward"]


def reference_encoding(
    coords: torch.Tensor, n_freqs: int = 32, max_period: float = 1000.0
) -> torch.Tensor:
    """Sinusoidal positional encoding of vertex positions (METHOD §1).

    Per axis ``t = (p − low)·S/(high − low)`` with ``S = 100·(high − low)/max(high −
    low)``, which is ``t = 100·(p − low)/max(high − low)``: the longest axis spans
    [0, 100], the others keep their aspect (an axis without extent gives t = 0). With
    ``ω_k = P^(−k/F)``, k = 0..F−1, the features are ``sin(ω_k t)`` and ``cos(ω_k t)``.

    Parameters
    ----------
    coords : tensor of shape (V, 3)
        Vertex positions (both hemispheres, already joined).
    n_freqs : int
        F, frequencies per axis.
    max_period : float
        P, the base of the frequency ladder.

    Returns
    -------
    tensor of shape (V, 3 * 2 * F), dtype of ``coords``
        Laid out axis by axis; within an axis the F sines, then the F cosines.
    """
    low = coords.min(dim=0).values
    high = coords.max(dim=0).values
    longest = (high - low).max()
    t = 100.0 * (coords - low) / longest  # (V, 3)
    k = torch.arange(n_freqs, dtype=coords.dtype, device=coords.device)
    omega = max_period ** (-k / n_freqs)  # (F,)
    blocks = []
    for axis in range(3):
        arg = t[:, axis : axis + 1] * omega  # (V, F)
        blocks += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(blocks, dim=1)


class ReferenceSelectors(NamedTuple):
    """Selector outputs of :class:`ReferenceFactorTopy`.

    Attributes
    ----------
    space : tensor of shape (V, 2)
        ``s_v``, a point on the token grid in ``grid_sample`` coordinates (x, y).
    layer : tensor of shape (V, L)
        ``π_v``, rows on the simplex.
    scale : tensor of shape (V,)
        ``α_v``, the weight of the global token.
    """

    space: torch.Tensor
    layer: torch.Tensor
    scale: torch.Tensor


class _SelectorMLP(nn.Module):
    """``n_in → hidden → GELU → hidden → GELU → k``, the last linear without bias."""

    def __init__(self, n_in: int, hidden: int, k: int) -> None:
        super().__init__()
        self.first = nn.Linear(n_in, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, k, bias=False)
        nn.init.zeros_(self.last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (V, n_in) to (V, k)."""
        return self.last(F.gelu(self.second(F.gelu(self.first(x)))))


class ReferenceFactorTopy(nn.Module):
    """FactorTopy written out from METHOD §2, slowly and plainly.

    Parameters
    ----------
    coords : tensor or array of shape (V, 3)
        Vertex positions; the encoding is computed from them in float64.
    widths : sequence of int, length L
        Channels ``C_l`` of each layer.
    grid : (h, w)
        Local-token grid.
    bottleneck : int
        D.
    hidden : int
        Width of the selector MLPs.
    n_freqs, max_period
        Positional encoding (:func:`reference_encoding`).
    encoding_dtype : torch.dtype, optional
        Round the encoding through this dtype once (``torch.float32`` reproduces a model
        that stores its encoding in single precision); the buffer stays float64.

    Attributes
    ----------
    encoding : buffer of shape (V, 6 F)
    space_mlp, layer_mlp, scale_mlp : selector MLPs with k = 2, L, 1
    local_align : ParameterList of L tensors of shape (D, C_l)
        ``U_l`` (a 1×1 convolution written as a matrix).
    global_align : ParameterList of L tensors of shape (D, C_l)
        ``G_l``.
    beta : parameter of shape (V, D)
    bias : parameter of shape (V,)
    """

    def __init__(
        self,
        coords,
        widths: Sequence[int],
        grid: tuple[int, int],
        bottleneck: int = 128,
        hidden: int = 128,
        n_freqs: int = 32,
        max_period: float = 1000.0,
        encoding_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        coords = torch.as_tensor(coords, dtype=torch.float64)
        enc = reference_encoding(coords, n_freqs, max_period)
        if encoding_dtype is not None:
            enc = enc.to(encoding_dtype).to(torch.float64)
        self.register_buffer("encoding", enc)
        self.widths = tuple(int(c) for c in widths)
        self.grid = (int(grid[0]), int(grid[1]))
        self.bottleneck = int(bottleneck)
        n_l, d, n_enc = len(self.widths), self.bottleneck, enc.shape[1]
        self.space_mlp = _SelectorMLP(n_enc, hidden, 2)
        self.layer_mlp = _SelectorMLP(n_enc, hidden, n_l)
        self.scale_mlp = _SelectorMLP(n_enc, hidden, 1)
        self.local_align = nn.ParameterList(
            nn.Parameter(torch.randn(d, c) / c**0.5) for c in self.widths
        )
        self.global_align = nn.ParameterList(
            nn.Parameter(torch.randn(d, c) / c**0.5) for c in self.widths
        )
        n_v = len(coords)
        self.beta = nn.Parameter(torch.empty(n_v, d).uniform_(-(d**-0.5), d**-0.5))
        self.bias = nn.Parameter(torch.empty(n_v).uniform_(-(d**-0.5), d**-0.5))

    @classmethod
    def like(
        cls,
        model,
        coords,
        dtype: torch.dtype = torch.float64,
        encoding_dtype: torch.dtype | None = torch.float32,
    ):
        """A reference of ``model``'s shapes with its weights copied in.

        Parameters
        ----------
        model : FactorTopy
            Its ``config`` gives the sizes; its parameters are copied
            (:meth:`copy_from`).
        coords : array of shape (V, 3)
            The coordinates ``model`` was built from (full precision).
        dtype : torch.dtype
            Of the reference's parameters and buffers (default float64).
        encoding_dtype : torch.dtype, optional
            See the class; default float32, as the model stores its encoding.

        Returns
        -------
        ReferenceFactorTopy
        """
        cfg = model.config
        ref = cls(
            coords,
            cfg.widths,
            cfg.grid,
            cfg.bottleneck,
            cfg.hidden,
            cfg.n_freqs,
            cfg.max_period,
            encoding_dtype=encoding_dtype,
        ).to(device=model.beta.device, dtype=dtype)
        ref.copy_from(model)
        return ref

    def counterparts(self) -> dict[str, nn.Parameter]:
        """This reference's parameter for each of a FactorTopy's parameter names.

        Returns
        -------
        dict
            FactorTopy parameter name → parameter of this module (``local_align``
            entries have shape (D, C_l), the model's (D, C_l, 1, 1)).
        """
        out: dict[str, nn.Parameter] = {}
        for name in ("space_mlp", "layer_mlp", "scale_mlp"):
            mlp = getattr(self, name)
            # FactorTopy's MLP is nn.Sequential(Linear, GELU, Linear, GELU, Linear)
            out[f"{name}.0.weight"] = mlp.first.weight
            out[f"{name}.0.bias"] = mlp.first.bias
            out[f"{name}.2.weight"] = mlp.second.weight
            out[f"{name}.2.bias"] = mlp.second.bias
            out[f"{name}.4.weight"] = mlp.last.weight
        for i in range(len(self.widths)):
            out[f"local_align.{i}.weight"] = self.local_align[i]
            out[f"global_align.{i}.weight"] = self.global_align[i]
        out["beta"] = self.beta
        out["bias"] = self.bias
        return out

    @torch.no_grad()
    def copy_from(self, model) -> None:
        """Copy every parameter of a FactorTopy ``model`` into this reference.

        Raises
        ------
        KeyError
            If the two do not have the same set of parameters.
        """
        theirs = dict(model.named_parameters())
        ours = self.counterparts()
        if set(theirs) != set(ours):
            raise KeyError(f"parameter names differ: {sorted(set(theirs) ^ set(ours))}")
        for name, p in ours.items():
            p.copy_(theirs[name].detach().reshape(p.shape).to(p.dtype))

    def selectors(self) -> ReferenceSelectors:
        """``s_v = tanh(·)``, ``π_v = softmax(·)``, ``α_v = sigmoid(·)`` of the MLPs."""
        enc = self.encoding
        space = torch.tanh(self.space_mlp(enc))
        layer = torch.softmax(self.layer_mlp(enc), dim=1)
        scale = torch.sigmoid(self.scale_mlp(enc))[:, 0]
        return ReferenceSelectors(space, layer, scale)

    def forward(
        self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Responses for a batch of tokens.

        Parameters
        ----------
        local : sequence of L tensors of shape (B, C_l, h, w)
        global_ : sequence of L tensors of shape (B, C_l)

        Returns
        -------
        tensor of shape (B, V)
        """
        return reference_forward(self, local, global_)


def reference_forward(
    ref: ReferenceFactorTopy,
    local: Sequence[torch.Tensor],
    global_: Sequence[torch.Tensor],
    sel: ReferenceSelectors | None = None,
) -> torch.Tensor:
    """The forward pass of METHOD §2, step by step.

    Parameters
    ----------
    ref : ReferenceFactorTopy
    local : sequence of L tensors of shape (B, C_l, h, w)
    global_ : sequence of L tensors of shape (B, C_l)
    sel : ReferenceSelectors, optional
        Precomputed ``ref.selectors()``.

    Returns
    -------
    tensor of shape (B, V)
        ``ŷ_v = (1/D)·Σ_d β_vd f_vd + b_v``.
    """
    sel = ref.selectors() if sel is None else sel
    b = local[0].shape[0]
    # grid_sample reads (x, y) points: (B, V, 1, 2) -> (B, D, V, 1)
    points = sel.space[None, :, None, :].expand(b, -1, -1, -1)
    sampled, glob = [], []
    for u, f, g, t in zip(ref.local_align, local, ref.global_align, global_, strict=True):
        a = torch.einsum("dc,bchw->bdhw", u, f)  # A_l = U_l F_l, (B, D, h, w)
        s = F.grid_sample(a, points, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled.append(s[..., 0])  # (B, D, V)
        glob.append(t @ g.T)  # a_l = G_l g_l, (B, D)
    local_bldv = torch.stack(sampled, dim=1)  # (B, L, D, V)
    glob_bldv = torch.stack(glob, dim=1)[..., None]  # (B, L, D, 1)
    pi = sel.layer.T[None, :, None, :]  # (1, L, 1, V)
    u_v = (pi * local_bldv).sum(dim=1)  # (B, D, V)
    z_v = (pi * glob_bldv).sum(dim=1)  # (B, D, V)
    f_v = (1 - sel.scale) * u_v + sel.scale * z_v  # (B, D, V)
    return (ref.beta.T[None] * f_v).sum(dim=1) / ref.bottleneck + ref.bias
