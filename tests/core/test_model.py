"""FactorTopy's selection and gradients against independent implementations."""

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.encoding import (
    encoding_dim,
    joint_sphere_coordinates,
    positional_encoding,
)
from napari_factortopy.core.model import FactorTopy, bilinear_taps, weighted_gather
from tests.core.reference import naive_forward, reference_forward


def _model(widths=(5, 7, 3), grid=(4, 6), v=40, d=8, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = FactorTopy(
        rng.normal(size=(v, 3)), FactorTopyConfig(widths, grid, bottleneck=d, hidden=16)
    )
    # move the selectors away from their zero-initialised centre
    for mlp in (m.space_mlp, m.layer_mlp, m.scale_mlp):
        torch.nn.init.normal_(mlp[-1].weight, std=0.7)
    return m.to(dtype)


def _tokens(m, b=3, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h, w = m.config.grid
    local = [torch.randn(b, c, h, w, generator=g, dtype=dtype) for c in m.config.widths]
    glob = [torch.randn(b, c, generator=g, dtype=dtype) for c in m.config.widths]
    return local, glob


@pytest.mark.parametrize(
    ("widths", "grid"), [((5, 7, 3), (4, 6)), ((4,), (8, 8)), ((3, 3, 3, 3, 3), (1, 5))]
)
def test_forward_matches_reference_and_naive_loop(widths, grid):
    m = _model(widths, grid)
    local, glob = _tokens(m)
    ours = m(local, glob)
    ref = reference_forward(m, local, glob)
    naive = naive_forward(m, local, glob)
    assert ours.shape == (3, m.n_vertices)
    np.testing.assert_allclose(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.detach(), naive.detach(), rtol=1e-6, atol=1e-9)


def test_gradients_match_reference():
    m = _model()
    local, glob = _tokens(m)
    weights = torch.randn(3, m.n_vertices, dtype=torch.float64)
    grads = []
    for fn in (m.forward, lambda a, b: reference_forward(m, a, b)):
        m.zero_grad()
        (fn(local, glob) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name in grads[0]:
        np.testing.assert_allclose(
            grads[0][name], grads[1][name], rtol=1e-5, atol=1e-9, err_msg=name
        )
    # every parameter group is reached (selectors, align, readout)
    assert all(grads[0][n].abs().sum() > 0 for n in grads[0])


def test_weighted_gather_gradcheck():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (5, 4), generator=g)
    weight = torch.rand(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(weighted_gather, (index, weight, table))
    naive = torch.stack([(weight[v, :, None] * table[index[v]]).sum(0) for v in range(5)])
    np.testing.assert_allclose(weighted_gather(index, weight, table).detach(), naive.detach())


def test_bilinear_taps_match_grid_sample_corners_and_outside():
    grid = (3, 4)
    pts = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [0.99, -0.99], [-0.3, 0.7]])
    idx, w = bilinear_taps(pts, grid)
    img = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    expect = torch.nn.functional.grid_sample(
        img, pts[None, :, None], mode="bilinear", padding_mode="zeros", align_corners=False
    )[0, 0, :, 0]
    ours = (img.reshape(-1)[idx] * w).sum(1)
    np.testing.assert_allclose(ours, expect, atol=1e-6)
    # at the corner (-1, -1) only a quarter of pixel (0, 0) is inside the grid
    assert w[0].sum().item() == pytest.approx(0.25)


def test_initial_selectors_are_centre_uniform_half():
    m = FactorTopy(np.random.default_rng(0).normal(size=(10, 3)), FactorTopyConfig((4, 4, 4)))
    sel = m.selectors()
    assert torch.all(sel.space == 0)
    np.testing.assert_allclose(sel.layer.detach(), np.full((10, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(sel.scale.detach(), 0.5)


def test_wrong_token_shapes_are_named():
    m = _model()
    local, glob = _tokens(m)
    with pytest.raises(ValueError, match="expects 3 layers"):
        m(local[:2], glob[:2])
    with pytest.raises(ValueError, match=r"layer 1: local tokens must have shape \(3, 7, 4, 6\)"):
        m([local[0], local[1][:, :, :2], local[2]], glob)


def test_positional_encoding_closed_form():
    coords = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.5], [1.0, 0.5, 0.25]])
    enc = positional_encoding(coords, n_freqs=4, max_period=100.0)
    assert enc.shape == (3, encoding_dim(4)) == (3, 24)
    # longest axis x spans [0, 100]; y keeps aspect: [0, 50]; z: [0, 25]
    t = np.array([[0, 0, 0], [100, 50, 25], [50, 25, 12.5]])
    omega = 100.0 ** (-np.arange(4) / 4)
    for v in range(3):
        for a in range(3):
            block = enc[v, a * 8 : (a + 1) * 8]
            np.testing.assert_allclose(block[:4], np.sin(omega * t[v, a]), atol=1e-5)
            np.testing.assert_allclose(block[4:], np.cos(omega * t[v, a]), atol=1e-5)


def test_joint_sphere_coordinates_shift():
    lh = np.array([[-1.0, 0, 0], [3.0, 1, 1]])
    rh = np.array([[-2.0, 0, 0], [2.0, 5, 5]])
    j = joint_sphere_coordinates(lh, rh)
    # rh min x goes to lh_min + 1.5 * (lh_max - lh_min) = -1 + 6 = 5
    np.testing.assert_allclose(j[2:, 0], [5.0, 9.0])
    np.testing.assert_allclose(j[:2], lh)
    np.testing.assert_allclose(j[2:, 1:], rh[:, 1:])


def test_no_vertex_by_layer_tensor_at_paper_like_ratio():
    """The largest tensor saved for backward is O(V·B·D), never O(V·B·D·L)."""
    m = _model(widths=(6,) * 6, grid=(4, 4), v=300, d=16, dtype=torch.float32)
    local, glob = _tokens(m, b=8, dtype=torch.float32)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(local, glob).sum().backward()
    v, b, d, n_layers = 300, 8, 16, 6
    # the biggest saved tensors are the (V, 192) encoding and the (V, B*D) selection
    assert max(sizes) <= max(v * encoding_dim(), v * b * d)
    assert max(sizes) * 4 <= v * b * d * n_layers
