"""#9.11: exported legends name what they show; figures of unfinished models say so."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_factortopy._napari._layers import load_scene
from napari_factortopy.scene.figure import _panel, figure_image, legend_for
from napari_factortopy.scene.render import compose_figure

from .conftest import make_model


@pytest.fixture(scope="module")
def scene():
    return load_scene(make_model(n_vertices=300, seed=5))


def _legend_axes(scene, name):
    scene.map_name = name
    fig = compose_figure([[_panel(scene, "lateral", name)]], width_px=800, **legend_for(scene))
    return fig.axes[-1]  # the legend is drawn last


def test_roi_legend_names_each_roi(scene):
    ax = _legend_axes(scene, "roi")
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["V1", "V2/V3", "OPA", "EBA"]  # top to bottom, as the swatches
    rows = ax.get_yticks()
    assert np.all(np.diff(rows) > 0) == (ax.get_ylim()[0] > ax.get_ylim()[1])  # top first
    assert list(ax.get_xticks()) == []  # no meaningless x scale under swatches
    # each name sits on its own swatch: the image row under a tick has that ROI's colour
    from napari_factortopy.core import colours

    image = ax.get_images()[0].get_array()
    bottom, top = ax.get_ylim()
    for k, y in enumerate(rows):
        row = int((y - top) / (bottom - top) * image.shape[0])
        np.testing.assert_allclose(image[row, 0], colours.cluster_palette(20)[k], atol=1e-6)


@pytest.mark.parametrize("name", ["scale", "score", "layer weights"])
def test_colour_bars_have_one_axis(scene, name):
    ax = _legend_axes(scene, name)
    assert list(ax.get_yticks()) == [] and ax.get_ylabel() == ""
    assert len(ax.get_xticks()) > 1


def test_score_bar_names_the_score(scene):
    assert _legend_axes(scene, "score").get_xlabel() == "R² (test)"
    scene.score_key = "r_test"
    try:
        assert _legend_axes(scene, "score").get_xlabel() == "r (test)"
    finally:
        scene.score_key = None


def test_unfinished_model_is_stamped(scene):
    conv = {"state": "not_converged", "reason": "budget", "line": "stopped by the budget"}
    model = replace(scene.model, summary={"convergence": conv})
    red = np.array([0xC0, 0, 0])

    def n_red(image):
        return int((np.abs(image[..., :3].astype(int) - red).sum(-1) < 60).sum())

    stamped = figure_image(load_scene(model), ["roi"], ["lateral"], width_px=1200)
    plain = figure_image(load_scene(model), ["roi"], ["lateral"], width_px=1200, stamp=False)
    done = figure_image(load_scene(scene.model), ["roi"], ["lateral"], width_px=1200)
    assert n_red(stamped) > n_red(plain) + 200
    assert n_red(plain) == n_red(done)
