"""#9: surfaces are drawn by one reused off-screen pyvista plotter; flat lighting keeps
the map's colours exact; rendering needs no display."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import napari_factortopy  # noqa: F401  (Mesa/triton guard before any OpenGL)
from napari_factortopy.scene.render import renderer, surface_figure

from ..core.test_render import _icosphere

COLOURS = np.array([[0.9, 0.3, 0.1], [0.2, 0.6, 0.8], [0.5, 0.1, 0.7]])


def _three_band_panel(view="lateral", hemi="lh", **extra):
    v, f = _icosphere(3)
    band = np.digitize(v[:, 1], [-15.0, 15.0])  # posterior, middle, anterior (y)
    rgba = np.ones((len(v), 4))
    rgba[:, :3] = COLOURS[band]
    return {"vertices": v, "faces": f, "rgba": rgba, "view": view, "hemi": hemi, **extra}


def _exact_mask(image, rgb):
    target = np.round(np.asarray(rgb) * 255).astype(int)
    return np.all(image[..., :3].astype(int) == target, axis=-1)


def _exact(image, rgb):
    return int(_exact_mask(image, rgb).sum())


def test_flat_lighting_gives_the_exact_map_colours():
    image = surface_figure([[_three_band_panel()]], width_px=600)
    for rgb in COLOURS:  # every band shows in exactly its colour (no shading, no blending)
        assert _exact(image, rgb) > 3000, rgb
    # lateral view of the left hemisphere: anterior (third colour) left of posterior
    cols = [np.nonzero(_exact_mask(image, rgb))[1].mean() for rgb in COLOURS]
    assert cols[2] < cols[1] < cols[0]


def test_shaded_lighting_shades_but_keeps_the_hue():
    flat = surface_figure([[_three_band_panel()]], width_px=600)
    shaded = surface_figure([[_three_band_panel()]], width_px=600, lighting="shaded")
    assert _exact(shaded, COLOURS[1]) < _exact(flat, COLOURS[1]) / 4
    blue = shaded[..., 2].astype(int) - shaded[..., 0].astype(int) > 60  # the middle band
    assert blue.sum() > 3000
    with pytest.raises(ValueError, match="lighting"):
        surface_figure([[_three_band_panel()]], width_px=300, lighting="glossy")


def test_one_plotter_draws_every_panel():
    r = renderer()
    surface_figure([[_three_band_panel()]], width_px=300)
    plotter, before = r.plotter, r.n_rendered
    views = ("lateral", "medial", "ventral", "dorsal")
    panels = [[_three_band_panel(view, hemi) for view in views] for hemi in ("lh", "rh")]
    image = surface_figure(panels, width_px=1200)
    assert r.plotter is plotter and renderer() is r  # reused, not re-created
    assert r.n_rendered == before + 8
    assert image.shape[1] == 1200


def test_renderer_image_size_and_framing():
    v, f = _icosphere(2)
    rgba = np.tile([1.0, 0.0, 0.0, 1.0], (len(v), 1))
    image = renderer().render(v, f, rgba, "posterior", size=(320, 200))
    assert image.shape == (200, 320, 3) and image.dtype == np.uint8
    red = _exact_mask(image, (1.0, 0.0, 0.0))
    rows, cols = np.nonzero(red)
    # a sphere, centred, filling the height (2 % margin), round
    assert abs(rows.mean() - 99.5) < 2 and abs(cols.mean() - 159.5) < 2
    assert 180 < rows.max() - rows.min() < 200
    assert abs((cols.max() - cols.min()) - (rows.max() - rows.min())) < 4


def test_renders_without_a_display():
    """No $DISPLAY: VTK falls back to EGL (or whatever this VTK build offers)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "Agg"
    code = (
        "import napari_factortopy, numpy as np\n"
        "from napari_factortopy.scene.render import renderer\n"
        "from tests.core.test_render import _icosphere\n"
        "v, f = _icosphere(1)\n"
        "img = renderer().render(v, f, np.tile([0, 1.0, 0, 1], (len(v), 1)), size=(64, 64))\n"
        "assert (img[..., 1] == 255).sum() > 500, img.shape\n"
        "import sys; assert 'pyvista' in sys.modules\n"
        "print('ok')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert "bad X server connection" not in out.stderr  # went straight to EGL


def test_importing_the_scene_does_not_load_vtk():
    code = (
        "import sys, napari_factortopy.scene.figure, napari_factortopy.scene.render\n"
        "assert 'pyvista' not in sys.modules and 'vtk' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
