"""Backbone adapters: images → per layer, local tokens and a global token.

The adapter contract (METHOD.md §1) is :class:`Backbone`: ``backbone(x)`` takes a
preprocessed batch (B, 3, H, W) and returns, for each of its L layers, local tokens
``(B, C_l, h_l, w_l)`` and a global token ``(B, C_l)``.
:func:`resize_tokens` brings local tokens onto the model's fixed grid.

Families
--------
- :func:`timm_backbone`: any timm model. Vision transformers (supervised, DeiT incl.
  distilled, MAE, DINOv2 with or without register tokens, EVA): every block is a layer,
  block outputs are ``(B, prefix + h·w, C)``; the prefix tokens (class, distillation,
  registers) are dropped from the local grid and the class token is the global token.
  SAM's ``samvit_*`` blocks output ``(B, h, w, C)`` and have no class token: the global
  token is the mean of the local tokens. CNNs (ResNet, ConvNeXt, EfficientNet, …):
  the stages timm reports in ``feature_info`` (or every block with ``layers="blocks"``),
  global token = mean pool.
- :func:`open_clip_backbone`: any open_clip model name + pretrained tag (image tower
  only). ViT towers: every residual block; the block layout (batch-first or
  sequence-first) is read from the transformer and checked on every call. timm-trunk
  towers (ConvNeXt CLIP) go through the timm rules; ModifiedResNet uses its 4 stages.
- :func:`from_module`: any ``torch.nn.Module`` plus a list of module names.
- :func:`efficientnet_lite0`: the offline pretrained EfficientNet-Lite0 (16 blocks).
- :func:`load_backbone`: one entry point taking a name (``"timm:NAME"``,
  ``"open_clip:MODEL@TAG"``, ``"efficientnet_lite0"``, ``"module:pkg.mod:factory"``
  or a bare timm name).

Weights
-------
Nothing is downloaded unless ``allow_download=True``: weights come from the local
Hugging Face / torch hub cache or a file path. A missing weight raises
:class:`WeightsNotFoundError` at once, naming what to fetch and where to put it.
``weights="random"`` builds the architecture with random weights (tests, benchmarks).

Layers are collected with forward hooks; the forward pass stops as soon as the last
requested layer has run (the rest of the network, e.g. the head, is skipped).

torch, timm and open_clip are imported inside functions so that importing this package
is cheap.

Package map
-----------
- :mod:`.base`: the contract — :class:`BackboneError`, :class:`WeightsNotFoundError`,
  :class:`Preprocessing`, :class:`TokenLayout`, :class:`Backbone`,
  :func:`resize_tokens` and ``_finish`` (widths from one blank forward pass).
- :mod:`.weights`: local weight lookup (Hugging Face cache, torch hub,
  :func:`torch_hub_dir`, open_clip's files).
- :mod:`.names`: close-name suggestions for unknown backbone names.
- :mod:`.generic`: :func:`from_module` and ``module:`` factories.
- :mod:`.timm_family`: :func:`timm_backbone` and the timm layer rules.
- :mod:`.open_clip_family`: :func:`open_clip_backbone`.
- :mod:`.efficientnet`: :func:`efficientnet_lite0`.
- :mod:`.registry`: :func:`load_backbone`, the name → family entry point.

Private helpers are looked up in the submodule that defines them: patch them there
(e.g. ``napari_factortopy.data.backbones.weights._hf_cache_dir``), not on this package.
"""

from __future__ import annotations

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    TokenLayout,
    WeightsNotFoundError,
    resize_tokens,
)
from .efficientnet import efficientnet_lite0
from .generic import from_module
from .open_clip_family import open_clip_backbone
from .registry import load_backbone
from .timm_family import timm_backbone
from .weights import torch_hub_dir

__all__ = [
    "Backbone",
    "BackboneError",
    "Preprocessing",
    "TokenLayout",
    "WeightsNotFoundError",
    "efficientnet_lite0",
    "from_module",
    "load_backbone",
    "open_clip_backbone",
    "resize_tokens",
    "timm_backbone",
    "torch_hub_dir",
]
