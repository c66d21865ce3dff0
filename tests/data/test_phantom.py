"""The phantom subject: layout, ground truth and responses against closed forms."""

import numpy as np
import pytest

from napari_factortopy.core.metrics import r2_score
from napari_factortopy.data.phantom import (
    ROI_NAMES,
    PhantomConfig,
    build_phantom,
    load_phantom,
    phantom_images,
    phantom_surface,
    phantom_truth_selectors,
)
from napari_factortopy.data.surfaces import fsaverage5_mesh


def test_surface_layout_levels_and_hemispheres():
    s = phantom_surface(400)
    assert s.n_lh == 200 and len(s.vertex_ids) == 400
    assert s.vertex_ids.min() >= 0 and s.vertex_ids.max() < 10242
    for hemi, rows in (("lh", slice(0, 200)), ("rh", slice(200, None))):
        np.testing.assert_allclose(
            s.sphere[rows], fsaverage5_mesh("sphere", hemi).vertices[s.vertex_ids[rows]]
        )
        roi = s.roi[rows]
        assert np.bincount(roi, minlength=5)[1:].tolist() == [50, 50, 50, 50]
        # levels are rings: every V1 vertex is closer to the pole than every V2/V3 vertex …
        unit = s.sphere[rows] / np.linalg.norm(s.sphere[rows], axis=1, keepdims=True)
        pial = fsaverage5_mesh("pial", hemi).vertices
        pole = fsaverage5_mesh("sphere", hemi).vertices[np.argmin(pial[:, 1])]
        angle = np.arccos(np.clip(unit @ (pole / np.linalg.norm(pole)), -1, 1))
        for lv in (1, 2, 3):
            assert angle[roi == lv].max() <= angle[roi == lv + 1].min() + 1e-9


def test_truth_selectors_follow_the_design():
    cfg = PhantomConfig()
    s = phantom_surface(400)
    t = phantom_truth_selectors(s, 16, cfg)
    # each hemisphere sees the opposite half of the image
    assert (t["space"][: s.n_lh, 0] > 0).all() and (t["space"][s.n_lh :, 0] < 0).all()
    assert np.abs(t["space"]).max() <= 1
    np.testing.assert_allclose(t["layer"].sum(1), 1, rtol=1e-6)
    for lv in range(1, 5):
        msk = s.roi == lv
        assert (t["layer"][msk].argmax(1) == cfg.level_layers[lv - 1]).all()
        np.testing.assert_allclose(t["scale"][msk], cfg.level_scales[lv - 1])
    # closed form of the peak weight of a Gaussian over layers (σ = layer_width)
    d = np.arange(16) - cfg.level_layers[0]
    w = np.exp(-(d**2) / (2 * cfg.layer_width**2))
    assert t["layer"][s.roi == 1][0].max() == pytest.approx(w.max() / w.sum(), rel=1e-6)
    with pytest.raises(ValueError, match="need at least 12 layers"):
        phantom_truth_selectors(s, 8, cfg)


def test_images_are_deterministic_and_varied():
    a = phantom_images([0, 1, 2], size=48, seed=0)
    b = phantom_images([2, 0], size=48, seed=0)
    assert a.shape == (3, 48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[2], b[0])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], phantom_images([0], size=48, seed=1)[0])
    assert a.std() > 20  # not blank


def test_photo_stimuli_are_seeded_crops_and_zero_keeps_the_procedural_stream():
    from napari_factortopy.data.phantom import PHOTO_NAMES, _is_photo

    idx = list(range(12))
    plain = phantom_images(idx, size=40, seed=2)
    np.testing.assert_array_equal(plain, phantom_images(idx, size=40, seed=2, photo_fraction=0))
    mixed = phantom_images(idx, size=40, seed=2, photo_fraction=0.5)
    np.testing.assert_array_equal(mixed, phantom_images(idx, 40, 2, 0.5))
    is_photo = np.array([_is_photo(2, i, 0.5) for i in idx])
    assert 0 < is_photo.sum() < len(idx)
    # procedural images are the same whatever the share of photos; photos differ
    np.testing.assert_array_equal(mixed[~is_photo], plain[~is_photo])
    assert not np.array_equal(mixed[is_photo], plain[is_photo])
    photos = phantom_images(range(6), size=40, seed=2, photo_fraction=1.0)
    assert photos.shape == (6, 40, 40, 3) and photos.dtype == np.uint8
    assert photos.std() > 10 and len(PHOTO_NAMES) >= 10
    assert not np.array_equal(photos, phantom_images(range(6), 40, 3, 1.0))


def test_config_reads_files_written_before_photo_fraction():
    old = PhantomConfig().to_dict()
    del old["photo_fraction"]
    old["grid"] = list(old["grid"])
    assert PhantomConfig.from_dict(old) == PhantomConfig()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    cfg = PhantomConfig(n_vertices=120, n_images=96, image_size=64, seed=3)
    recs = list(build_phantom(root, cfg, batch_size=32, device="cpu"))
    return root, cfg, recs


def test_build_phantom_writes_a_consistent_subject(tiny):
    root, cfg, recs = tiny
    assert recs[-1]["stage"] == "done"
    s = load_phantom(root)
    assert s.responses.shape == (96, 120) and np.isfinite(s.responses).all()
    np.testing.assert_allclose(s.signal.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s.signal.std(0), 1, rtol=1e-4)
    # ceiling: each vertex's noise variance is (1 - c)/c for a unit-variance signal
    c = s.truth["ceiling"]
    assert c.min() >= cfg.ceiling[0] and c.max() <= cfg.ceiling[1]
    noise_var = (s.responses - s.signal).var(0)
    expect = (1 - c) / c
    assert np.corrcoef(noise_var, expect)[0, 1] > 0.8
    np.testing.assert_allclose(np.median(noise_var / expect), 1, atol=0.15)
    r2 = r2_score(s.responses, s.signal)
    assert abs(np.mean(r2) - np.mean(c)) < 0.08
    assert list(ROI_NAMES) == ["V1", "V2/V3", "OPA", "EBA"]
    np.testing.assert_array_equal(s.images([5])[0], phantom_images([5], 64, 3)[0])
    assert s.generator == "factortopy" and s.details == {}


def test_build_phantom_resumes_without_recomputing(tiny):
    root, cfg, _ = tiny
    before = load_phantom(root).responses
    recs = list(build_phantom(root, cfg, batch_size=32, device="cpu"))
    assert not [r for r in recs if r["stage"] == "extract"]  # cache complete: nothing to do
    np.testing.assert_array_equal(load_phantom(root).responses, before)


def test_load_phantom_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"phantom\.json is missing"):
        load_phantom(tmp_path)


def test_truth_model_file_reproduces_the_signal(tiny):
    """phantom/truth.ftopy holds the truth's full weights: with its fixed selectors it
    predicts the phantom's (noise-free, standardised) signal."""
    from napari_factortopy.core.feature_source import feature_source
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.training import predict
    from napari_factortopy.data.cache import FeatureCache

    root, cfg, _ = tiny
    s = load_phantom(root)
    t = FittedModel.load(root / "truth.ftopy")
    assert t.kind == "phantom-truth" and t.config["bottleneck"] == cfg.truth_bottleneck
    np.testing.assert_array_equal(t.layer, s.truth["layer"])
    module = t.to_module()
    feats = feature_source(FeatureCache.open(s.cache_path), np.arange(96))
    pred = predict(module, feats, np.arange(96), selectors=t.fixed_selectors())
    np.testing.assert_allclose(pred, s.signal, rtol=1e-3, atol=2e-3)
