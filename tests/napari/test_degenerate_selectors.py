"""Issue #23 / #21: a model whose selectors collapsed (every vertex looking at the image's
corner) and whose layer weights are still uniform is opened as a user opens it; the
viewer, `factortopy info` and the exported figure all say DEGENERATE SELECTORS, and a
healthy model says none of it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_factortopy._napari._layers import load_scene
from napari_factortopy.app.cli import info_lines
from napari_factortopy.scene.figure import figure_image

from ._drive import canvas_shot, dock, open_model, settle
from .conftest import make_model


def _collapsed(model):
    v, n_layers = model.layer.shape
    rng = np.random.default_rng(0)
    layer = np.full((v, n_layers), 1 / n_layers) + rng.uniform(0, 1e-3, (v, n_layers))
    layer /= layer.sum(1, keepdims=True)
    return replace(model, space=np.tile([1.0, -1.0], (v, 1)), layer=layer)


def _orange(shot):
    rgb = shot[..., :3].astype(int)
    return (rgb[..., 0] > 150) & (rgb[..., 1] > 60) & (rgb[..., 1] < 200) & (rgb[..., 2] < 80)


@pytest.mark.parametrize("collapsed", [True, False])
def test_viewer_names_degenerate_selectors(make_napari_viewer, tmp_path, collapsed):
    model = make_model(seed=5)
    model = _collapsed(model) if collapsed else model
    path = model.save(tmp_path / "run.ftopy")
    viewer = make_napari_viewer(show=True)
    viewer.add_points([[0, 0, 0]], name="other")  # another layer selected, as users have
    layer = open_model(viewer, path)
    brain = dock(viewer, "Brain maps")
    settle()
    shot = canvas_shot(viewer)
    banner = brain.banner.native
    if collapsed:
        assert layer.name == "run [degenerate]"
        assert banner.isVisible()
        assert "⚠ degenerate selectors: every vertex looks at one image point (1.00, " in (
            banner.text()
        )
        assert "the image's corner" in banner.text() and "undecided" in banner.text()
        shown = " ".join(viewer.text_overlay.text.split())
        assert shown.startswith("DEGENERATE SELECTORS: every vertex looks at")
        viewer.text_overlay.visible = False
        settle()
        ink = int(_orange(shot).sum()) - int(_orange(canvas_shot(viewer)).sum())
        assert ink > 200, "no warning drawn on the canvas"
    else:
        assert layer.name == "run"
        assert not banner.isVisible()
        assert not viewer.text_overlay.visible


def test_info_and_figure_say_degenerate():
    healthy = make_model(seed=6)
    bad = _collapsed(healthy)
    lines = "\n".join(info_lines(bad, "bad.ftopy"))
    assert "  selectors   DEGENERATE: every vertex looks at one image point (1.00, -1.00)" in lines
    assert "space spread 0.000" in lines
    good = "\n".join(info_lines(healthy, "good.ftopy"))
    assert "DEGENERATE" not in good and "  selectors   mean layer confidence" in good

    red = np.array([0xC0, 0, 0])

    def n_red(image):
        return int((np.abs(image[..., :3].astype(int) - red).sum(-1) < 60).sum())

    stamped = figure_image(load_scene(bad), ["roi"], ["lateral"], width_px=900)
    plain = figure_image(load_scene(bad), ["roi"], ["lateral"], width_px=900, stamp=False)
    fine = figure_image(load_scene(healthy), ["roi"], ["lateral"], width_px=900)
    # a band of red warning text above the panels, wrapped to the figure's width
    assert stamped.shape[0] > plain.shape[0] and n_red(stamped) > n_red(plain) + 500
    assert fine.shape == plain.shape and n_red(fine) == n_red(plain)
    top = stamped[: stamped.shape[0] - plain.shape[0] + 10]
    cols = np.nonzero((np.abs(top[..., :3].astype(int) - red).sum(-1) < 60).any(0))[0]
    assert cols.min() > 0 and cols.max() < stamped.shape[1] - 1, "the stamp is cut"


def test_info_checks_the_selectors_once_and_its_slope_line_says_degenerate(monkeypatch):
    """`info` prints the check in its selector lines and at the end of its slope line,
    from one pass over the vertices."""
    from napari_factortopy.core import selector_check

    bad = _collapsed(make_model(seed=6))
    calls = []
    real = selector_check.assess_selectors
    monkeypatch.setattr(
        selector_check, "assess_selectors", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    lines = info_lines(bad, "bad.ftopy")
    assert len(calls) == 1
    slope = [s for s in lines if s.startswith("              hierarchy slope")]
    assert len(slope) == 1 and "; DEGENERATE SELECTORS: every vertex looks at" in slope[0]
