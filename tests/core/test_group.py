"""Group maps against numbers known by construction: agreement, n, the union of vertex
sets, mean scores, per-ROI spread across models, the slope's bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.analyses import hierarchy_levels, hierarchy_slope
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.core.group import (
    bootstrap_mean_interval,
    check_compatible,
    combine_models,
    group_maps,
    union_vertices,
)

N_LAYERS = 5


def _model(vertex_ids, n_lh, layer, roi, seed=0, **kw) -> FittedModel:
    """A display model (numpy only) on chosen vertices with chosen layer weights."""
    v = len(vertex_ids)
    rng = np.random.default_rng(seed)
    ids = np.asarray(vertex_ids)
    coords = np.stack([ids, ids % 7, (np.arange(v) >= n_lh)], 1).astype(np.float32)
    return FittedModel(
        config={
            "widths": [4] * N_LAYERS,
            "grid": [2, 2],
            "bottleneck": 3,
            "hidden": 4,
            "n_freqs": 2,
            "max_period": 4.0,
        },
        state={"coords": coords, "beta": rng.normal(size=(v, 3)).astype(np.float32)},
        space=rng.uniform(-1, 1, (v, 2)),
        layer=np.asarray(layer, np.float64),
        scale=rng.uniform(0, 1, v),
        vertex_ids=ids,
        n_lh=n_lh,
        mesh="fsaverage5",
        roi=roi,
        roi_names=["V1", "V2", "OPA", "EBA"],
        backbone={"name": "toy", "layer_names": [f"l{i}" for i in range(N_LAYERS)]},
        scores={"r2_test": rng.uniform(0, 0.5, v).astype(np.float32)},
        **kw,
    )


def _peaked(choice: np.ndarray) -> np.ndarray:
    """Layer rows with 0.9 on ``choice`` and the rest spread evenly."""
    pi = np.full((len(choice), N_LAYERS), 0.1 / (N_LAYERS - 1))
    pi[np.arange(len(choice)), choice] = 0.9
    return pi


def _known_group(seed=0):
    """Four models; model 3 fits only every other vertex. At each vertex the present
    models vote for layer A except ``b`` of them (0 or 1, a strict minority) for B, so
    the group's layer is A and the agreement is (n − b) / n by construction."""
    rng = np.random.default_rng(seed)
    n_lh, n_rh = 30, 26
    ids = np.r_[np.arange(n_lh) * 3, np.arange(n_rh) * 5 + 1]
    v = len(ids)
    present = np.ones((4, v), bool)
    present[3, 1::2] = False
    a = rng.integers(0, N_LAYERS, v)
    b_layer = (a + rng.integers(1, N_LAYERS, v)) % N_LAYERS
    dissent = rng.integers(0, 2, v)  # 0 or 1 model votes B
    who = rng.integers(0, 3, v)  # which of models 0..2 dissents
    roi = np.repeat(np.arange(1, 5), int(np.ceil(v / 4)))[:v]
    models = []
    for k in range(4):
        choice = np.where((dissent == 1) & (who == k), b_layer, a)
        rows = np.flatnonzero(present[k])
        lh = int((rows < n_lh).sum())
        models.append(_model(ids[rows], lh, _peaked(choice[rows]), roi[rows], seed=10 + k))
    n = present.sum(0)
    agreement = (n - dissent) / n
    return models, ids, n_lh, a, n, agreement, present


def _row_of(model, left: bool, vertex: int) -> int:
    """A model's row of a vertex of one hemisphere, by a plain search."""
    rows = range(model.n_lh) if left else range(model.n_lh, model.n_vertices)
    return next(r for r in rows if model.vertex_ids[r] == vertex)


def test_agreement_n_and_group_layer_are_the_constructed_ones():
    models, ids, n_lh, a, n, agreement, present = _known_group()
    g = combine_models(models, ["s1", "s2", "s3", "s4"])
    np.testing.assert_array_equal(g.vertex_ids, ids)
    assert g.n_lh == n_lh
    np.testing.assert_array_equal(g.ensemble["n"], n)
    np.testing.assert_allclose(g.ensemble["layer_agreement"], agreement, rtol=1e-6)
    np.testing.assert_array_equal(g.layer.argmax(1), a)
    np.testing.assert_allclose(g.layer.sum(1), 1.0, rtol=1e-6)
    # the group layer is the mean of the present models' weights (a plain loop)
    for i in range(len(ids)):
        rows = [m.layer[_row_of(m, i < n_lh, ids[i])] for k, m in enumerate(models)
                if present[k, i]]  # fmt: skip
        want = np.mean(rows, 0)
        np.testing.assert_allclose(g.layer[i], want / want.sum(), rtol=1e-5)
    # absent models are NaN rows of the stacks, present ones their own weights
    assert np.isnan(g.ensemble["layer"][3, 1::2]).all()
    np.testing.assert_allclose(g.ensemble["layer"][0], models[0].layer, rtol=1e-6)


