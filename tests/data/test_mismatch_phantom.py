"""Mismatch phantoms: a truth that is not FactorTopy-shaped, checked independently."""

import json

import numpy as np
import pytest

from napari_factortopy.core.analyses import confidence
from napari_factortopy.core.metrics import r2_score
from napari_factortopy.data.mismatch_phantom import (
    MismatchConfig,
    build_mismatch_phantom,
    mismatch_signal_naive,
    mismatch_truth,
    pooling_weights,
    smooth_fields,
)
from napari_factortopy.data.phantom import (
    PhantomConfig,
    load_phantom,
    phantom_images,
    phantom_surface,
)

WIDTHS = [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]


@pytest.fixture(scope="module")
def surface():
    return phantom_surface(400)


def test_truth_layers_are_soft_mixtures_of_adjacent_layers(surface):
    cfg = MismatchConfig(n_vertices=400)
    t = mismatch_truth(surface, WIDTHS, cfg)
    pi = t["layer"].astype(np.float64)
    np.testing.assert_allclose(pi.sum(1), 1, rtol=1e-6)
    support = pi > 0
    n_used = support.sum(1)
    assert n_used.min() >= 2 and n_used.max() <= 3
    assert (n_used == 3).any() and (n_used == 2).any()
    # the used layers are adjacent and contain the argmax
    for v in range(len(pi)):
        used = np.flatnonzero(support[v])
        assert np.array_equal(used, np.arange(used[0], used[-1] + 1))
        assert used[0] <= t["argmax"][v] <= used[-1]
    np.testing.assert_array_equal(t["argmax"], pi.argmax(1))
    np.testing.assert_allclose(t["confidence"], confidence(pi), rtol=1e-5)
    assert 0.3 < t["confidence"].mean() < 0.9  # soft, not one-hot
    # the argmax rises with ROI level, within ±(jitter + ½) of the level's layer
    means = [t["argmax"][surface.roi == lv].mean() for lv in range(1, 5)]
    assert np.all(np.diff(means) > 2)
    for lv in range(1, 5):
        a = t["argmax"][surface.roi == lv]
        assert np.abs(a - cfg.level_layers[lv - 1]).max() <= cfg.layer_jitter + 0.5
    # slots: each used layer has a readout slot, and only those
    for v in (0, 57, 399):
        assert sorted(t["readout_layers"][v][t["readout_layers"][v] >= 0]) == list(
            np.flatnonzero(support[v])
        )


def test_truth_receptive_fields_grow_with_level(surface):
    cfg = MismatchConfig(n_vertices=400)
    t = mismatch_truth(surface, WIDTHS, cfg)
    sizes = [np.median(t["rf_size"][surface.roi == lv]) for lv in range(1, 5)]
    assert np.all(np.diff(sizes) > 0)
    for lv in range(1, 5):
        s = t["rf_size"][surface.roi == lv]
        base = cfg.rf_sizes[lv - 1]
        assert s.min() >= base * (1 - cfg.rf_jitter) - 1e-6
        assert s.max() <= base * (1 + cfg.rf_jitter) + 1e-6
    # each hemisphere sees the opposite half of the image
    assert (t["space"][: surface.n_lh, 0] > 0).all() and (t["space"][surface.n_lh :, 0] < 0).all()
    # scale rises with level
    sc = [t["scale"][surface.roi == lv].mean() for lv in range(1, 5)]
    assert np.all(np.diff(sc) > 0)


def test_pooling_weights_against_a_token_loop():
    space = np.array([[0.3, -0.5], [-0.9, 0.9]])
    rf = np.array([0.2, 0.5])
    g = pooling_weights(space, rf, (4, 6))
    for v in range(2):
        expect = np.zeros((4, 6))
        for i in range(4):
            for j in range(6):
                x, y = (2 * j + 1) / 6 - 1, (2 * i + 1) / 4 - 1
                d2 = (x - space[v, 0]) ** 2 + (y - space[v, 1]) ** 2
                expect[i, j] = np.exp(-d2 / (2 * rf[v] ** 2))
        np.testing.assert_allclose(g[v].reshape(4, 6), expect / expect.sum(), rtol=1e-10)


def test_readouts_are_dense_and_not_low_rank(surface):
    cfg = MismatchConfig(n_vertices=400)
    t = mismatch_truth(surface, WIDTHS, cfg)
    counts = np.bincount(t["readout_layers"][t["readout_layers"] >= 0], minlength=16)
    li = int(np.argmax(np.where(counts >= 90, WIDTHS, 0)))  # the widest busy layer
    vv, kk = np.nonzero(t["readout_layers"] == li)
    assert len(vv) >= 90
    w = t["readout"][vv, kk, : WIDTHS[li]].astype(np.float64)
    assert (np.abs(w) > 1e-6).mean() > 0.99  # every channel used
    sv = np.linalg.svd(w, compute_uv=False)
    share = np.cumsum(sv**2) / np.sum(sv**2)
    # the private part keeps a good share of the variance beyond any 32 directions
    assert share[31] < 0.9 and np.linalg.matrix_rank(w) > 64


