"""Baselines and ablations (METHOD.md §6) against independent, naive computations.

Every forward is compared in float64 with a plain Python loop over images, vertices,
layers and grid cells (bilinear reads via ``torch.nn.functional.grid_sample``, not the
model's own tap code); the per-layer ridge recovers a known best layer.
"""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_factortopy.core.ablations import ABLATIONS, ablation_config, ablation_name
from napari_factortopy.core.baselines import (
    ClassToken,
    GNet,
    PatchComp,
    grid_centres,
    ridge_per_layer,
)
from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.model import FactorTopy
from napari_factortopy.core.training import regulariser

CFG = FactorTopyConfig(widths=(3, 5), grid=(2, 3), bottleneck=4, hidden=8)
V, B = 6, 2


def _tokens(cfg=CFG, b=B, seed=1):
    g = torch.Generator().manual_seed(seed)
    loc = [torch.randn(b, c, *cfg.grid, generator=g, dtype=torch.float64) for c in cfg.widths]
    glo = [torch.randn(b, c, generator=g, dtype=torch.float64) for c in cfg.widths]
    return loc, glo


def _coords(v=V):
    return np.random.default_rng(0).normal(size=(v, 3))


def _readout(m, f_vd, b, v):
    """ŷ = (1/D) Σ_d β_vd f_d + b_v for one image and vertex."""
    with torch.no_grad():
        return float((m.beta[v].double() * f_vd).sum() / m.config.bottleneck + m.bias[v])


def test_class_token_matches_loop():
    torch.manual_seed(0)
    m = ClassToken(_coords(), CFG).double()
    loc, glo = _tokens()
    got = m(loc, glo).detach()
    for b in range(B):
        f = sum(m.global_align[l].weight @ glo[l][b] for l in range(2)) / 2
        for v in range(V):
            assert got[b, v].item() == pytest.approx(_readout(m, f, b, v), abs=1e-10)


def test_patch_comp_matches_loop():
    torch.manual_seed(0)
    m = PatchComp(_coords(), CFG).double()
    loc, glo = _tokens()
    got = m(loc, glo).detach()
    h, w = CFG.grid
    for b in range(B):
        f = torch.zeros(CFG.bottleneck, dtype=torch.float64)
        for l, c in enumerate(CFG.widths):
            flat = torch.tensor(
                [
                    loc[l][b, ch, r, col].item()
                    for ch in range(c)
                    for r in range(h)
                    for col in range(w)
                ],
                dtype=torch.float64,
            )  # channel-major, as torch's flatten(1)
            f += m.patch_align[l].weight @ flat
        f /= len(CFG.widths)
        for v in range(V):
            assert got[b, v].item() == pytest.approx(_readout(m, f, b, v), abs=1e-10)


def test_gnet_matches_loop():
    torch.manual_seed(0)
    m = GNet(_coords(), CFG).double()
    with torch.no_grad():
        m.mask.normal_(std=2.0)
    loc, glo = _tokens()
    got = m(loc, glo).detach()
    h, w = CFG.grid
    n_l = len(CFG.widths)
    for b in range(B):
        for v in range(V):
            f = torch.zeros(CFG.bottleneck, dtype=torch.float64)
            for l in range(n_l):
                logits = m.mask[v, l].detach()
                wts = torch.exp(logits) / torch.exp(logits).sum()
                for r in range(h):
                    for col in range(w):
                        tok = m.local_align[l].weight[:, :, 0, 0] @ loc[l][b, :, r, col]
                        f += wts[r * w + col] * tok / n_l
            assert got[b, v].item() == pytest.approx(_readout(m, f, b, v), abs=1e-10)
    # the space map: centre of mass of the layer-averaged field, cell centres in [-1, 1]
    fields = torch.softmax(m.mask.detach(), -1).mean(1).numpy()
    np.testing.assert_allclose(m.maps()["space"], fields @ grid_centres(CFG.grid), atol=1e-6)
    assert grid_centres((2, 3))[0].tolist() == pytest.approx([-2 / 3, -0.5])


@pytest.mark.parametrize("cls", [ClassToken, PatchComp, GNet])
def test_baselines_train_with_a_zero_regulariser(cls):
    m = cls(_coords(), CFG)
    sel = m.selectors()
    assert float(regulariser(sel)) == 0.0
    loc, glo = _tokens()
    loss = m([t.float() for t in loc], [t.float() for t in glo], sel).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    maps = m.maps()
    assert maps["layer"].shape == (V, 2) and np.allclose(maps["layer"].sum(1), 1)


# ----------------------------------------------------------------- ablations


def _ablated(name, seed=0):
    torch.manual_seed(seed)
    m = FactorTopy(_coords(), ablation_config(CFG, name)).double()
    with torch.no_grad():  # move the selectors away from their zero start
        for p_name, p in m.named_parameters():
            if p_name.endswith("_free") or p_name.endswith(".4.weight"):
                p.normal_(std=1.5)
    return m


