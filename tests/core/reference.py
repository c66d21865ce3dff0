"""Plain reference implementation of FactorTopy's forward pass (METHOD.md §2).

A direct transcription, as in the paper's release: per layer ``grid_sample`` of the
aligned local tokens at every vertex's point, the global tokens broadcast against the
layer weights, the layer sum over a (B, L, D, V) tensor. It shares the parameters of
a :class:`~napari_factortopy.core.model.FactorTopy` so the two can be compared.
Used by the tests and by ``bench/bench_training.py``; memory grows as B·L·D·V.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reference_forward(model, local, global_):
    """Responses (B, V) computed the plain way from ``model``'s parameters."""
    sel = model.selectors()
    space, layer, scale = sel.space, sel.layer, sel.scale  # (V,2) (V,L) (V,)
    grid = space[None, :, None, :]  # (1, V, 1, 2)
    sampled = []
    for u, f in zip(model.local_align, local, strict=True):
        a = u(f)  # (B, D, h, w)
        s = F.grid_sample(
            a,
            grid.expand(a.shape[0], -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (B, D, V, 1)
        sampled.append(s[..., 0])
    local_bldv = torch.stack(sampled, dim=1)  # (B, L, D, V)
    glob_bld = torch.stack([g(t) for g, t in zip(model.global_align, global_, strict=True)], dim=1)
    pi = layer.T[None, :, None, :]  # (1, L, 1, V)
    u_v = (local_bldv * pi).sum(1)  # (B, D, V)
    z_v = (glob_bld[..., None] * pi).sum(
        1
    )  # global broadcast against π: (B, L, D, V) -> (B, D, V)
    f = (1 - scale) * u_v + scale * z_v  # (B, D, V)
    y = (f * model.beta.T[None]).sum(1) / model.config.bottleneck
    return y + model.bias


def naive_forward(model, local, global_):
    """Vertex-by-vertex loop with explicit bilinear interpolation (tiny sizes only)."""
    with torch.no_grad():
        sel = model.selectors()
    h, w = model.config.grid
    aligned = [u(f) for u, f in zip(model.local_align, local, strict=True)]  # (B, D, h, w)
    globs = [g(t) for g, t in zip(model.global_align, global_, strict=True)]  # (B, D)
    b = local[0].shape[0]
    out = torch.zeros(b, model.n_vertices, dtype=torch.float64)
    for v in range(model.n_vertices):
        x, y = float(sel.space[v, 0]), float(sel.space[v, 1])
        px, py = ((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2
        f = torch.zeros(b, model.config.bottleneck, dtype=torch.float64)
        for li in range(model.n_layers):
            loc = torch.zeros(b, model.config.bottleneck, dtype=torch.float64)
            for r in range(h):
                for c in range(w):
                    wt = max(0.0, 1 - abs(px - c)) * max(0.0, 1 - abs(py - r))
                    if wt > 0:
                        loc += wt * aligned[li][:, :, r, c].double()
            a = float(sel.scale[v])
            f += float(sel.layer[v, li]) * ((1 - a) * loc + a * globs[li].double())
        out[:, v] = f @ model.beta[v].double() / model.config.bottleneck + float(
            model.bias[v].detach()
        )
    return out
