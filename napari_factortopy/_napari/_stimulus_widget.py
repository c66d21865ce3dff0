"""The stimulus panel: browse the model's stimuli and see what the brain would answer.

For the shown image: the model's predicted response as a map on the cortex and the
per-ROI top-channel RGB images (METHOD.md §5) as image layers beside the stimulus.
A dataset image's features come from the model's feature cache (the dataset record of
the model, found beside a moved model file, or in a folder chosen with "locate data
folder…"); any other image file is run through the model's own backbone
(``model.backbone``: name, hooked layers, widths, preprocessing), loaded once per
widget. The computation is :mod:`napari_factortopy.app.stimulus_prediction` (through
:mod:`napari_factortopy.app.predict`); torch is imported only when predicting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui import widgets

from napari_factortopy._napari._common import ModelChoice, apply_scene, keep_selection
from napari_factortopy._napari._data import missing_data, stimuli_for
from napari_factortopy._napari._layers import scene_for_layer
from napari_factortopy.app.stimulus_prediction import (
    cached_backbone,
    data_folder_line,
    drop_prediction_map,
    image_row,
    predict_stimulus,
    present_rois,
    show_prediction_map,
    top_channel_pixels,
)
from napari_factortopy.core.resources import sample_stimuli
from napari_factortopy.data.stimuli import read_image

if TYPE_CHECKING:
    import napari

__all__ = ["StimulusWidget"]

#: The "or a sample" choice that opens nothing.
NO_SAMPLE = "—"


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
        self.index = widgets.Slider(
            label="image", min=0, max=0, value=0, tooltip="image of the model's dataset"
        )
        self.file = widgets.FileEdit(
            label="or open",
            filter="*.png *.jpg *.jpeg *.bmp *.tif",
            tooltip="any image file: predicted through the model's own backbone",
        )
        self.sample = widgets.ComboBox(
            label="or a sample",
            choices=[NO_SAMPLE, *sample_stimuli()],
            value=NO_SAMPLE,
            tooltip="a sample photograph shipped with the plugin (crops of scikit-image's "
            "bundled photographs, licences in resources/stimuli/stimuli.csv)",
        )
        self.rois = widgets.Select(
            label="ROIs", choices=self._roi_names, tooltip="ROIs whose top channels are shown"
        )
        self.predict_button = widgets.PushButton(
            text="Predict response + top channels",
            tooltip="the model's predicted response to the shown image, as a map",
        )
        self.locate_button = widgets.PushButton(
            text="locate data folder…",
            visible=False,
            tooltip="the model's data folder is not where it was trained: point at it",
        )
        self.status = widgets.Label(label="status", value="")
        self.extend(
            [self.model_choice, self.index, self.file, self.sample, self.rois, self.predict_button,
             self.locate_button, self.status]
        )  # fmt: skip
        #: the opened image file's pixels (None: predict the slider's dataset image)
        self.file_image: np.ndarray | None = None
        self.file_name = ""
        #: backbones loaded for "open any image", by the model's backbone record
        self._backbones: dict[str, object] = {}
        #: ROIs whose top-channel images are shown (of the prediction on screen)
        self._tops: list[str] = []
        #: counts the stimuli shown: a prediction for an earlier one is not shown
        self._generation = 0
        #: the map the brain showed before the prediction (shown again when it is stale)
        self._map_before = "layer"
        self._followed = None  # the layer whose geometry the images follow
        self.model_choice.changed.connect(self._on_model)
        self.index.changed.connect(self._on_index)
        self.file.changed.connect(self._on_file)
        self.sample.changed.connect(self._on_sample)
        self.predict_button.changed.connect(self._on_predict)
        self.locate_button.changed.connect(self._on_locate)
        self._on_model()

    @property
    def layer(self):
        return self.model_choice.layer

    @property
    def scene(self):
        return None if self.layer is None else scene_for_layer(self.layer)

    def _roi_names(self, _widget=None) -> list[str]:
        scene = self.scene
        return [] if scene is None else present_rois(scene.model)

    def _on_model(self, _=None) -> None:
        scene = self.scene
        if scene is None:
            return
        self.rois.reset_choices()
        if self._followed is not self.layer:  # a view or mesh switch moves the images
            if self._followed is not None:
                self._followed.events.data.disconnect(self._place_images)
            self._followed = self.layer
            self._followed.events.data.connect(self._place_images)
        source = stimuli_for(scene)
        self.locate_button.visible = bool(missing_data(scene, notify=False))
        self.index.max = max(source[1] - 1, 0) if source else 0
        self.index.enabled = source is not None
        if source is not None:
            self._on_index(self.index.value)

    def _on_locate(self, _=None) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(None, "The model's data folder")
        if folder:
            self._on_data_folder(folder)

    def _on_data_folder(self, folder: str | Path) -> list[str]:
        """Use ``folder`` as the model's data folder; returns what is still missing."""
        scene = self.scene
        if scene is None:
            return []
        scene.data_root = str(folder)
        missing = missing_data(scene, notify=False)
        self.status.value = data_folder_line(folder, missing)
        self._on_model()
        return missing

    def _show(self, name: str, image: np.ndarray) -> None:
        """Add or update an RGB image layer in the row of images beside the brain; a new
        layer brings the camera to frame the brain and every image."""
        img = np.asarray(image)
        added = name not in self.viewer.layers
        if added:
            with keep_selection(self.viewer):
                self.viewer.add_image(img, name=name, rgb=True)
        else:
            self.viewer.layers[name].data = img
        self._place_images()
        if added and self.viewer.dims.ndisplay == 3:
            self.viewer.fit_to_view()

    def _image_names(self) -> list[str]:
        """The stimulus and top-channel layers shown, left to right."""
        names = ["stimulus", *(f"top channels {roi}" for roi in self._tops)]
        return [n for n in names if n in self.viewer.layers]

    def _place_images(self, _event=None) -> None:
        """Place the images in a row right of the brain (:func:`image_row`)."""
        if self.layer is None or self.layer not in self.viewer.layers:
            return
        shown = [self.viewer.layers[name] for name in self._image_names()]
        row = image_row(self.layer.extent.world, [ly.data.shape[:2] for ly in shown])
        for ly, (scale, translate) in zip(shown, row, strict=True):
            ly.scale, ly.translate = (scale, scale), translate

    def _on_index(self, value: int | None = None) -> None:
        scene = self.scene
        source = None if scene is None else stimuli_for(scene)
        if source is None:
            return
        self.file_image = None
        index = int(self.index.value if value is None else value)
        image = scene.stimulus = source[0](np.array([index]))[0]
        self._drop_prediction(f"image {index}")
        self._show("stimulus", image)

    def _on_sample(self, name: str | None = None) -> None:
        name = name or self.sample.value
        if name and name != NO_SAMPLE:
            self.file.value = sample_stimuli()[name]  # opened like any image file

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
        self._drop_prediction(path.name)
        self._show("stimulus", image)
        self.status.value = f"{path.name}: predict runs the model's backbone on it"

    def _drop_prediction(self, what: str) -> None:
        """A new stimulus is shown: the last one's prediction leaves the screen (its
        brain map, its top-channel images, its status line), and a prediction still
        running for it will not be shown."""
        self._generation += 1
        for name in self._image_names()[1:]:
            self.viewer.layers.remove(name)
        self._tops = []
        scene, layer = self.scene, self.layer
        if scene is None or not drop_prediction_map(scene, self._map_before):
            return
        if layer is not None and layer in self.viewer.layers:
            apply_scene(layer, scene, viewer=self.viewer)
        self.status.value = f"{what}: press Predict for its response"

    def backbone(self, model):
        """The model's backbone (:func:`~napari_factortopy.app.predict.model_backbone`),
        loaded once per widget."""
        return cached_backbone(self._backbones, model)

    def _predict(self, scene, rois):
        index = int(self.index.value)
        return predict_stimulus(scene, rois, self.file_image, self.file_name, index, self.backbone)

    def _on_predict(self, _=None, block: bool = False):
        """Predict for the shown stimulus.

        Runs in a ``thread_worker`` (a backbone on the CPU can take seconds) and returns
        the worker; ``block=True`` computes in the calling thread (tests, scripts).
        """
        scene, layer = self.scene, self.layer
        if scene is None:
            return None
        rois, generation = list(self.rois.value), self._generation
        if block:
            try:
                result = self._predict(scene, rois)
            except (FileNotFoundError, ValueError, KeyError, ImportError) as exc:
                self._on_predict_error(exc)
                return None
            self._show_prediction(layer, scene, result, generation)
            return None
        from napari.qt.threading import thread_worker

        worker = thread_worker(self._predict, start_thread=False)(scene, rois)
        worker.returned.connect(
            lambda result: self._show_prediction(layer, scene, result, generation)
        )
        worker.errored.connect(self._on_predict_error)
        self.status.value = "predicting…"
        self.worker = worker
        worker.start()
        return worker

    def _on_predict_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_warning

        self.status.value = f"cannot predict: {exc}"
        scene = self.scene
        if isinstance(exc, FileNotFoundError) and scene is not None and missing_data(scene):
            self.locate_button.visible = True  # missing_data told the user (once)
            return
        # includes WeightsNotFoundError (says what to fetch) and BackboneError
        show_warning(f"cannot predict: {exc}")

    def _show_prediction(self, layer, scene, result, generation: int | None = None) -> None:
        if generation is not None and generation != self._generation:
            return  # the stimulus changed while it ran: its prediction is stale
        (response, tops), what = result
        before, lim = show_prediction_map(scene, response)
        if before is not None:
            self._map_before = before
        self.status.value = f"{what}: response ±{lim:.2f}, {len(tops)} ROIs"
        self.last = (response, tops)
        if layer is not None and layer in self.viewer.layers:
            apply_scene(layer, scene, viewer=self.viewer)
        for name in self._image_names()[1:]:  # ROIs no longer asked for
            if name.removeprefix("top channels ") not in tops:
                self.viewer.layers.remove(name)
        self._tops = list(tops)
        for roi, rgb in tops.items():
            self._show(f"top channels {roi}", top_channel_pixels(rgb))
