"""Every widget of the manifest opens from napari's Plugins menu (viewer injected)."""

from pathlib import Path

import pytest
import yaml

MANIFEST = yaml.safe_load((Path(__file__).parents[2] / "napari.yaml").read_text())
WIDGETS = [w["display_name"] for w in MANIFEST["contributions"]["widgets"]]


@pytest.mark.parametrize("name", WIDGETS)
def test_widget_docks_from_the_plugins_menu(make_napari_viewer, name):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-factortopy", name)
    assert widget.viewer is viewer or getattr(widget.viewer, "__wrapped__", None) is viewer


def test_dropping_a_model_switches_to_3d(make_napari_viewer, tmp_path):
    from napari_factortopy.core.fitted_model import FittedModel
    from tests.core.test_fitted import _fitted

    _, fitted = _fitted()
    path = FittedModel.save(fitted, tmp_path / "m.ftopy")
    viewer = make_napari_viewer()
    assert viewer.dims.ndisplay == 2
    viewer.open(str(path), plugin="napari-factortopy")
    assert viewer.dims.ndisplay == 3
    assert len(viewer.layers) == 1


@pytest.mark.parametrize("name", WIDGETS)
def test_every_control_has_a_tooltip(make_napari_viewer, model_path, name):
    from magicgui.widgets import Container, Image, Label, Table
    from magicgui.widgets.bases import ButtonWidget, ValueWidget

    viewer = make_napari_viewer()
    viewer.open(str(model_path), plugin="napari-factortopy")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-factortopy", name)

    def controls(container):
        for w in container:
            if isinstance(w, Container):
                yield from controls(w)
            elif isinstance(w, ValueWidget | ButtonWidget) and not isinstance(
                w, Label | Image | Table
            ):
                yield w

    bare = [w.label or w.text for w in controls(widget) if not w.tooltip]
    assert bare == [], f"{name}: controls without a tooltip: {bare}"