def test_mean_score_and_union_of_different_vertex_sets():
    models, ids, n_lh, *_, present = _known_group(seed=1)
    g = combine_models(models, list("abcd"))
    _, _, rows = union_vertices(models)
    for i in range(0, len(ids), 7):
        vals = [float(m.scores["r2_test"][rows[k, i]]) for k, m in enumerate(models)
                if present[k, i]]  # fmt: skip
        assert g.scores["r2_test"][i] == pytest.approx(np.mean(vals), rel=1e-5)
    # a vertex fitted by one model only, in one hemisphere only
    choice = np.r_[np.zeros(n_lh, int), 2]
    extra = _model(np.r_[ids[:n_lh], 999], n_lh, _peaked(choice), np.zeros(n_lh + 1, int), 5)
    g2 = combine_models([*models, extra], list("abcde"))
    row = np.flatnonzero((g2.vertex_ids == 999) & (np.arange(g2.n_vertices) >= g2.n_lh))
    assert row.size == 1 and g2.ensemble["n"][row[0]] == 1
    assert g2.ensemble["layer_agreement"][row[0]] == 1.0 and g2.layer[row[0]].argmax() == 2


def test_per_roi_numbers_and_their_spread_across_models():
    models, *_ = _known_group(seed=2)
    g = combine_models(models, list("abcd"))
    rows = {r["roi"]: r for r in g.summary["group"]["roi"]}
    for k, name in enumerate(["V1", "V2", "OPA", "EBA"], start=1):
        means = [float(np.mean(m.scores["r2_test"][m.roi == k])) for m in models]
        assert rows[name]["n_models"] == 4
        assert rows[name]["score_mean"] == pytest.approx(np.mean(means), rel=1e-5)
        assert rows[name]["score_sd"] == pytest.approx(np.std(means, ddof=1), rel=1e-4)
        lam = [float(np.mean(m.layer[m.roi == k] @ (np.arange(N_LAYERS) / (N_LAYERS - 1))))
               for m in models]  # fmt: skip
        assert rows[name]["layer_position_mean"] == pytest.approx(np.mean(lam), rel=1e-6)


def test_group_slope_is_the_models_mean_with_an_interval_across_models():
    models, *_ = _known_group(seed=3)
    g = combine_models(models, list("abcd"), n_boot=4000)
    h = g.summary["group"]["hierarchy"]
    own = [hierarchy_slope(m.layer, hierarchy_levels(m.roi, m.roi_names)).slope for m in models]
    np.testing.assert_allclose(h["per_model"], own, rtol=1e-9)
    assert h["slope"] == pytest.approx(np.mean(own))
    assert min(own) - 1e-12 <= h["slope_lo"] <= h["slope"] <= h["slope_hi"] <= max(own) + 1e-12


def test_bootstrap_interval_of_a_mean_is_the_textbook_one_and_covers():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, 400)
    lo, hi = bootstrap_mean_interval(x, n_boot=4000)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)
    hits = 0
    for rep in range(200):  # coverage over repeated samples of 30 "subjects"
        s = rng.normal(0.5, 0.2, 30)
        lo, hi = bootstrap_mean_interval(s, n_boot=1000, seed=rep)
        hits += lo <= 0.5 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    assert bootstrap_mean_interval([1.0]) == (None, None)


def test_group_maps_without_any_model_at_a_vertex_are_nan():
    layers = np.full((2, 3, 4), np.nan)
    layers[0, :2] = 0.25
    spaces = np.where(np.isnan(layers[..., :2]), np.nan, 0.0)
    scales = np.where(np.isnan(layers[..., 0]), np.nan, 0.5)
    maps = group_maps(layers, spaces, scales)
    np.testing.assert_array_equal(maps["n"], [1, 1, 0])
    assert np.isnan(maps["layer"][2]).all() and np.isnan(maps["layer_agreement"][2])


