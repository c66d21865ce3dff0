"""Figure export and `factortopy figure`: size, layout and the map's colours in the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_factortopy._napari._layers import load_scene
from napari_factortopy.app.cli_figure import main
from napari_factortopy.core import colours
from napari_factortopy.scene.figure import figure_image

from .conftest import make_model


@pytest.fixture(scope="module")
def one_hot_model():
    """Every vertex picks layer 1 with full confidence: one known colour."""
    m = make_model(n_vertices=1500, n_layers=6, seed=3)
    m.layer[:] = 0.0
    m.layer[:, 0] = 1.0
    return m


def _count(image, rgb, tol=2):
    diff = np.abs(image[..., :3].astype(int) - np.round(np.asarray(rgb) * 255).astype(int))
    return int(np.sum(np.all(diff <= tol, axis=-1)))


def test_figure_shows_the_map_colour(one_hot_model):
    scene = load_scene(one_hot_model)
    image = figure_image(scene, ["layer", "scale"], ["lateral", "posterior"], width_px=3000)
    assert image.shape[1] == 3000 and image.shape[2] == 4
    colour = colours.layer_rgba(one_hot_model.layer[:1])[0, :3]
    # the modelled occipital patch is visible in both views, in its exact colour
    top = image[: image.shape[0] // 2]
    assert _count(top, colour) > 2000
    assert _count(image[image.shape[0] // 2 :], colour) < _count(top, colour) / 20
    greys = colours.curvature_grey(np.array([-1.0, 1.0]))[:, :3]
    n_grey = sum(_count(image, g) for g in greys)
    assert n_grey > 2 * _count(image, colour)  # the rest of the cortex is curvature grey
    assert _count(top, colour, tol=0) > 2000  # flat lighting: the exact RGB, sampled
    assert scene.map_name == "layer" and scene.view == "lateral"  # left as it was


def test_cli_figure_writes_png(tmp_path, one_hot_model, capsys):
    path = one_hot_model.save(tmp_path / "m.ftopy")
    out = tmp_path / "fig.png"
    code = main(
        [
            "figure",
            str(path),
            "--maps",
            "layer,score",
            "--views",
            "lateral,ventral,flat",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "3000" in capsys.readouterr().out
    image = np.asarray(Image.open(out))
    assert image.shape[1] == 3000
    colour = colours.layer_rgba(one_hot_model.layer[:1])[0, :3]
    assert _count(image, colour) > 2000
    assert main(["figure", str(path), "--maps", "nonsense", "--out", str(out)]) == 2
    assert main(["figure", str(tmp_path / "missing.ftopy"), "--out", str(out)]) == 2


def test_cli_figure_lighting(tmp_path, one_hot_model, capsys):
    """--lighting shaded shades the map (its exact colour mostly gone); flat keeps it."""
    path = one_hot_model.save(tmp_path / "m.ftopy")
    colour = colours.layer_rgba(one_hot_model.layer[:1])[0, :3]
    counts = {}
    for lighting in ("flat", "shaded"):
        out = tmp_path / f"{lighting}.png"
        argv = ["figure", str(path), "--views", "posterior", "--width", "1000"]
        assert main([*argv, "--lighting", lighting, "--out", str(out)]) == 0
        counts[lighting] = _count(np.asarray(Image.open(out)), colour, tol=0)
    assert counts["flat"] > 500 and counts["shaded"] < counts["flat"] / 4
    with pytest.raises(SystemExit):
        main(["figure", str(path), "--lighting", "glossy", "--out", str(tmp_path / "x.png")])
