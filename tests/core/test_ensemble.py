"""Seed consistency maps against a vertex-by-vertex loop, and seed ensembles."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from napari_factortopy.core.ensemble import consistency_maps, roi_consistency


def _random_seeds(k=5, v=40, n_layers=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, v, n_layers)) * 2
    layers = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    spaces = rng.uniform(-1, 1, (k, v, 2))
    scales = rng.uniform(0, 1, (k, v))
    return layers, spaces, scales


def test_consistency_maps_match_a_naive_loop():
    layers, spaces, scales = _random_seeds()
    maps = consistency_maps(layers, spaces, scales)
    k, v, _ = layers.shape
    for i in range(v):
        votes = Counter(int(np.argmax(layers[s, i])) for s in range(k))
        top = max(votes.values())
        modal = min(layer for layer, c in votes.items() if c == top)  # ties: lower layer
        assert maps["modal_layer"][i] == modal
        assert maps["layer_agreement"][i] == pytest.approx(top / k)
        mean = spaces[:, i].mean(0)
        d2 = [float(((spaces[s, i] - mean) ** 2).sum()) for s in range(k)]
        assert maps["space_spread"][i] == pytest.approx(np.sqrt(np.mean(d2)), rel=1e-5)
        assert maps["scale_sd"][i] == pytest.approx(np.std(scales[:, i]), rel=1e-5)


def test_identical_seeds_agree_fully():
    layers, spaces, scales = _random_seeds(k=1)
    same = consistency_maps(
        np.repeat(layers, 3, 0), np.repeat(spaces, 3, 0), np.repeat(scales, 3, 0)
    )
    assert np.all(same["layer_agreement"] == 1)
    assert np.allclose(same["space_spread"], 0) and np.allclose(same["scale_sd"], 0)


def test_roi_means_and_shape_errors():
    layers, spaces, scales = _random_seeds(v=6)
    maps = consistency_maps(layers, spaces, scales)
    roi = np.array([1, 1, 2, 0, 2, 2])
    rows = roi_consistency(maps, roi, ["V1", "V2", "hV4"])
    assert [r["roi"] for r in rows] == ["V1", "V2"]  # hV4 has no vertices
    assert rows[1]["n"] == 3
    assert rows[1]["scale_sd"] == pytest.approx(maps["scale_sd"][[2, 4, 5]].mean())
    with pytest.raises(ValueError, match="expected spaces"):
        consistency_maps(layers, spaces[:, :3], scales)


def _seed_models(k=3):
    """K small fitted models on the same vertices and split (the schema test's model,
    with different selector weights)."""
    from tests.core.test_model_schema import _model

    models = []
    for s in range(k):
        m = _model()
        rng = np.random.default_rng(100 + s)
        logits = rng.normal(size=m.layer.shape) * 2
        m.layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        m.space = rng.uniform(-1, 1, m.space.shape)
        m.scale = rng.uniform(0, 1, m.scale.shape)
        m.summary = {**m.summary, "val_score": [0.2, 0.5, 0.3][s]}
        models.append(m)
    return models


def test_combine_seeds_stores_mean_and_every_seed_and_round_trips(tmp_path):
    from napari_factortopy.core.ensemble import combine_seeds
    from napari_factortopy.core.fitted_model import FittedModel

    models = _seed_models()
    ens = combine_seeds(models, [7, 8, 9])
    np.testing.assert_allclose(ens.layer, np.mean([m.layer for m in models], 0))
    np.testing.assert_allclose(ens.layer.sum(1), 1.0)
    assert ens.summary["ensemble"]["weights_from_seed"] == 8  # best validation score
    assert ens.summary["ensemble"]["roi"][0]["roi"] == "A"
    back = FittedModel.load(ens.save(tmp_path / "e.ftopy"))
    for key in ("layer", "space", "scale", "layer_agreement", "space_spread", "scale_sd"):
        np.testing.assert_allclose(back.ensemble[key], ens.ensemble[key], rtol=1e-6)


def test_combine_seeds_refuses_other_splits_and_bad_files_are_refused(tmp_path):
    from napari_factortopy.core.ensemble import combine_seeds
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.modelfile import ModelFileError, load_ftopy, save_ftopy

    models = _seed_models(2)
    models[1].split = {**models[1].split, "test": np.array([7])}
    with pytest.raises(ValueError, match="another test split"):
        combine_seeds(models, [0, 1])
    good = combine_seeds(_seed_models(2), [0, 1]).save(tmp_path / "g.ftopy")
    tensors, meta = load_ftopy(good)
    for name, bad in (
        ("ensemble/space", tensors["ensemble/space"][:, :-1]),  # one vertex short
        ("ensemble/layer", tensors["ensemble/layer"][:1]),  # a single seed
    ):
        broken = dict(tensors)
        broken[name] = np.ascontiguousarray(bad)
        path = save_ftopy(tmp_path / "b.ftopy", broken, meta)
        with pytest.raises(ModelFileError, match=name):
            FittedModel.load(path)
