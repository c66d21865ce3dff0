"""factortopy compare-methods end to end on a tiny phantom (every method, a few steps)."""

import csv
import json

import numpy as np
import pytest

from napari_factortopy.app.cli import main
from napari_factortopy.app.compare_methods import (
    ALL_METHODS,
    CompareOptions,
    compare_methods,
    expand_methods,
    layer_agreement,
)
from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.data.phantom import PhantomConfig, build_phantom, load_phantom

TINY = PhantomConfig(n_vertices=120, n_images=48, image_size=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems on a shared CPU run several times faster on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp") / "subject"
    for _ in build_phantom(root, TINY, device="cpu"):
        pass
    return root


def test_expand_methods():
    assert expand_methods("ablations,ridge")[-1] == "ridge"
    assert expand_methods("factortopy,ablations,classToken,patchComp,gnet,ridge") == list(
        ALL_METHODS
    )
    with pytest.raises(ValueError, match="unknown method 'svm'"):
        expand_methods("factortopy,svm")


def test_layer_agreement_counts():
    rows = layer_agreement(
        {"a": np.array([0, 1, 3, 3])}, np.array([0, 2, 3, 0]), np.array([1, 1, 2, 2]), ["X", "Y"]
    )
    assert rows[0] == pytest.approx(
        {
            "roi": "all",
            "n": 4,
            "truth_mean_layer": 1.25,
            "a_exact": 0.5,
            "a_within1": 0.75,
            "a_mean_layer": 1.75,
        }
    )
    assert [r["roi"] for r in rows] == ["all", "X", "Y"]


def test_every_method_on_one_split(phantom, tmp_path):
    from napari_factortopy.app.inputs import training_inputs

    inputs = training_inputs(phantom=phantom, device="cpu")
    ph = load_phantom(phantom)
    opts = CompareOptions(
        train=TrainConfig(steps_per_epoch=2, max_epochs=1, soup=False, log_every=1),
        bottleneck=8,
        hidden=8,
        timing_steps=1,
        ridge_blas_threads=1,
        ridge_components=32,
    )
    recs = list(
        compare_methods(inputs, tmp_path, opts, noise_ceiling=ph.truth["ceiling"], truth=ph.truth)
    )
    done = recs[-1]
    assert done["kind"] == "done"
    rows = {r["method"]: r for r in done["rows"]}
    assert list(rows) == list(ALL_METHODS)
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for name, row in rows.items():
        m = FittedModel.load(tmp_path / row["file"])
        np.testing.assert_allclose(np.nanmean(m.scores["r2_test"]), row["r2"], rtol=1e-5)
        assert row["peak_rss_mb"] > 0 and row["seconds"] > 0
        if name == "ridge":
            assert m.kind == "baseline"
            assert set(m.scores) >= {"best_layer", "alpha"}
            assert m.extra["baseline"]["maps"] == ["layer"]
            # the layer map's argmax is the best layer
            np.testing.assert_array_equal(m.layer.argmax(1), m.scores["best_layer"].astype(int))
        elif row["family"] == "baseline":
            assert m.kind == "baseline" and row["ms_per_step"] > 0
            assert m.extra["baseline"]["maps"] == (["space"] if name == "gnet" else [])
        else:  # FactorTopy and its ablations: runnable model files, same split
            assert m.kind == "factortopy" and row["steps"] == 2
            assert m.to_module() is not None
            np.testing.assert_array_equal(m.split["test"], inputs.split.test)
    # tables: a CSV row per method and ROI (all + 4), the Markdown and the JSON
    with open(tmp_path / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(ALL_METHODS) * 5
    assert {t["roi"] for t in table} == {"all", "V1", "V2/V3", "OPA", "EBA"}
    assert all(t["nn"] != "" for t in table)
    md = (tmp_path / "comparison.md").read_text()
    assert "noise-normalised" in md and "Layer maps against the truth" in md
    agreement = json.loads((tmp_path / "comparison.json").read_text())["agreement"]
    assert {"ridge_exact", "factortopy_exact"} <= set(agreement[0])
    assert "no_layer_sel_exact" not in agreement[0]  # uniform layers: no layer map


def test_cli_compare_methods(phantom, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare-methods",
            "--phantom",
            str(phantom),
            "--methods",
            "no_scale_sel,ridge",
            "--out",
            str(out),
            "--max-seconds",
            "6",
            "--bottleneck",
            "8",
            "--hidden",
            "8",
            "--device",
            "cpu",
            "--ridge-components",
            "16",
        ]
    )
    assert rc == 0
    assert (out / "no_scale_sel.ftopy").exists() and (out / "ridge.ftopy").exists()
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["no_scale_sel", "ridge"]
    assert rows[0]["seconds"] < 6 * 1.05 + 5  # the budget, one validation, the test
    # factortopy info names the ablation, and shows no filler maps of a baseline
    assert main(["info", str(out / "no_scale_sel.ftopy")]) == 0
    assert main(["info", str(out / "ridge.ftopy")]) == 0
    out_text = capsys.readouterr().out
    assert "model       no_scale_sel: D=8" in out_text
    assert "model       baseline ridge, display only (real maps: layer" in out_text
    ridge = out_text.split("baseline ridge", 1)[1]
    roi_rows = [ln for ln in ridge.splitlines() if ln.startswith("  V1 ")]
    # its scale is a filler (columns: …, argmax layer, scale, confidence)
    assert roi_rows and roi_rows[0].split()[-2] == "-", roi_rows
    assert main(["compare-methods", "--phantom", str(phantom), "--methods", "x",
                 "--out", str(out)]) != 0  # fmt: skip
