"""The Train panel's live map: a surface layer of the model being trained, redrawn with
each validation's selectors, removed when the run ends."""

from __future__ import annotations

from napari_factortopy._napari._common import apply_scene

__all__ = ["LivePreview"]


class LivePreview:
    """The "training (live)" surface layer of a run.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    layer : napari.layers.Surface or None
        The live layer while a run trains.
    scene : BrainScene or None
        Its scene (the start record's model, selectors updated at each validation).
    """

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.layer = None
        self.scene = None

    def show(self, model) -> None:
        """Add the layer of ``model`` (the start record's preview) and show it in 3-D."""
        from napari_factortopy._napari._layers import load_scene, surface_kwargs

        self.scene = load_scene(model)
        verts, faces = self.scene.layer_data()
        kwargs = surface_kwargs(self.scene, "training (live)")
        self.layer = self.viewer.add_surface((verts, faces), **kwargs)
        self.viewer.dims.ndisplay = 3

    def update(self, selectors: dict) -> None:
        """Redraw the layer with a validation's selectors (space, layer, scale)."""
        if self.layer is None:
            return
        m = self.scene.model
        m.space, m.layer, m.scale = selectors["space"], selectors["layer"], selectors["scale"]
        apply_scene(self.layer, self.scene, viewer=self.viewer)

    def remove(self) -> None:
        """Take the layer out of the viewer (if it is still there)."""
        if self.layer is not None and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
        self.layer = None
