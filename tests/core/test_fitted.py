"""The FittedModel bundle and the response checks."""

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.core.model import FactorTopy
from napari_factortopy.core.modelfile import ModelFileError, save_ftopy
from napari_factortopy.core.subject import Subject, check_responses


def _fitted():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    m = FactorTopy(rng.normal(size=(12, 3)), FactorTopyConfig((3, 5), (2, 3), bottleneck=4))
    torch.nn.init.normal_(m.layer_mlp[-1].weight)
    return m, FittedModel.from_module(
        m,
        vertex_ids=np.arange(12) * 3,
        n_lh=5,
        mesh="fsaverage5",
        roi=rng.integers(0, 3, 12),
        roi_names=["A", "B"],
        backbone={"name": "toy", "layer_names": ["a", "b"], "widths": [3, 5]},
        split={
            "seed": 1,
            "fractions": [0.8, 0.1, 0.1],
            "train": np.arange(8),
            "val": np.array([8]),
            "test": np.array([9]),
        },
        history=[{"epoch": 1, "val_score": 0.5}],
        scores={"r2_test": rng.random(12).astype(np.float32)},
        summary={"r2_test_mean": 0.4},
    )


def test_round_trip_and_module_rebuild(tmp_path):
    module, f = _fitted()
    path = f.save(tmp_path / "m.ftopy")
    g = FittedModel.load(path)
    for name in ("space", "layer", "scale", "vertex_ids", "roi"):
        np.testing.assert_array_equal(getattr(g, name), getattr(f, name))
    np.testing.assert_array_equal(g.scores["r2_test"], f.scores["r2_test"])
    np.testing.assert_array_equal(g.split["train"], np.arange(8))
    assert (g.n_lh, g.mesh, g.roi_names, g.history) == (5, "fsaverage5", ["A", "B"], f.history)
    assert g.backbone == f.backbone and g.summary == f.summary
    # the stored selectors are the module's, and the rebuilt module predicts the same
    with torch.no_grad():
        sel = module.selectors()
    np.testing.assert_allclose(g.layer, sel.layer.numpy(), rtol=1e-6)
    rebuilt = g.to_module()
    x = [torch.randn(2, 3, 2, 3), torch.randn(2, 5, 2, 3)]
    z = [torch.randn(2, 3), torch.randn(2, 5)]
    with torch.no_grad():
        np.testing.assert_allclose(
            rebuilt(x, z).numpy(), module(x, z).numpy(), rtol=1e-5, atol=1e-6
        )


def test_loading_a_foreign_ftopy_names_what_is_missing(tmp_path):
    p = save_ftopy(tmp_path / "x.ftopy", {"a": np.zeros(3)}, {"hello": 1})
    with pytest.raises(ModelFileError, match="not a FactorTopy model"):
        FittedModel.load(p)


def test_shapes_are_checked():
    _, f = _fitted()
    with pytest.raises(ValueError, match=r"layer must have shape \(12, 2\)"):
        FittedModel(
            config=f.config,
            state=f.state,
            space=f.space,
            layer=f.layer[:, :1],
            scale=f.scale,
            vertex_ids=f.vertex_ids,
            n_lh=5,
        )


def test_check_responses_messages():
    y = np.random.default_rng(0).normal(size=(10, 4))
    check_responses(y, 10, 4, "r.npy")
    with pytest.raises(ValueError, match=r"r\.npy: expected responses for 12 images .* found 10"):
        check_responses(y, 12, 4, "r.npy")
    with pytest.raises(ValueError, match=r"expected 5 vertices .* found 4"):
        check_responses(y, 10, 5, "r.npy")
    bad = y.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf responses \\(first at image 3, vertex 2\\)"):
        check_responses(bad, 10, 4, "r.npy")
    bad = y.copy()
    bad[:, 1] = 7.0
    with pytest.raises(ValueError, match="1 vertices have constant responses \\(first: vertex 1"):
        check_responses(bad, 10, 4, "r.npy")


def test_check_responses_in_row_blocks_and_from_files(tmp_path, monkeypatch):
    """The checks run a block of rows at a time (blocks of 3 rows here) on an array and
    on responses read from their file, with the messages of the whole-array check: the
    first bad value in row order, every bad value counted, a column constant only when
    it is constant in every block."""
    import napari_factortopy.core.subject as subject_mod
    from napari_factortopy.core.responses import ResponseRows

    monkeypatch.setattr(subject_mod, "CHECK_BLOCK_BYTES", 3 * 4 * 4)  # 3 rows of float32
    y = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    y[:3, 1] = 5.0  # constant in the first block only: not a constant vertex
    bad = y.copy()
    bad[7, 0], bad[4, 3], bad[9, 2] = np.inf, np.nan, np.nan
    const = y.copy()
    const[:, 2] = 7.0
    for i, (arr, match) in enumerate(
        [
            (y, None),
            (bad, r"3 NaN/inf responses \(first at image 4, vertex 3\)"),
            (const, r"1 vertices have constant responses \(first: vertex 2"),
        ]
    ):
        np.save(tmp_path / f"{i}.npy", arr)
        for given in (arr, ResponseRows([np.load(tmp_path / f"{i}.npy", mmap_mode="r")])):
            if match is None:
                check_responses(given, 10, 4, "r.npy")
            else:
                with pytest.raises(ValueError, match=match):
                    check_responses(given, 10, 4, "r.npy")


def test_subject_checks_sphere_shape():
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        Subject(np.arange(3), 1, np.zeros((2, 3)))


def test_check_cache_names_the_mismatch(tmp_path):
    from napari_factortopy.data.cache import FeatureCache

    _, f = _fitted()  # layers a (3 channels), b (5), grid (2, 3)

    def cache(name, layers, widths, grid):
        return FeatureCache.create(
            tmp_path / name,
            backbone="toy",
            layer_names=layers,
            widths=widths,
            grid=grid,
            image_ids=["0", "1"],
        )

    f.check_cache(cache("ok.zarr", ["a", "b", "c"], [3, 5, 7], (2, 3)))
    with pytest.raises(ValueError, match=r"reads layers \['b'\]"):
        f.check_cache(cache("l.zarr", ["a", "x"], [3, 5], (2, 3)))
    with pytest.raises(ValueError, match=r"expects widths \[3, 5\] .* the cache has \[3, 6\]"):
        f.check_cache(cache("w.zarr", ["a", "b"], [3, 6], (2, 3)))
    with pytest.raises(ValueError, match="grid"):
        f.check_cache(cache("g.zarr", ["a", "b"], [3, 5], (8, 8)))


def test_resume_with_another_model_shape_is_a_clear_error(tmp_path):
    from napari_factortopy.core.config import TrainConfig
    from napari_factortopy.core.splits import make_split
    from napari_factortopy.core.training import train
    from tests.core.test_training import _fresh, _problem

    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    cfg = TrainConfig(steps_per_epoch=5, max_epochs=1, soup=False)
    list(train(_fresh(coords), feats, y, split, cfg, checkpoint_dir=tmp_path))
    other = FactorTopy(coords, FactorTopyConfig((4, 7), (3, 3), bottleneck=8, hidden=16))
    with pytest.raises(ValueError, match="checkpoint was written for a model of another shape"):
        list(train(other, feats, y, split, cfg, checkpoint_dir=tmp_path, resume=True))
