"""The stimulus panel: browse the model's stimuli and see what the brain would answer.

For the shown image: the model's predicted response as a map on the cortex and the
per-ROI top-channel RGB images (METHOD.md §5) as image layers beside the stimulus.
A dataset image's features come from the model's feature cache (the dataset record of
the model); any other image file is run through the model's own backbone
(``model.backbone``: name, hooked layers, widths, preprocessing), loaded once per
widget. Both go through :func:`predict_features`. torch is imported only when
predicting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

import napari_factortopy  # noqa: F401  (installs the Mesa/triton guard first)
from napari_factortopy._napari._brain_widget import ModelChoice, apply_scene
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._stimuli import dataset_info, read_image, stimulus_loader

if TYPE_CHECKING:
    import napari

__all__ = [
    "StimulusWidget",
    "image_features",
    "model_backbone",
    "predict_array",
    "predict_features",
    "predict_image",
]

PREDICTION = "prediction"


def _cache_path(model) -> Path | None:
    info = dataset_info(model)
    if info.get("kind") == "phantom" and info.get("root"):
        return Path(info["root"]) / "features.zarr"
    if info.get("kind") == "cache" and info.get("root"):
        return Path(info["root"])
    return None


def predict_image(model, index: int, rois=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predicted response and ROI top-channel images of one cached image.

    Parameters
    ----------
    model : FittedModel
    index : int
        Image index in the model's feature cache.
    rois : sequence of str, optional
        ROIs for :func:`~napari_factortopy.core.analyses.roi_top_channels` (default all).

    Returns
    -------
    response : array of shape (V,)
    top_channels : dict ROI name → array of shape (H, W, 3) in [0, 1]
    """
    from napari_factortopy.data.cache import FeatureCache

    path = _cache_path(model)
    if path is None or not path.exists():
        raise FileNotFoundError(
            "the model does not say where its feature cache is "
            "(model.extra['dataset']), or it is gone"
        )
    cache = FeatureCache.open(path)
    model.check_cache(cache)
    names = model.backbone.get("layer_names") or cache.layer_names
    local, global_ = cache.read(np.array([index]), layers=names)
    size = int((dataset_info(model).get("config") or {}).get("image_size", 224))
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

    from napari_factortopy.core.analyses import roi_top_channels

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

    from napari_factortopy.data.backbones import BackboneError, Preprocessing

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
    from napari_factortopy.data import backbones

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

    from napari_factortopy.data.backbones import resize_tokens

    x = backbone.preprocessing([image])
    param = next(backbone.module.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        local, global_ = backbone(x)
        local = resize_tokens(local, tuple(int(g) for g in grid))
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


class StimulusWidget(widgets.Container):
    """Image browser, predicted response map and ROI top-channel images.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.worker = None
        self.viewer = viewer
        self.model_choice = ModelChoice(viewer)
        self.index = widgets.Slider(label="image", min=0, max=0, value=0)
        self.file = widgets.FileEdit(label="or open", filter="*.png *.jpg *.jpeg *.bmp *.tif")
        self.rois = widgets.Select(label="ROIs", choices=[])
        self.predict_button = widgets.PushButton(text="Predict response + top channels")
        self.status = widgets.Label(label="status", value="")
        self.extend(
            [self.model_choice, self.index, self.file, self.rois, self.predict_button, self.status]
        )
        #: the opened image file's pixels (None: predict the slider's dataset image)
        self.file_image: np.ndarray | None = None
        self.file_name = ""
        #: backbones loaded for "open any image", by the model's backbone record
        self._backbones: dict[str, object] = {}
        self.model_choice.changed.connect(self._on_model)
        self.index.changed.connect(self._on_index)
        self.file.changed.connect(self._on_file)
        self.predict_button.changed.connect(self._on_predict)
        self._on_model()

    @property
    def layer(self):
        return self.model_choice.layer

    @property
    def scene(self):
        return None if self.layer is None else scene_for_layer(self.layer)

    def _on_model(self, _=None) -> None:
        scene = self.scene
        if scene is None:
            return
        m = scene.model
        self.rois.choices = [n for k, n in enumerate(m.roi_names, 1) if np.any(m.roi == k)]
        source = stimulus_loader(m)
        self.index.max = max(source[1] - 1, 0) if source else 0
        self.index.enabled = source is not None
        if source is not None:
            self._on_index(self.index.value)

    def _show(self, name: str, image: np.ndarray, column: int = 0) -> None:
        """Add or update an RGB image layer placed beside the brain (in the screen plane)."""
        img = np.asarray(image)
        verts = np.asarray(self.layer.data[0]) if self.layer is not None else np.zeros((1, 3))
        side = float(np.ptp(verts[:, 1])) if len(verts) > 1 else 100.0
        scale = 0.5 * side / img.shape[0]
        top = float(verts[:, 1].min())
        left = float(verts[:, 2].max()) + 10 + column * (img.shape[1] * scale + 5)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = img
        else:
            self.viewer.add_image(
                img, name=name, rgb=True, scale=(scale, scale), translate=(top, left)
            )

    def _on_index(self, value: int | None = None) -> None:
        scene = self.scene
        source = None if scene is None else stimulus_loader(scene.model)
        if source is None:
            return
        self.file_image = None
        image = source[0](np.array([int(self.index.value if value is None else value)]))[0]
        scene.stimulus = image
        self._show("stimulus", image)

    def _on_file(self, value=None) -> None:
        path = Path(str(value or self.file.value))
        if not path.is_file() or self.scene is None:
            return
        try:
            image = read_image(path)
        except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
            from napari.utils.notifications import show_warning

            show_warning(f"cannot open {path.name}: {exc}")
            return
        self.file_image = self.scene.stimulus = image
        self.file_name = path.name
        self._show("stimulus", image)
        self.status.value = f"{path.name}: predict runs the model's backbone on it"

    def backbone(self, model):
        """The model's backbone (:func:`model_backbone`), loaded once per widget."""
        import json

        key = json.dumps([model.backbone, model.config.get("widths")], sort_keys=True, default=str)
        if key not in self._backbones:
            self._backbones[key] = model_backbone(model)
        return self._backbones[key]

    def _predict(self, model, rois):
        if self.file_image is not None:
            bb = self.backbone(model)
            return predict_array(model, self.file_image, bb, rois), self.file_name
        index = int(self.index.value)
        return predict_image(model, index, rois), f"image {index}"

    def _on_predict(self, _=None, block: bool = False):
        """Predict for the shown stimulus.

        Runs in a ``thread_worker`` (a backbone on the CPU can take seconds) and returns
        the worker; ``block=True`` computes in the calling thread (tests, scripts).
        """
        scene = self.scene
        if scene is None:
            return None
        model, rois = scene.model, list(self.rois.value)
        if block:
            try:
                result = self._predict(model, rois)
            except (FileNotFoundError, ValueError, KeyError, ImportError) as exc:
                self._on_predict_error(exc)
                return None
            self._show_prediction(scene, result)
            return None
        from napari.qt.threading import thread_worker

        worker = thread_worker(self._predict, start_thread=False)(model, rois)
        worker.returned.connect(lambda result: self._show_prediction(scene, result))
        worker.errored.connect(self._on_predict_error)
        self.status.value = "predicting…"
        self.worker = worker
        worker.start()
        return worker

    def _on_predict_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_warning

        # includes WeightsNotFoundError (says what to fetch) and BackboneError
        show_warning(f"cannot predict: {exc}")
        self.status.value = f"cannot predict: {exc}"

    def _show_prediction(self, scene, result) -> None:
        from napari_factortopy.core import colours

        (response, tops), what = result
        lim = float(np.max(np.abs(response))) or 1.0
        scene.custom[PREDICTION] = (
            colours.weight_rgba(response, -lim, lim, cmap="coolwarm"),
            response,
        )
        scene.map_name = PREDICTION
        apply_scene(self.layer, scene)
        for k, (roi, rgb) in enumerate(tops.items(), start=1):
            self._show(f"top channels {roi}", (np.clip(rgb, 0, 1) * 255).astype(np.uint8), k)
        self.status.value = f"{what}: response ±{lim:.2f}, {len(tops)} ROIs"
        self.last = (response, tops)