def test_seeds_differ_and_repeat(surface):
    a = mismatch_truth(surface, WIDTHS, MismatchConfig(seed=21))
    b = mismatch_truth(surface, WIDTHS, MismatchConfig(seed=21))
    c = mismatch_truth(surface, WIDTHS, MismatchConfig(seed=22))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (a["argmax"] != c["argmax"]).mean() > 0.1
    assert not np.allclose(a["rf_size"], c["rf_size"])
    assert not np.allclose(a["readout"], c["readout"])
    ia, ic = phantom_images(range(8), 48, 21, 0.5), phantom_images(range(8), 48, 22, 0.5)
    assert not np.array_equal(ia, ic)
    np.testing.assert_array_equal(ia, phantom_images(range(8), 48, 21, 0.5))


def test_smooth_fields_are_uniform_and_smooth(surface):
    f = smooth_fields(surface, np.random.default_rng(0), 2, 12)
    assert f.shape == (400, 2) and f.min() > -1 and f.max() < 1
    assert abs(f.mean()) < 1e-9
    # neighbours on the sphere carry similar values
    pts = surface.sphere[: surface.n_lh]
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(1)
    assert np.abs(f[: surface.n_lh, 0] - f[nn, 0]).mean() < 0.25


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mismatch")
    cfg = MismatchConfig(n_vertices=120, n_images=48, image_size=64, seed=3)
    recs = list(build_mismatch_phantom(root, cfg, batch_size=24, device="cpu", chunk=20))
    return root, cfg, recs


def test_signal_matches_a_naive_loop_over_the_stored_truth(tiny):
    from napari_factortopy.data.cache import FeatureCache

    root, cfg, recs = tiny
    assert recs[-1]["stage"] == "done"
    s = load_phantom(root)
    cache = FeatureCache.open(s.cache_path)
    assert cache.n_layers == 16
    vertices, images = [0, 31, 77, 119], [0, 7, 21, 47]
    naive = mismatch_signal_naive(cache, s.truth, vertices, images, cfg.grid)
    np.testing.assert_allclose(naive, s.signal[np.ix_(images, vertices)], rtol=1e-3, atol=1e-3)
    # the stored standardisation is the one over all images: recompute one term's
    t, v = s.truth, 31
    k = int(np.flatnonzero(t["readout_layers"][v] >= 0)[0])
    li = int(t["readout_layers"][v, k])
    local, _ = cache.read(np.arange(cfg.n_images), layers=[li])
    pool = pooling_weights(t["space"][v : v + 1], t["rf_size"][v : v + 1], cfg.grid)[0]
    c = local[0].shape[1]
    term = np.einsum("ncx,x,c->n", local[0].reshape(48, c, -1), pool, t["readout"][v, k, :c])
    assert term.mean() == pytest.approx(t["local_mean"][v, k], rel=1e-3, abs=1e-4)
    assert term.std() == pytest.approx(t["local_sd"][v, k], rel=1e-3)


def test_subject_layout_noise_and_stimuli(tiny):
    root, cfg, _ = tiny
    s = load_phantom(root)
    meta = json.loads((root / "phantom.json").read_text())
    assert meta["generator"] == "mismatch" and s.generator == "mismatch"
    assert MismatchConfig.from_dict(meta["generator_config"]) == cfg
    assert MismatchConfig.from_dict(s.details) == cfg
    assert isinstance(s.config, PhantomConfig) and s.config.photo_fraction == cfg.photo_fraction
    assert s.responses.shape == (48, 120) and len(s.layer_names) == 16
    np.testing.assert_allclose(s.signal.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s.signal.std(0), 1, rtol=1e-3)
    c = s.truth["ceiling"]
    assert c.min() >= cfg.ceiling[0] and c.max() <= cfg.ceiling[1]
    assert abs(np.mean(r2_score(s.responses, s.signal)) - np.mean(c)) < 0.1
    np.testing.assert_array_equal(
        s.images([4, 9]), phantom_images([4, 9], cfg.image_size, cfg.seed, cfg.photo_fraction)
    )


def test_training_inputs_read_it_unchanged(tiny):
    from napari_factortopy.app.inputs import training_inputs

    root, _, _ = tiny
    inputs = training_inputs(root / "features.zarr", phantom=root)
    assert inputs.responses.shape == (48, 120)
    assert len(inputs.widths) == 16 and inputs.dataset["kind"] == "phantom"
    assert inputs.subject.roi_names == ["V1", "V2/V3", "OPA", "EBA"]


def test_rebuild_resumes_and_reproduces(tiny):
    root, cfg, _ = tiny
    before = load_phantom(root).responses
    recs = list(build_mismatch_phantom(root, cfg, batch_size=24, device="cpu", chunk=20))
    assert not [r for r in recs if r["stage"] == "extract" and r.get("done", 0) > 0]
    np.testing.assert_array_equal(load_phantom(root).responses, before)
