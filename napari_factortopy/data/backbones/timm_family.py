"""The timm family: any timm model as a backbone (:func:`timm_backbone`).

Vision transformers hook every block and drop the prefix tokens (class, distillation,
registers) from the local grid; SAM's ``samvit_*`` blocks are NHWC with a mean global
token; CNNs hook the stages timm reports in ``feature_info`` (or every block). The
layer rules (``_timm_default_layers``) are shared with open_clip's timm-trunk towers.
The module is not named ``timm`` so that it can never shadow the library. timm is
imported inside functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    TokenLayout,
    WeightsNotFoundError,
    _check_layer_names,
    _finish,
)
from .names import _close_names
from .weights import _timm_weights


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
    _check_layer_names(name, model, layer_names)
    return _finish(bb)
