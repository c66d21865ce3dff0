"""Each model's name on the canvas, above its brain, while two or more models are shown
side by side (a second file, a training result, a comparison): the layer list alone
does not say which brain is which.

One Points layer per model (an invisible point carrying the name as text), kept above
the model's current mesh and view layout, moved with it (``translate``, ``data``) and
removed with it. Installed once per viewer by :func:`label_models`.
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_factortopy._napari._common import factortopy_layers, keep_selection

__all__ = ["NAME_KEY", "label_models", "name_position"]

#: Metadata key of a name layer; its value is the model layer's name.
NAME_KEY = "factortopy_name_of"


def name_position(vertices: np.ndarray) -> np.ndarray:
    """Where a brain's name goes, in its data coordinates: centred left to right, a
    tenth of its height above its top (screen-up is −y in the panel's views).

    Parameters
    ----------
    vertices : array of shape (N, 3)
        The layer's vertices, (z, y, x).

    Returns
    -------
    array of shape (3,)
    """
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    return np.array([(lo[0] + hi[0]) / 2, lo[1] - 0.1 * (hi[1] - lo[1]), (lo[2] + hi[2]) / 2])


def _place(points, layer) -> None:
    """Put a name layer's point above its model layer's current vertices."""
    pos = name_position(layer.data[0])[None]
    if not np.allclose(points.data, pos):
        points.data = pos
    points.scale, points.translate = layer.scale, layer.translate


def _models(viewer) -> list:
    return [ly for ly in factortopy_layers(viewer) if ly.visible]


def _name_layers(viewer) -> dict:
    return {
        ly.metadata[NAME_KEY]: ly
        for ly in viewer.layers
        if NAME_KEY in getattr(ly, "metadata", {})
    }


def update_names(viewer) -> None:
    """Add, move or remove the name layers so that they match the models shown."""
    models = _models(viewer)
    shown = {ly.name: ly for ly in models} if len(models) >= 2 else {}
    names = _name_layers(viewer)
    for model_name, points in names.items():
        if model_name not in shown:
            viewer.layers.remove(points)
    for model_name, layer in shown.items():
        points = names.get(model_name)
        if points is None:
            with keep_selection(viewer):
                points = viewer.add_points(
                    name_position(layer.data[0])[None], name=f"{model_name} · name",
                    metadata={NAME_KEY: model_name}, features={"name": [model_name]},
                    text={"string": "{name}", "color": "white", "size": 14,
                          "anchor": "center"},
                    size=0, opacity=1.0, face_color="transparent", border_width=0,
                )  # fmt: skip
        _place(points, layer)


class _Names:
    """Keeps the name layers in step with the viewer's models (held weakly). Changes of
    the layer list are answered after the event (a layer list must not be changed
    while it emits); a model's move or new layout at once."""

    def __init__(self, viewer) -> None:
        self._viewer = weakref.ref(viewer)
        self._hooked: set[int] = set()
        self._pending = False

    def __call__(self, event=None) -> None:
        if self._pending:
            return
        self._pending = True
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._update)

    def _update(self) -> None:
        self._pending = False
        viewer = self._viewer()
        if viewer is None:
            return
        try:
            for layer in factortopy_layers(viewer):
                if id(layer) not in self._hooked:
                    self._hooked.add(id(layer))
                    for emitter in (layer.events.translate, layer.events.data,
                                    layer.events.visible):  # fmt: skip
                        emitter.connect(self._moved)
            update_names(viewer)
        except (RuntimeError, AttributeError, KeyError, ValueError):  # the viewer is closing
            return

    def _moved(self, event=None) -> None:
        viewer = self._viewer()
        if viewer is None:
            return
        if getattr(event, "type", "") == "visible":
            self()  # the set of names changes: after the event
            return
        try:
            names = _name_layers(viewer)
            layer = getattr(event, "source", None)
            points = names.get(getattr(layer, "name", None))
            if points is not None:
                _place(points, layer)
        except (RuntimeError, AttributeError, KeyError, ValueError):
            return


def label_models(viewer) -> None:
    """Install the model names on ``viewer`` once (see the module notes)."""
    events = viewer.layers.events
    if any(isinstance(cb, _Names) for cb in events.inserted.callbacks):
        return
    names = _Names(viewer)
    events.inserted.connect(names)
    events.removed.connect(names)
    names()