def _naive(m, loc, glo, points, layer, scale, pool_mean=False):
    """f_v = Σ_l π_vl [(1-α_v) mean_k read(A_l, s_vk) + α_v a_l], then the readout; reads
    with grid_sample (align_corners=False, zero padding)."""
    n_l = len(loc)
    out = torch.zeros(B, V, dtype=torch.float64)
    for b in range(B):
        for v in range(V):
            f = torch.zeros(m.config.bottleneck, dtype=torch.float64)
            for l in range(n_l):
                a_loc = F.conv2d(loc[l][b : b + 1], m.local_align[l].weight)  # (1, D, h, w)
                if pool_mean:
                    local = a_loc.mean(dim=(2, 3))[0]
                else:
                    reads = [
                        F.grid_sample(a_loc, p.view(1, 1, 1, 2), align_corners=False)[0, :, 0, 0]
                        for p in points[v]
                    ]
                    local = sum(reads) / len(reads)
                glob = m.global_align[l].weight @ glo[l][b]
                f += layer[v, l] * ((1 - scale[v]) * local + scale[v] * glob)
            out[b, v] = _readout(m, f, b, v)
    return out


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_forward_matches_loop(name):
    m = _ablated(name)
    loc, glo = _tokens()
    sel = m.selectors()
    got = m(loc, glo).detach()
    n_l = len(CFG.widths)
    layer, scale = sel.layer.detach(), sel.scale.detach()
    points = sel.space.detach()[:, None, :]
    if name == "no_layer_sel":
        assert torch.allclose(layer, torch.full((V, n_l), 1 / n_l, dtype=layer.dtype))
    if name == "no_scale_sel":
        assert torch.all(scale == 0.5)
    if name == "no_topology":  # selectors are the free parameters through tanh/softmax/sigmoid
        assert torch.allclose(sel.space, torch.tanh(m.space_free))
        assert torch.allclose(layer, torch.softmax(m.layer_free, -1))
        assert torch.allclose(scale, torch.sigmoid(m.scale_free[:, 0]))
        assert not any("mlp" in k for k in m.state_dict())
    if name == "multi_sample":
        assert sel.samples.shape == (V, 3, 2)
        points = sel.samples.detach()
        assert torch.allclose(sel.space, points.mean(1))
        assert (points[:, 0] - points[:, 1]).abs().max() > 1e-3  # samples differ
    want = _naive(m, loc, glo, points, layer, scale, pool_mean=name == "no_space_sel")
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    assert ablation_name(m.config) == name


def test_ablation_config_round_trip_and_old_files():
    for name in ABLATIONS:
        cfg = ablation_config(CFG, name)
        d = cfg.to_dict()
        assert FactorTopyConfig.from_dict(d) == cfg
        assert ablation_name(d) == name
    # FactorTopy's own dict has no ablation keys; an old dict loads as FactorTopy
    d = CFG.to_dict()
    assert not {"topology", "select_layer", "select_space", "select_scale", "space_samples"} & set(
        d
    )
    assert FactorTopyConfig.from_dict(d) == CFG and not CFG.is_ablation
    with pytest.raises(ValueError, match="space_samples"):
        FactorTopyConfig(widths=(3,), space_samples=0)
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_config(CFG, "no_such")


# --------------------------------------------------------------------- ridge


def test_ridge_recovers_the_best_layer():
    """Vertex v responds to a linear map of layer k_v's features only: ridge's
    validation-chosen best layer must be k_v."""
    rng = np.random.default_rng(0)
    n, n_l, p, n_v = 240, 3, 12, 30
    x = [rng.normal(size=(n, p)).astype(np.float32) for _ in range(n_l)]
    truth = np.arange(n_v) % n_l
    w = rng.normal(size=(n_v, p))
    y = np.stack([x[truth[v]] @ w[v] for v in range(n_v)], 1)
    y = (y + 0.5 * y.std(0) * rng.normal(size=y.shape)).astype(np.float32)
    tr, va, te = np.arange(160), np.arange(160, 200), np.arange(200, 240)
    res = ridge_per_layer(
        [a[tr] for a in x], y[tr], [a[va] for a in x], y[va], [a[te] for a in x], y[te],
        cv=4, n_components=None, blas_threads=1,
    )  # fmt: skip
    np.testing.assert_array_equal(res.best_layer, truth)
    assert res.val_r2.shape == (n_l, n_v) and res.alphas.shape == (n_l, n_v)
    assert np.nanmean(res.test_r2) > 0.5
    # the test score is the chosen layer's own
    np.testing.assert_allclose(res.test_r2, res.test_r2_layers[truth, np.arange(n_v)], atol=1e-5)
    assert res.layer_profile()[np.arange(n_v), truth].all()
