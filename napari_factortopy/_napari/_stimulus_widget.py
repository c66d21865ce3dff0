"""The stimulus panel: browse the model's stimuli and see what the brain would answer.

For the shown image: the model's predicted response as a map on the cortex and the
per-ROI top-channel RGB images (METHOD.md §5) as image layers beside the stimulus.
Predictions read the image's features from the model's feature cache (the dataset
record of the model); torch is imported only when predicting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui import widgets

import napari_factortopy  # noqa: F401  (installs the Mesa/triton guard first)
from napari_factortopy._napari._brain_widget import ModelChoice, apply_scene
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy._napari._stimuli import dataset_info, read_image, stimulus_loader

__all__ = ["StimulusWidget", "predict_image"]

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
    import torch

    from napari_factortopy.core.analyses import roi_top_channels
    from napari_factortopy.data.cache import FeatureCache

    path = _cache_path(model)
    if path is None or not path.exists():
        raise FileNotFoundError(
            "the model does not say where its feature cache is "
            "(model.extra['dataset']), or it is gone"
        )
    cache = FeatureCache.open(path)
    names = model.backbone.get("layer_names") or cache.layer_names
    local, global_ = cache.read(np.array([index]), layers=names)
    module = model.to_module("cpu").eval()
    with torch.no_grad():
        loc = [torch.from_numpy(a) for a in local]
        glo = [torch.from_numpy(a) for a in global_]
        response = module(loc, glo).float().numpy()[0]
        aligned = module.aligned_local(loc).float().numpy()[0]  # (L, D, h, w)
    size = int((dataset_info(model).get("config") or {}).get("image_size", 224))
    tops = {}
    if np.any(model.roi > 0):
        tops = roi_top_channels(
            aligned,
            model.layer,
            model.beta,
            model.roi,
            model.roi_names,
            out_size=(size, size),
            rois=rois or None,
        )
    return response, tops


class StimulusWidget(widgets.Container):
    """Image browser, predicted response map and ROI top-channel images.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer) -> None:
        super().__init__(labels=True)
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
        image = source[0](np.array([int(self.index.value if value is None else value)]))[0]
        scene.stimulus = image
        self._show("stimulus", image)

    def _on_file(self, value=None) -> None:
        path = Path(str(value or self.file.value))
        if not path.is_file() or self.scene is None:
            return
        self.scene.stimulus = read_image(path)
        self._show("stimulus", self.scene.stimulus)
        self.status.value = "predictions need a cached image (use the image slider)"

    def _on_predict(self, _=None) -> None:
        from napari.utils.notifications import show_warning

        from napari_factortopy.core import colours

        scene = self.scene
        if scene is None:
            return
        try:
            response, tops = predict_image(
                scene.model, int(self.index.value), list(self.rois.value)
            )
        except (FileNotFoundError, ValueError, KeyError) as exc:
            show_warning(f"cannot predict: {exc}")
            self.status.value = f"cannot predict: {exc}"
            return
        lim = float(np.max(np.abs(response))) or 1.0
        scene.custom[PREDICTION] = (
            colours.weight_rgba(response, -lim, lim, cmap="coolwarm"),
            response,
        )
        scene.map_name = PREDICTION
        apply_scene(self.layer, scene)
        for k, (roi, rgb) in enumerate(tops.items(), start=1):
            self._show(f"top channels {roi}", (np.clip(rgb, 0, 1) * 255).astype(np.uint8), k)
        self.status.value = f"image {int(self.index.value)}: response ±{lim:.2f}, {len(tops)} ROIs"
        self.last = (response, tops)
