"""The open_clip family: the image tower of an open_clip model as a backbone.

:func:`open_clip_backbone` takes a model name and a pretrained tag. ViT towers hook
every residual block (batch-first or sequence-first, read from the transformer),
timm-trunk towers (ConvNeXt CLIP) follow the timm rules, and ModifiedResNet hooks its
4 stages. open_clip is imported inside functions.
"""

from __future__ import annotations

import difflib
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
from .timm_family import _timm_default_layers
from .weights import _open_clip_weights

#: Named token conventions, chosen with ``open_clip:MODEL@TAG+NAME`` (or ``preset=``).
#: ``"paper"``: the paper's release (huzeyann/BrainDecodesDeepNets, ``ModifiedCLIP``):
#: every residual block's raw output (before ``ln_post``), the class token as the global
#: token, the patch tokens brought onto an 8×8 grid by plain bilinear interpolation
#: (``F.interpolate(..., (8, 8), mode="bilinear", align_corners=False)``, no
#: anti-aliasing), and images resized to the input size without cropping (PIL bilinear,
#: aspect ratio not kept) and normalised with ImageNet's mean and std (not CLIP's).
PRESETS = ("paper",)
#: The paper's backbone: open_clip ViT-B-16 trained on DataComp-L, in its convention.
PAPER_BACKBONE = "open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper"
#: The release's local-token grid (its ``PLModel.downsample_local_tokens``).
PAPER_GRID = (8, 8)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def paper_backbone_record(blocks: Sequence[int] = tuple(range(12))) -> dict:
    """What ``load_backbone(PAPER_BACKBONE).describe()`` records, without building it.

    The paper's ViT-B-16 has 12 residual blocks of width 768 and a 224-pixel input; a
    model file needs only this record to be shown, and the network (with its weights)
    only to predict new images. ``tests/data/test_backbones.py`` checks the two agree.

    Parameters
    ----------
    blocks : sequence of int
        The blocks (0..11) a model reads, in its order.

    Returns
    -------
    dict
        ``name``, ``layer_names``, ``widths``, ``global_token``, ``preprocessing``,
        ``source`` (no weights file), ``token_resize``, ``grid``, ``preset``.
    """
    blocks = [int(b) for b in blocks]
    if not blocks or min(blocks) < 0 or max(blocks) > 11:
        raise BackboneError(
            f"{PAPER_BACKBONE}: expected block numbers 0..11 (ViT-B-16 has 12); found {blocks}"
        )
    prep = Preprocessing(
        input_size=224,
        crop_pct=1.0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        resize_mode="squash",
    )
    return {
        "name": PAPER_BACKBONE,
        "layer_names": [f"transformer.resblocks.{b}" for b in blocks],
        "widths": [768] * len(blocks),
        "global_token": "class",
        "preprocessing": prep.to_dict(),
        "source": {
            "library": "open_clip",
            "model": "ViT-B-16",
            "pretrained": "datacomp_l_s1b_b8k",
        },
        "token_resize": "bilinear",
        "grid": list(PAPER_GRID),
        "preset": "paper",
    }


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
    preset: str | None = None,
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
    preset : {"paper"}, optional
        A named token convention (:data:`PRESETS`; ViT towers only): ``"paper"`` keeps
        the raw block outputs and the class token but resizes local tokens without
        anti-aliasing onto the release's 8×8 grid and preprocesses images as the release
        did (squash to the input size, bilinear, ImageNet mean/std). The backbone's name
        ends in ``+paper`` so that a model file records it.

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
    tag = pretrained
    source: dict[str, Any] = {"library": "open_clip", "model": model_name, "pretrained": tag}
    if model is None:
        model = _build_model(model_name, tag, weights, allow_download, cache_dir, source)
    visual = model.visual
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    prep = _tower_preprocessing(visual, model_name, tag, preprocess_cfg)
    name = model_name + (f"@{tag}" if tag else "")
    if preset is not None and preset not in PRESETS:
        raise BackboneError(f"unknown backbone preset {preset!r}; known presets: {PRESETS}")
    trunk = getattr(visual, "trunk", None)
    if preset is not None and (trunk is not None or not hasattr(visual, "transformer")):
        raise BackboneError(
            f"open_clip {model_name}: the {preset!r} preset needs a ViT image tower; found "
            f"{type(visual).__name__}"
        )
    names, layout, glob = _tower_layers(visual, model_name, layers)
    extra: dict[str, Any] = {}
    if preset == "paper":
        prep = Preprocessing(
            input_size=prep.input_size,
            crop_pct=1.0,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bilinear",
            resize_mode="squash",
        )
        extra = {"token_resize": "bilinear", "grid": PAPER_GRID, "preset": preset}
        name += f"+{preset}"
    bb = Backbone(
        name=f"open_clip:{name}",
        module=visual,
        layer_names=names,
        widths=[],
        preprocessing=prep,
        global_token=glob,
        layout=layout,
        source=source,
        **extra,
    )
    _check_layer_names(bb.name, visual, names)
    return _finish(bb)


def _build_model(
    model_name: str,
    tag: str | None,
    weights: str | os.PathLike | None,
    allow_download: bool,
    cache_dir: str | os.PathLike | None,
    source: dict[str, Any],
) -> Any:
    """Build the open_clip model with its weights (arguments as in
    :func:`open_clip_backbone`); records the weights file (or ``"random"``) in
    ``source["weights"]``."""
    import open_clip

    known = open_clip.list_models()
    if model_name not in known and not model_name.startswith(("hf-hub:", "local-dir:")):
        close = difflib.get_close_matches(model_name, known, n=6, cutoff=0.5)
        raise BackboneError(
            f"unknown open_clip model {model_name!r}; close matches: {', '.join(close) or 'none'}"
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
    return model


def _tower_preprocessing(
    visual: Any, model_name: str, tag: str | None, preprocess_cfg: dict | None
) -> Preprocessing:
    """The image tower's preprocessing: its own config, else the pretrained tag's,
    with ``preprocess_cfg``'s overrides."""
    import open_clip

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
    return prep


def _tower_layers(
    visual: Any, model_name: str, layers: Sequence[str] | str | None
) -> tuple[list[str], TokenLayout, str]:
    """The layers an image tower is read at (``layers`` or the tower kind's default:
    a timm trunk's rules, a ViT's residual blocks, a ModifiedResNet's stages), their
    token layout and the global token."""
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
    return names, layout, glob