def test_file_round_trip_and_what_the_schema_refuses(tmp_path):
    from napari_factortopy.core.modelfile import ModelFileError, load_ftopy, save_ftopy

    models, *_ = _known_group()
    g = combine_models(models, list("abcd"))
    back = FittedModel.load(g.save(tmp_path / "g.ftopy"))
    assert back.kind == "group" and "beta" not in back.state
    for key in ("layer", "n", "layer_agreement"):
        np.testing.assert_allclose(back.ensemble[key], g.ensemble[key], rtol=1e-6)
    assert back.summary["group"]["models"] == list("abcd")
    with pytest.raises(ValueError, match="no readout"):
        back.beta  # noqa: B018
    tensors, meta = load_ftopy(tmp_path / "g.ftopy")
    broken = {k: v for k, v in tensors.items() if k != "ensemble/n"}
    with pytest.raises(ModelFileError, match="ensemble/n"):
        FittedModel.load(save_ftopy(tmp_path / "b.ftopy", broken, meta))
    bad = dict(meta, summary={**meta["summary"], "group": {**meta["summary"]["group"],
                                                           "n_models": 1}})  # fmt: skip
    with pytest.raises(ModelFileError, match="n_models"):
        FittedModel.load(save_ftopy(tmp_path / "c.ftopy", tensors, bad))
    # a single model still needs its readout
    single = {k: v for k, v in load_ftopy(models[0].save(tmp_path / "m.ftopy"))[0].items()
              if k != "state/beta"}  # fmt: skip
    with pytest.raises(ModelFileError, match="state/beta"):
        FittedModel.load(
            save_ftopy(tmp_path / "d.ftopy", single, load_ftopy(tmp_path / "m.ftopy")[1])
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: setattr(m, "mesh", "fsaverage6"), "mesh 'fsaverage6', expected 'fsaverage5'"),
        (lambda m: m.backbone.update(name="other"), "backbone 'other', expected 'toy'"),
        (lambda m: m.backbone.update(layer_names=list("abcde")), "layers"),
        (lambda m: setattr(m, "kind", "baseline"), "expected a FactorTopy model"),
    ],
)
def test_mismatched_models_are_refused_naming_the_file(change, message):
    models, *_ = _known_group()
    change(models[2])
    with pytest.raises(ValueError, match=message) as err:
        check_compatible(models, ["a.ftopy", "b.ftopy", "c.ftopy", "d.ftopy"])
    assert "c.ftopy" in str(err.value)
    with pytest.raises(ValueError, match="at least 2"):
        check_compatible(models[:1], ["a"])


def test_unfinished_and_degenerate_members_are_named_and_mark_the_group(tmp_path):
    """A group averaging an unfinished model is unfinished itself (its maps say so); a
    member whose selectors collapsed is named in the file, in `info` and by the command."""
    from dataclasses import replace

    from napari_factortopy.app.cli_group import group_lines
    from napari_factortopy.scene.maps import convergence_line

    models = _known_group()[0][:3]
    conv = {"state": "not_converged", "line": "NOT converged: stopped by the time budget"}
    models[1] = replace(models[1], summary={"convergence": conv})
    models[2] = replace(models[2], space=np.tile([1.0, -1.0], (models[2].n_vertices, 1)))
    models[0] = replace(models[0], summary={"convergence": {"state": "converged", "line": "ok"}})
    g = combine_models(models, ["a", "b", "c"])
    g = FittedModel.load(g.save(tmp_path / "group.ftopy"))  # kept by the file
    members = g.summary["group"]["members"]
    assert [m["state"] for m in members] == ["converged", "not_converged", "unknown"]
    assert members[0]["degenerate"] is None and members[1]["degenerate"] is None
    assert members[2]["degenerate"].startswith("every vertex looks at one image point (1.00,")
    assert convergence_line(g) == "1 of 3 models in the group are unfinished (b)"
    lines = group_lines(g)
    assert "  member      b: NOT converged" in lines
    assert any(s.startswith("  member      c: DEGENERATE SELECTORS: every vertex") for s in lines)
    assert not any(s.startswith("  member      a") for s in lines)
    # all finished: no convergence record, no member line
    fine = combine_models([models[0], models[0]], ["a", "a2"])
    assert convergence_line(fine) is None and "convergence" not in fine.summary
    assert not any(s.startswith("  member") for s in group_lines(fine))
