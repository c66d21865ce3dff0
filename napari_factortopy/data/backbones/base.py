"""The backbone contract: errors, preprocessing, token layouts and :class:`Backbone`.

Every family module builds a :class:`Backbone`; this module holds what they share. A
:class:`Preprocessing` turns images into network input, a :class:`TokenLayout` says how
a hooked layer's output holds its tokens, and :class:`Backbone` hooks the chosen layers
and stops the forward pass once the last of them has run. :func:`resize_tokens` brings
local tokens onto a fixed grid; ``_finish`` fills a new backbone's widths with one blank
forward pass. torch and PIL are imported inside functions.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    token_resize : {"antialias", "bilinear"}
        How local tokens are brought onto a model's grid (:func:`resize_tokens`):
        ``"antialias"`` (default) or plain ``"bilinear"`` (the paper's release).
    grid : (h, w) or None
        The local-token grid a preset asks for (the paper's: 8×8); None: the caller's.
    preset : str or None
        The named convention the backbone follows (``"paper"``), recorded in its name.
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
    token_resize: str = "antialias"
    grid: tuple[int, int] | None = None
    preset: str | None = None
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

        modules = _check_layer_names(self.name, self.module, self.layer_names)
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
        """JSON-able summary (name, layers, widths, preprocessing, provenance; a preset's
        token resizing and grid when it sets them)."""
        out = {
            "name": self.name,
            "layer_names": list(self.layer_names),
            "widths": [int(w) for w in self.widths],
            "global_token": self.global_token,
            "preprocessing": self.preprocessing.to_dict(),
            "source": dict(self.source),
        }
        if self.token_resize != "antialias":
            out["token_resize"] = self.token_resize
        if self.grid is not None:
            out["grid"] = [int(g) for g in self.grid]
        if self.preset:
            out["preset"] = self.preset
        return out


def _check_layer_names(name: str, module: Any, layer_names: Sequence[str]) -> dict[str, Any]:
    """``module``'s named sub-modules; raises :class:`BackboneError` naming every layer
    that is not one of them (with close matches)."""
    modules = dict(module.named_modules())
    missing = [n for n in layer_names if n not in modules]
    if missing:
        raise BackboneError(_unknown_modules_message(name, missing, modules))
    return modules


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


#: How :func:`resize_tokens` may resize: anti-aliased bilinear (ours) or plain bilinear
#: (``F.interpolate(mode="bilinear", align_corners=False)``, the paper's release).
TOKEN_RESIZES = ("antialias", "bilinear")


def resize_tokens(local, grid: tuple[int, int], mode: str = "antialias"):
    """Resize local tokens bilinearly onto a fixed grid (anti-aliased when shrinking).

    Parameters
    ----------
    local : list of tensors of shape (B, C_l, h_l, w_l)
    grid : (h, w)
    mode : {"antialias", "bilinear"}
        ``"bilinear"``: no anti-aliasing (the paper's release downsamples 14×14 ViT
        tokens to 8×8 this way); a backbone's :attr:`Backbone.token_resize`.

    Returns
    -------
    list of tensors of shape (B, C_l, h, w)
    """
    from torch.nn import functional as F

    if mode not in TOKEN_RESIZES:
        raise BackboneError(f"token resizing must be one of {TOKEN_RESIZES}; found {mode!r}")
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
                    antialias=mode == "antialias",
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
