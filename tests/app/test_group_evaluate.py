"""`factortopy group` and `factortopy evaluate` end to end: exit codes and messages, the
files they write, `info`, `figure` and the ROI table on them; evaluate against a
phantom's known truth (its signal is significant, its R² sits on its own layer)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_factortopy.app.cli import info_lines, main
from napari_factortopy.core.fitted_model import FittedModel

from ..napari.conftest import make_model


@pytest.fixture(scope="module")
def group_files(tmp_path_factory):
    """Three models on the phantom surface; on the first 100 vertices all three pick
    the same layer (agreement 1 there by construction)."""
    out = tmp_path_factory.mktemp("group")
    paths = []
    base = make_model(seed=0)
    for s in range(3):
        m = make_model(seed=s)
        m.layer[:100] = base.layer[:100]
        paths.append(m.save(out / f"sub-0{s + 1}.ftopy"))
    return out, paths


def test_group_command_writes_a_group_file_info_reads(group_files, capsys):
    out, paths = group_files
    target = out / "group.ftopy"
    assert main(["group", *map(str, paths), "--out", str(target)]) == 0
    said = capsys.readouterr().out
    assert "3 models, 200 vertices (200 in every model)" in said
    g = FittedModel.load(target)
    assert g.kind == "group" and g.summary["group"]["models"] == [p.name for p in paths]
    np.testing.assert_array_equal(g.ensemble["layer_agreement"][:100], 1.0)
    np.testing.assert_array_equal(g.ensemble["n"], 3)
    text = "\n".join(info_lines(g, str(target)))
    assert "group       3 models: sub-01.ftopy, sub-02.ftopy, sub-03.ftopy" in text
    h = g.summary["group"]["hierarchy"]
    assert f"a={h['slope']:.3f} (95 % interval {h['slope_lo']:.3f}..{h['slope_hi']:.3f}" in text
    assert "group ROI" in text and "V2/V3" in text
    # the ROI table has the spread across models
    from napari_factortopy.scene.tables import COLUMNS, roi_rows

    rows = {r["roi"]: r for r in roi_rows(g)}
    want = {r["roi"]: r["score_sd"] for r in g.summary["group"]["roi"]}
    for name, sd in want.items():
        assert rows[name]["score_sd"] == pytest.approx(sd)
    assert set(COLUMNS) <= set(rows["V1"])


def test_group_refuses_other_meshes_and_non_models_naming_the_files(group_files, capsys):
    out, paths = group_files
    other = make_model(seed=5, mesh="fsaverage6")
    odd = other.save(out / "sub-09.ftopy")
    rc = main(["group", str(paths[0]), str(odd), "--out", str(out / "bad.ftopy")])
    err = capsys.readouterr().err
    assert rc == 2 and "sub-09.ftopy: mesh 'fsaverage6', expected 'fsaverage5'" in err
    assert "sub-01.ftopy" in err and not (out / "bad.ftopy").exists()
    junk = out / "notes.ftopy"
    junk.write_text("not a model")
    rc = main(["group", str(paths[0]), str(junk), "--out", str(out / "bad.ftopy")])
    assert rc == 2 and "notes.ftopy" in capsys.readouterr().err
    assert main(["group", str(paths[0]), "--out", str(out / "bad.ftopy")]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_group_figure_shows_agreement_and_n_and_a_plain_model_has_neither(group_files, capsys):
    from PIL import Image

    from napari_factortopy.core import colours

    out, paths = group_files
    target = out / "group.ftopy"
    if not target.exists():
        main(["group", *map(str, paths), "--out", str(target)])
    fig = out / "g.png"
    args = ["figure", str(target), "--views", "ventral", "--width", "900", "--out", str(fig)]
    assert main([*args[:2], "--maps", "layer,agreement,n", *args[2:]]) == 0
    image = np.asarray(Image.open(fig))
    full = np.round(colours.weight_rgba(np.array([1.0]))[0, :3] * 255)  # viridis(1)
    hits = np.all(np.abs(image[..., :3].astype(int) - full) <= 2, axis=-1)
    assert hits.sum() > 200  # agreement 1 (and n = 3 = top) painted in the top colour
    rc = main(["figure", str(paths[0]), "--maps", "agreement", "--out", str(out / "x.png")])
    assert rc == 2 and "has no agreement map" in capsys.readouterr().err


# ---------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small phantom (400 vertices, 400 stimuli: 40 test images) and its truth as a
    model file with a split and a dataset record, so `evaluate` can run on it."""
    from napari_factortopy.core.splits import make_split
    from napari_factortopy.data.phantom import PhantomConfig, build_phantom

    root = tmp_path_factory.mktemp("phantom") / "subject"
    cfg = PhantomConfig(n_vertices=400, n_images=400, image_size=64)
    for _ in build_phantom(root, cfg, device="cpu"):
        pass
    truth = FittedModel.load(root / "truth.ftopy")
    split = make_split(400, np.arange(400), fractions=(0.8, 0.1, 0.1), seed=0)
    record = {"kind": "phantom", "root": str(root), "cache": str(root / "features.zarr")}
    model = replace(
        truth,
        split={
            "seed": 0,
            "fractions": [0.8, 0.1, 0.1],
            "n": 400,
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
        extra={**truth.extra, "dataset": record},
    )
    return root, model.save(root.parent / "truth-split.ftopy")


def test_evaluate_finds_the_truths_signal_and_its_layers(phantom, capsys):
    from napari_factortopy.core.metrics import r2_score
    from napari_factortopy.core.variance_split import dominant_layer
    from napari_factortopy.data.phantom import load_phantom

    root, path = phantom
    assert main(["evaluate", str(path), "--permutations", "500"]) == 0
    said = capsys.readouterr().out
    assert "vertices significant at FDR 0.05" in said
    m = FittedModel.load(path)  # updated in place
    ev = m.summary["evaluation"]
    assert ev["permutations"] == 500 and ev["test_images"] == 40
    assert ev["share_significant"] > 0.9  # the truth predicts its own signal
    # the split adds up to the truth's test R² computed here from its own predictions
    ph = load_phantom(root)
    test = np.asarray(m.split["test"])
    y, signal = ph.responses[test].astype(np.float64), ph.signal[test].astype(np.float64)
    split = m.evaluation["r2_split"].astype(np.float64)
    # Σ_l split = R² of the centred prediction: the truth's signal, moved to y's mean
    centred = signal - signal.mean(0) + y.mean(0)
    np.testing.assert_allclose(split.sum(1), r2_score(y, centred), atol=2e-4)
    # each vertex's R² sits on (or next to) the layer the truth reads
    layer, _ = dominant_layer(split)
    near = np.abs(layer - m.layer.argmax(1)) <= 1
    assert near.mean() > 0.95
    # RF standard errors: finite for the truth's located RFs; the largest RFs (EBA,
    # the most global scale) are the least certain
    se = m.evaluation["space_se"]
    assert np.isfinite(se).mean() > 0.95
    roi_se = {r["roi"]: r["rf_se_median"] for r in ev["roi"]}
    assert roi_se["EBA"] > roi_se["V1"]
    text = "\n".join(info_lines(m, str(path)))
    assert "significance" in text and "R² split" in text and "R² mostly from" in text
    assert "RF location standard error" in text and "slope (R²)" in text
    # the truth's R²-weighted slope is its own slope (its π has no tail to discount)
    from napari_factortopy.core.analyses import hierarchy_levels, hierarchy_slope

    own = hierarchy_slope(m.layer, hierarchy_levels(m.roi, m.roi_names)).slope
    assert ev["hierarchy_r2"]["slope"] == pytest.approx(own, abs=0.08)
    # the figure's map list now has the R² layer
    from napari_factortopy.scene.brain import available_maps

    assert {"R² layer", "RF uncertainty"} <= set(available_maps(m))


def test_evaluate_refuses_a_group_and_data_that_are_not_the_models(phantom, group_files, capsys):
    root, path = phantom
    out, paths = group_files
    target = out / "group.ftopy"
    if not target.exists():
        main(["group", *map(str, paths), "--out", str(target)])
    assert main(["evaluate", str(target), "--phantom", str(root)]) == 2
    assert "a 'group' file cannot be evaluated" in capsys.readouterr().err
    # a model of other vertices than the phantom's
    other = make_model(n_vertices=300, seed=2)
    other = replace(other, split={"seed": 0, "n": 400, "test": np.arange(5)})
    bad = other.save(out / "other.ftopy")
    rc = main(["evaluate", str(bad), "--phantom", str(root), "--out", str(out / "o.ftopy")])
    assert rc == 2 and "not the data the model was trained on" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--permutations", "5"]) == 2
