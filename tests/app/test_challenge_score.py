"""The challenge's noise-normalised score in a model file: attached later, shown by info,
the ROI table and the score map, each checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.app.cli import info_lines, main
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.scene.brain import map_values, score_label
from napari_factortopy.scene.tables import roi_rows, score_note
from tests.napari.conftest import make_model


def _by_hand(r: np.ndarray, nc_percent: np.ndarray) -> np.ndarray:
    out = []
    for ri, ci in zip(r, nc_percent, strict=True):
        if not (np.isfinite(ri) and np.isfinite(ci) and ci > 0):
            out.append(np.nan)
            continue
        out.append(min(100.0, 100.0 * max(float(ri), 0.0) ** 2 / (ci / 100.0)))
    return np.array(out)


def test_score_command_attaches_a_ceiling_and_everything_shows_it(tmp_path, capsys):
    m = make_model(n_vertices=120)
    m.scores["r_test"][:5] = -0.3  # negative correlations count 0
    path = m.save(tmp_path / "m.ftopy")
    lines = "\n".join(info_lines(FittedModel.load(path), str(path)))
    assert "no noise ceiling known" in lines and "factortopy score" in lines
    assert "no noise ceiling known" in score_note(FittedModel.load(path))

    rng = np.random.default_rng(3)
    nc = rng.uniform(5, 60, m.n_vertices)
    nc[7] = np.nan  # a vertex without a ceiling
    np.save(tmp_path / "nc.npy", nc)
    assert main(["score", str(path), "--noise-ceiling", str(tmp_path / "nc.npy")]) == 0
    assert "noise-normalised score" in capsys.readouterr().out
    got = FittedModel.load(path)
    want = _by_hand(m.scores["r_test"].astype(np.float64), nc)
    np.testing.assert_allclose(got.scores["nc_test"], want, rtol=1e-5, equal_nan=True)
    assert np.all(got.scores["nc_test"][:5] == 0)
    np.testing.assert_allclose(got.scores["noise_ceiling"], nc, rtol=1e-6, equal_nan=True)
    mean = np.nanmean(want)
    assert got.summary["nc_test_mean"] == pytest.approx(mean, rel=1e-6)
    assert got.summary["noise_ceiling"]["vertices"] == m.n_vertices - 1

    text = "\n".join(info_lines(got, str(path)))
    assert f"noise-normalised score {mean:.2f} %" in text and "nc.npy" in text
    assert "raw, no noise ceiling" not in text and "NC score %" in text
    # the ROI table: the mean challenge score of each ROI, against a plain loop
    for row in roi_rows(got):
        k = got.roi_names.index(row["roi"]) + 1
        vals = [want[i] for i in range(got.n_vertices) if got.roi[i] == k]
        vals = [x for x in vals if np.isfinite(x)]
        assert row["nc_score"] == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    assert "noise ceiling from" in score_note(got)
    # the score map offers it, labelled
    values, _ = map_values(got, "score", score_key="nc_test")
    np.testing.assert_allclose(values, want, rtol=1e-5, equal_nan=True)
    assert score_label("nc_test") == "noise-normalised score % (test)"
    assert score_label("noise_ceiling") == "noise ceiling %"


def test_score_command_refuses_a_file_that_does_not_fit(tmp_path, capsys):
    path = make_model(n_vertices=60).save(tmp_path / "m.ftopy")
    before = path.read_bytes()
    np.save(tmp_path / "nc.npy", np.ones(7))
    assert main(["score", str(path), "--noise-ceiling", str(tmp_path / "nc.npy")]) == 2
    err = capsys.readouterr().err
    assert "nc.npy" in err and "fits neither" in err
    assert path.read_bytes() == before  # untouched
