"""One image through a model: its predicted response and ROI top-channel images.

A dataset image's features come from the model's feature cache (the dataset record
of the model); any other image is run through the model's own backbone
(``model.backbone``: name, hooked layers, widths, preprocessing). Both go through
:func:`predict_features`. torch is imported only when predicting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.stimuli import dataset_info

__all__ = [
    "image_features",
    "model_backbone",
    "predict_array",
    "predict_features",
    "predict_image",
]


def _cache_path(model, model_path=None, data_root=None) -> tuple[Path | None, list[str]]:
    """The model's feature cache as found here, and the recorded paths not found."""
    info = dataset_info(model, model_path, data_root)
    missing = list(info.get("missing", []))
    if info.get("cache") and str(info["cache"]) not in missing:
        return Path(info["cache"]), missing
    if info.get("kind") == "phantom" and info.get("root") and info["root"] not in missing:
        return Path(info["root"]) / "features.zarr", missing
    if info.get("kind") == "cache" and info.get("root") and info["root"] not in missing:
        return Path(info["root"]), missing
    return None, missing


def predict_image(
    model, index: int, rois=None, *, model_path=None, data_root=None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predicted response and ROI top-channel images of one cached image.

    Parameters
    ----------
    model : FittedModel
    index : int
        Image index in the model's feature cache.
    rois : sequence of str, optional
        ROIs for :func:`~napari_factortopy.core.analyses.roi_top_channels` (default all).
    model_path : path, optional
        The model file: a data folder moved with it is found beside it.
    data_root : path, optional
        A data folder chosen by the user (replaces the recorded one).

    Returns
    -------
    response : array of shape (V,)
    top_channels : dict ROI name → array of shape (H, W, 3) in [0, 1]

    Raises
    ------
    FileNotFoundError
        The feature cache is not found (the message names the recorded path).
    """
    from ..data.cache import FeatureCache

    path, missing = _cache_path(model, model_path, data_root)
    if path is None or not path.exists():
        where = ", ".join(missing) or (str(path) if path else "")
        raise FileNotFoundError(
            f"the model's feature cache is not found ({where}); it was not beside the "
            "model file either: locate its data folder"
            if where
            else "the model does not say where its feature cache is (model.extra['dataset'])"
        )
    cache = FeatureCache.open(path)
    model.check_cache(cache)
    names = model.backbone.get("layer_names") or cache.layer_names
    local, global_ = cache.read(np.array([index]), layers=names)
    size = int(
        (dataset_info(model, model_path, data_root).get("config") or {}).get("image_size", 224)
    )
    return predict_features(model, local, global_, rois, out_size=(size, size))


def predict_features(
    model, local, global_, rois=None, out_size: tuple[int, int] = (224, 224)
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predicted response and ROI top-channel images from one image's features.

    Parameters
    ----------
    model : FittedModel
    local : list of L arrays of shape (1, C_l, h, w)
        Local tokens on the model's grid.
    global_ : list of L arrays of shape (1, C_l)
    rois : sequence of str, optional
        ROIs for the top-channel images (default all).
    out_size : (int, int)
        Size of the top-channel images.

    Returns
    -------
    response : array of shape (V,)
    top_channels : dict ROI name → array of shape (H, W, 3) in [0, 1]
    """
    import torch

    from ..core.analyses import roi_top_channels

    module = model.to_module("cpu").eval()
    with torch.no_grad():
        loc = [torch.as_tensor(np.asarray(a)) for a in local]
        glo = [torch.as_tensor(np.asarray(a)) for a in global_]
        # a phantom's truth has fixed selectors, not MLPs: predict with those
        sel = model.fixed_selectors() if model.kind == "phantom-truth" else None
        response = module(loc, glo, sel).float().numpy()[0]
        aligned = module.aligned_local(loc).float().numpy()[0]  # (L, D, h, w)
    tops = {}
    if np.any(model.roi > 0):
        tops = roi_top_channels(
            aligned,
            model.layer,
            model.beta,
            model.roi,
            model.roi_names,
            out_size=tuple(int(s) for s in out_size),
            rois=rois or None,
        )
    return response, tops


def _preprocessing(record: dict):
    """A :class:`~napari_factortopy.data.backbones.Preprocessing` from its recorded dict."""
    from dataclasses import fields

    from ..data.backbones import BackboneError, Preprocessing

    known = {f.name for f in fields(Preprocessing)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise BackboneError(
            f"the model's preprocessing record has unknown fields {unknown} "
            f"(expected some of {sorted(known)})"
        )
    kwargs = {
        k: tuple(float(x) for x in v) if k in ("mean", "std") else v for k, v in record.items()
    }
    if isinstance(kwargs.get("input_size"), list | tuple):
        kwargs["input_size"] = tuple(int(x) for x in kwargs["input_size"])
    return Preprocessing(**kwargs)


def model_backbone(model, **kwargs):
    """The model's own backbone: its recorded network, hooked layers and preprocessing.

    Parameters
    ----------
    model : FittedModel
        ``model.backbone`` names the network (``name``), the hooked layers
        (``layer_names``) and the preprocessing the feature cache was made with.
    **kwargs
        Passed to :func:`~napari_factortopy.data.backbones.load_backbone`
        (e.g. ``weights``, ``allow_download``, ``cache_dir``). Nothing is downloaded
        unless ``allow_download=True``.

    Returns
    -------
    Backbone

    Raises
    ------
    napari_factortopy.data.backbones.WeightsNotFoundError
        The weights are not on this machine (the message says how to get them).
    napari_factortopy.data.backbones.BackboneError
        The model does not record its backbone, or the backbone's layers or channel
        widths differ from the model's.
    """
    from ..data import backbones

    record = dict(model.backbone or {})
    name, names = record.get("name"), list(record.get("layer_names") or [])
    if not name or not names:
        raise backbones.BackboneError(
            "the model does not record its backbone (model.backbone needs 'name' and "
            "'layer_names'); only images of its feature cache can be predicted"
        )
    bb = backbones.load_backbone(str(name), layers=names, **kwargs)
    if list(bb.layer_names) != names:
        raise backbones.BackboneError(
            f"backbone {name}: hooked layers {list(bb.layer_names)} are not the model's {names}"
        )
    if record.get("preprocessing"):
        bb.preprocessing = _preprocessing(dict(record["preprocessing"]))
    if record.get("token_resize"):  # a preset's (the paper's: plain bilinear)
        bb.token_resize = str(record["token_resize"])
    want = [int(w) for w in (model.config.get("widths") or record.get("widths") or [])]
    got = [int(w) for w in bb.widths]
    if got != want:
        raise backbones.BackboneError(
            f"backbone {name} gives channel widths {got} at layers {names}, but the model "
            f"was fitted on widths {want}: it was trained on other features"
        )
    return bb


def image_features(backbone, image, grid) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One image's local tokens on ``grid`` and global tokens, as the feature cache holds.

    Parameters
    ----------
    backbone : Backbone
    image : uint8 array of shape (H, W, 3) or PIL image
    grid : (int, int)
        The model's token grid (``model.config["grid"]``).

    Returns
    -------
    local : list of L float32 arrays of shape (1, C_l, *grid)
    global_ : list of L float32 arrays of shape (1, C_l)
    """
    import torch

    from ..data.backbones import resize_tokens

    x = backbone.preprocessing([image])
    param = next(backbone.module.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        local, global_ = backbone(x)
        local = resize_tokens(
            local, tuple(int(g) for g in grid), getattr(backbone, "token_resize", "antialias")
        )
    return (
        [t.float().cpu().numpy() for t in local],
        [t.float().cpu().numpy() for t in global_],
    )


def predict_array(
    model, image, backbone=None, rois=None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predicted response and ROI top-channel images of any image.

    Parameters
    ----------
    model : FittedModel
    image : uint8 array of shape (H, W, 3) or PIL image
    backbone : Backbone, optional
        The model's backbone (default: :func:`model_backbone`, loaded now).
    rois : sequence of str, optional

    Returns
    -------
    response, top_channels
        As :func:`predict_image`; the top-channel images have the network input size.
    """
    backbone = backbone or model_backbone(model)
    local, global_ = image_features(backbone, image, model.config["grid"])
    return predict_features(model, local, global_, rois, out_size=backbone.preprocessing.size_hw)
