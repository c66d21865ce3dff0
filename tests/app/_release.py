"""An independent transcription of the paper's released module, for the import tests.

Written from the description in issue 20 (not from our model code): the release's
``FactorTopy`` (ModuleDicts of 1×1 convolutions and linear maps keyed by layer number,
three selector MLPs whose first element is a parameter-free positional encoding laid out
``[axis][frequency][sin|cos]``, ``grid_sample`` on the local tokens, the mean over the
bottleneck channels plus a bias), its training module's 14×14 → 8×8 plain-bilinear token
downsampling, its vertex coordinates (whole fsaverage spheres, the right one shifted by
the whole left sphere's x range) and its image tokens (every residual block of an
open_clip ViT, before ``ln_post``, images squashed to 224 and ImageNet-normalised).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ReleaseEncoding(nn.Module):
    """Sinusoidal encoding: per axis positions scaled so the longest axis spans [0, 100],
    ω_k = 1000^(−k/F), features ``[axis][frequency][sin|cos]``."""

    def __init__(self, features: int = 32, steps: float = 100.0, period: float = 1000.0):
        super().__init__()
        self.features, self.steps, self.period = features, steps, period

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        low, high = p.min(0).values, p.max(0).values
        extent = high - low
        scale = extent * self.steps / extent.max()
        t = (p - low) * (scale / extent)  # (V, 3)
        k = torch.arange(self.features, dtype=p.dtype)
        omega = self.period ** (-k / self.features)
        arg = t[:, :, None] * omega  # (V, 3, F)
        return torch.stack([arg.sin(), arg.cos()], dim=-1).flatten(1)  # (V, 3·F·2)


def _selector(n_out: int, act: nn.Module, hidden: int, features: int) -> nn.Sequential:
    return nn.Sequential(
        ReleaseEncoding(features),
        nn.Linear(6 * features, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, n_out, bias=False),
        act,
    )


class ReleaseFactorTopy(nn.Module):
    """The release's module, state-dict compatible with ``clip_factorTopy.pth``."""

    def __init__(self, n_vertices, n_layers=12, width=768, d=128, hidden=128, features=32):
        super().__init__()
        self.layers = [str(i) for i in range(n_layers)]
        self.local_token_bottleneck = nn.ModuleDict(
            {k: nn.Conv2d(width, d, 1, bias=False) for k in self.layers}
        )
        self.global_token_bottleneck = nn.ModuleDict(
            {k: nn.Linear(width, d, bias=False) for k in self.layers}
        )
        self.space_selector_mlp = _selector(2, nn.Tanh(), hidden, features)
        self.layer_selector_mlp = _selector(n_layers, nn.Softmax(dim=-1), hidden, features)
        self.scale_selector_mlp = _selector(1, nn.Sigmoid(), hidden, features)
        readout = nn.Linear(d, n_vertices)
        self.weight = nn.Parameter(readout.weight.detach().clone())
        self.bias = nn.Parameter(readout.bias.detach().clone())

    def selectors(self, coords):
        return (
            self.space_selector_mlp(coords),
            self.layer_selector_mlp(coords),
            self.scale_selector_mlp(coords),
        )

    def forward(self, local, global_, coords):
        """local: dict layer → (B, C, h, w); global_: dict layer → (B, C) → (B, V)."""
        space, layer, scale = self.selectors(coords)
        b = next(iter(local.values())).shape[0]
        grid = space[None, :, None, :].expand(b, -1, -1, -1)  # (B, V, 1, 2)
        v_local = 0
        v_global = 0
        for i, k in enumerate(self.layers):
            a = self.local_token_bottleneck[k](local[k])  # (B, D, h, w)
            s = F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            v_local = v_local + s[..., 0].transpose(1, 2) * layer[None, :, i, None]
            g = self.global_token_bottleneck[k](global_[k])  # (B, D)
            v_global = v_global + g[:, None, :] * layer[None, :, i, None]
        v = (1 - scale[None]) * v_local + scale[None] * v_global  # (B, V, D)
        return (v * self.weight[None]).mean(-1) + self.bias[None]


def randomise(module: ReleaseFactorTopy, seed: int = 0, last: float = 15.0) -> ReleaseFactorTopy:
    """Random weights everywhere: PyTorch's default initialisation (as the release builds
    its layers), except that the selectors' last layers, which the release starts at
    zero, are drawn too (``last``/√H uniform), so that space points spread over the grid
    and layer weights differ between vertices."""
    torch.manual_seed(seed)
    fresh = type(module)(module.weight.shape[0], len(module.layers),
                         module.local_token_bottleneck["0"].weight.shape[1],
                         module.weight.shape[1],
                         module.space_selector_mlp[1].weight.shape[0],
                         module.space_selector_mlp[0].features)  # fmt: skip
    module.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        for name in ("space", "layer", "scale"):
            w = getattr(module, f"{name}_selector_mlp")[5].weight
            w.uniform_(-last / w.shape[1] ** 0.5, last / w.shape[1] ** 0.5)
    return module


def downsample(local: dict, size=(8, 8)) -> dict:
    """The release's training module: local tokens to 8×8, plain bilinear."""
    return {
        k: F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        for k, v in local.items()
    }


def release_coords(lh: np.ndarray, rh: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Whole spheres, the right one moved so its min x sits at lh_min + 1.5·(lh_max −
    lh_min), then indexed by joint indices (left first)."""
    lh = np.array(lh, np.float32)
    rh = np.array(rh, np.float32)
    lo, hi = lh[:, 0].min(), lh[:, 0].max()
    rh[:, 0] += (lo + (hi - lo) * 1.5) - rh[:, 0].min()
    return np.concatenate([lh, rh])[joint]


def release_images(images, size=(224, 224)) -> torch.Tensor:
    """Resize((224, 224)) with PIL bilinear, to [0, 1], ImageNet mean/std → (B, 3, H, W)."""
    from PIL import Image

    out = []
    for im in images:
        im = Image.fromarray(np.asarray(im)).convert("RGB").resize(size[::-1], Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        out.append((x - mean) / std)
    return torch.stack(out)


def release_tokens(visual, x: torch.Tensor):
    """The release's get_tokens on an open_clip ViT image tower, step by step: patchify,
    class token, positional embedding, ln_pre, then every residual block's output
    (sequence first, as the release ran it): local = patch tokens as (B, C, p, p),
    global = class token."""
    x = visual.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.permute(1, 0, 2)
    local, global_ = {}, {}
    for i, block in enumerate(visual.transformer.resblocks):
        x = block(x)
        seq = x if batch_first else x.permute(1, 0, 2)  # (B, 1 + p², C)
        p = math.isqrt(seq.shape[1] - 1)
        local[str(i)] = seq[:, 1:].transpose(1, 2).reshape(seq.shape[0], -1, p, p)
        global_[str(i)] = seq[:, 0]
    return local, global_
