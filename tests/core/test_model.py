"""FactorTopy against an independent transcription of METHOD.md §1–§2.

The reference (:mod:`napari_factortopy.core.reference`) has its own positional
encoding, selector MLPs, channel-align matrices and ``grid_sample`` forward; only the
weights are copied in from the model. Outputs and the gradient of every parameter are
compared end to end in float64, and the reference's bilinear reading is checked once
more by an explicit vertex-by-vertex loop.
"""

import math

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.encoding import (
    encoding_dim,
    joint_sphere_coordinates,
    positional_encoding,
)
from napari_factortopy.core.model import (
    GATHER_METHODS,
    FactorTopy,
    bilinear_taps,
    gather_method,
    gather_readout,
    weighted_gather,
)
from napari_factortopy.core.reference import (
    ReferenceFactorTopy,
    reference_encoding,
    reference_forward,
)

#: (widths, grid, V, D): square and non-square grids, a one-row grid, L = 1.
SHAPES = [
    ((5, 7, 3), (4, 6), 40, 8),
    ((4,), (8, 8), 30, 6),
    ((3, 3, 3, 3, 3), (1, 5), 25, 4),
    ((6, 2), (3, 2), 17, 5),
    ((2, 9, 4, 3), (5, 3), 50, 16),
]
SHAPE_IDS = ["L3-4x6", "L1-8x8", "L5-1x5", "L2-3x2", "L4-5x3"]


def _coords(v, seed=0):
    """Random vertex positions with unequal axis extents (so S differs per axis)."""
    return np.random.default_rng(seed).normal(size=(v, 3)) * np.array([1.0, 0.6, 1.7])


def _model(widths=(5, 7, 3), grid=(4, 6), v=40, d=8, seed=0, dtype=torch.float64):
    """A FactorTopy whose selectors are moved away from their zero-initialised centre.

    Returns
    -------
    model : FactorTopy
    coords : array of shape (V, 3)
    """
    torch.manual_seed(seed)
    coords = _coords(v, seed)
    m = FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=d, hidden=16))
    for mlp, std in ((m.space_mlp, 3.0), (m.layer_mlp, 0.7), (m.scale_mlp, 0.7)):
        torch.nn.init.normal_(mlp[-1].weight, std=std)
    return m.to(dtype), coords


def _tokens(m, b=3, seed=1, dtype=torch.float64, requires_grad=False):
    """Random local (B, C_l, h, w) and global (B, C_l) tokens for every layer."""
    g = torch.Generator().manual_seed(seed)
    h, w = m.config.grid
    local = [torch.randn(b, c, h, w, generator=g, dtype=dtype) for c in m.config.widths]
    glob = [torch.randn(b, c, generator=g, dtype=dtype) for c in m.config.widths]
    for t in (*local, *glob):
        t.requires_grad_(requires_grad)
    return local, glob


def naive_forward(ref, local, global_):
    """Vertex by vertex, layer by layer, with bilinear weights written out.

    ``grid_sample`` with ``align_corners=False`` puts pixel centre (r, c) at
    ``x = (2c + 1)/w − 1``, ``y = (2r + 1)/h − 1``; a point's weight on a pixel is
    ``max(0, 1 − |px − c|)·max(0, 1 − |py − r|)`` in pixel units, and pixels outside
    the grid (zero padding) contribute nothing.

    Returns
    -------
    tensor of shape (B, V), float64
    """
    with torch.no_grad():
        sel = ref.selectors()
        h, w = ref.grid
        b = local[0].shape[0]
        out = torch.zeros(b, ref.beta.shape[0], dtype=torch.float64)
        for v in range(ref.beta.shape[0]):
            px = ((float(sel.space[v, 0]) + 1) * w - 1) / 2
            py = ((float(sel.space[v, 1]) + 1) * h - 1) / 2
            f = torch.zeros(b, ref.bottleneck, dtype=torch.float64)
            for li in range(len(ref.widths)):
                loc = torch.zeros(b, ref.bottleneck, dtype=torch.float64)
                for r in range(h):
                    for c in range(w):
                        wt = max(0.0, 1 - abs(px - c)) * max(0.0, 1 - abs(py - r))
                        loc += wt * (local[li][:, :, r, c] @ ref.local_align[li].T)
                glo = global_[li] @ ref.global_align[li].T
                a = float(sel.scale[v])
                f += float(sel.layer[v, li]) * ((1 - a) * loc + a * glo)
            out[:, v] = f @ ref.beta[v] / ref.bottleneck + ref.bias[v]
    return out


def test_reference_encoding_closed_form():
    coords = torch.tensor([[0.0, 0, 0], [2.0, 1.0, 0.5], [1.0, 0.5, 0.25]], dtype=torch.float64)
    enc = reference_encoding(coords, n_freqs=4, max_period=100.0)
    assert enc.shape == (3, 24)
    t = np.array([[0, 0, 0], [100, 50, 25], [50, 25, 12.5]])  # longest axis spans [0, 100]
    omega = 100.0 ** (-np.arange(4) / 4)
    for v in range(3):
        for a in range(3):
            np.testing.assert_allclose(enc[v, a * 8 : a * 8 + 4], np.sin(omega * t[v, a]))
            np.testing.assert_allclose(enc[v, a * 8 + 4 : a * 8 + 8], np.cos(omega * t[v, a]))


@pytest.mark.parametrize(("n_freqs", "max_period"), [(32, 1000.0), (5, 37.0)])
def test_model_encoding_matches_reference(n_freqs, max_period):
    coords = _coords(60, seed=3)
    ours = positional_encoding(coords, n_freqs, max_period)
    ref = reference_encoding(torch.as_tensor(coords), n_freqs, max_period)
    assert ours.shape == tuple(ref.shape) == (60, encoding_dim(n_freqs))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=2e-7)  # float32 storage


@pytest.mark.parametrize("grouped", [False, True], ids=["bags", "groups"])
@pytest.mark.parametrize(("widths", "grid", "v", "d"), SHAPES, ids=SHAPE_IDS)
def test_forward_and_every_gradient_match_reference(widths, grid, v, d, grouped, monkeypatch):
    """The model against the reference, its gather by bag sums and by groups of the
    vertices that share a grid cell (matrix products; what trained selectors get)."""
    from functools import partial

    from napari_factortopy.core import model as model_module

    kw = {"group_min_mean": 0 if grouped else math.inf}
    monkeypatch.setattr(model_module, "gather_readout", partial(gather_readout, **kw))
    m, coords = _model(widths, grid, v, d)
    ref = ReferenceFactorTopy.like(m, coords)
    np.testing.assert_array_equal(ref.encoding.numpy(), m.encoding.numpy())

    # selectors agree; some points lie within half a pixel of the grid's border (where
    # zero padding matters), and, on grids with more than one row, some inside it
    sel, rsel = m.selectors(), ref.selectors()
    for key in ("space", "layer", "scale"):
        np.testing.assert_allclose(
            getattr(sel, key).detach(), getattr(rsel, key).detach(), rtol=1e-12, atol=1e-14
        )
    h, w = grid
    near_border = (rsel.space[:, 0].abs() > 1 - 1 / w) | (rsel.space[:, 1].abs() > 1 - 1 / h)
    assert near_border.any()
    assert h == 1 or not near_border.all()

    local, glob = _tokens(m, requires_grad=True)
    rlocal, rglob = _tokens(m, requires_grad=True)
    weights = torch.randn(3, v, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = m(local, glob)
    theirs = reference_forward(ref, rlocal, rglob)
    assert ours.shape == theirs.shape == (3, v)
    np.testing.assert_allclose(ours.detach(), theirs.detach(), rtol=1e-10, atol=1e-12)
    assert theirs.detach().std() > 0.1  # not a trivially small output

    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    counterpart = ref.counterparts()
    names = [n for n, _ in m.named_parameters()]
    assert sorted(names) == sorted(counterpart)
    for name, p in m.named_parameters():
        q = counterpart[name]
        g_ours = p.grad.reshape(q.shape)
        np.testing.assert_allclose(g_ours, q.grad, rtol=1e-9, atol=1e-12, err_msg=name)
        if name.startswith("layer_mlp") and len(widths) == 1:
            # one layer: π ≡ 1, the layer selector cannot matter
            assert q.grad.abs().max() < 1e-12, name
        else:
            assert q.grad.abs().max() > 1e-6, f"{name} is not reached"
    for a, b in zip([*local, *glob], [*rlocal, *rglob], strict=True):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("widths", "grid", "v", "d"), SHAPES[:3], ids=SHAPE_IDS[:3])
def test_reference_matches_an_explicit_loop(widths, grid, v, d):
    m, coords = _model(widths, grid, v, d)
    ref = ReferenceFactorTopy.like(m, coords)
    local, glob = _tokens(m)
    with torch.no_grad():
        expect = naive_forward(ref, local, glob)
        np.testing.assert_allclose(reference_forward(ref, local, glob), expect, rtol=1e-10)
        np.testing.assert_allclose(m(local, glob), expect, rtol=1e-10)


def test_comparison_sees_a_small_change_in_any_parameter():
    """Each parameter, nudged by 1e-6 in the reference only, breaks the agreement."""
    m, coords = _model()
    local, glob = _tokens(m)
    with torch.no_grad():
        ours = m(local, glob)
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == 3 * 5 + 2 * 3 + 2
    for name in names:
        ref = ReferenceFactorTopy.like(m, coords)
        with torch.no_grad():
            q = ref.counterparts()[name]
            q.view(-1)[0] += 1e-6 * max(1.0, float(q.abs().max()))
            diff = (reference_forward(ref, local, glob) - ours).abs().max()
        assert diff > 1e-11, name


def test_copy_refuses_a_model_with_other_parameters():
    m, coords = _model()
    ref = ReferenceFactorTopy.like(m, coords)
    m.register_parameter("extra", torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)))
    with pytest.raises(KeyError, match="extra"):
        ref.copy_from(m)


@pytest.mark.parametrize(
    ("method", "block_bytes"), [("bag", None), ("dense", None), ("dense", 4 * 7 * 2)]
)
def test_weighted_gather_gradcheck(method, block_bytes):
    """Both implementations (and the dense one in blocks of 2 vertices) against a naive
    loop and finite differences; the indices repeat within a bag (they add up)."""
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (5, 4), generator=g)
    index[0, 1] = index[0, 0]
    weight = torch.rand(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kw = {"method": method} | ({"block_bytes": block_bytes} if block_bytes else {})

    def gather(w, t):
        return weighted_gather(index, w, t, **kw)

    assert torch.autograd.gradcheck(gather, (weight, table))
    naive = torch.stack([(weight[v, :, None] * table[index[v]]).sum(0) for v in range(5)])
    np.testing.assert_allclose(gather(weight, table).detach(), naive.detach())


def _naive_readout(index, weight, table, beta) -> np.ndarray:
    """``y[v, i] = Σ_j weight[v, j] · Σ_d table[index[v, j]][i, d] · beta[v, d]`` by
    loops, (V, B) float64: the fused gather + readout's reference."""
    n_v, k = index.shape
    d = beta.shape[1]
    b = table.shape[1] // d
    naive = torch.zeros(n_v, b, dtype=torch.float64)
    for v in range(n_v):
        for j in range(k):
            row = table[index[v, j]].view(b, d)
            for i in range(b):
                naive[v, i] += weight[v, j] * (row[i] * beta[v]).sum()
    return naive.detach().numpy()


@pytest.mark.parametrize("groups", [math.inf, 0], ids=["bags", "groups"])
@pytest.mark.parametrize("per_block", [1, 2, 5, 7])
def test_gather_readout_gradcheck_in_blocks(per_block, groups):
    """The fused gather and readout, in blocks of 1, 2 and 5 vertices (the last block
    short) and in one block, against a naive loop and finite differences in weight,
    table and beta; indices repeat within a bag. By bag sums, and by groups of
    vertices that read the same rows (here every vertex its own group)."""
    g = torch.Generator().manual_seed(1)
    n_v, k, n_rows, b, d = 7, 4, 6, 2, 3
    index = torch.randint(0, n_rows, (n_v, k), generator=g)
    index[2, 3] = index[2, 0]
    f64 = {"generator": g, "dtype": torch.float64, "requires_grad": True}
    weight = torch.rand(n_v, k, **f64)
    table = torch.randn(n_rows, b * d, **f64)
    beta = torch.randn(n_v, d, **f64)

    def fused(w, t, bt):
        kw = {"group_min_mean": groups}
        return gather_readout(index, w, t, bt, block_bytes=4 * b * d * per_block, **kw)

    assert torch.autograd.gradcheck(fused, (weight, table, beta))
    naive = _naive_readout(index, weight, table, beta)
    np.testing.assert_allclose(fused(weight, table, beta).detach(), naive, rtol=1e-12)


@pytest.mark.parametrize("groups", [math.inf, 0], ids=["bags", "groups"])
@pytest.mark.parametrize("shared_cols", [(1, 3), (0, 1, 2, 3)])
def test_gather_readout_with_rows_every_vertex_reads(shared_cols, groups):
    """Columns of the index naming the same row for every vertex (the global tokens;
    all of them in the no-space ablation) are read by a matrix product: the same
    numbers as a naive loop and finite differences, in blocks of 3 vertices (the last
    one short), the other columns by bag sums or by groups."""
    g = torch.Generator().manual_seed(2)
    n_v, k, n_rows, b, d = 7, 4, 6, 2, 3
    index = torch.randint(0, n_rows, (n_v, k), generator=g)
    for j, row in zip(shared_cols, (5, 0, 5, 2), strict=False):
        index[:, j] = row  # row 5 read twice by every vertex when two columns share it
    f64 = {"generator": g, "dtype": torch.float64, "requires_grad": True}
    weight = torch.rand(n_v, k, **f64)
    table = torch.randn(n_rows, b * d, **f64)
    beta = torch.randn(n_v, d, **f64)

    def fused(w, t, bt):
        return gather_readout(index, w, t, bt, block_bytes=4 * b * d * 3, group_min_mean=groups)

    assert torch.autograd.gradcheck(fused, (weight, table, beta))
    naive = _naive_readout(index, weight, table, beta)
    np.testing.assert_allclose(fused(weight, table, beta).detach(), naive, rtol=1e-12)


def test_gather_readout_by_groups_of_vertices_that_read_the_same_rows():
    """Vertices in a few cells (each cell's vertices name the same rows, with their own
    weights, as trained spatial selectors give; one cell reads a row twice), in an
    order that mixes the cells, plus one shared column: read by groups (matrix
    products) they give the naive loop's numbers and finite differences, in blocks of
    2 vertices; the grouping is chosen when the cells hold enough vertices."""
    from napari_factortopy.core import gather as gather_module

    g = torch.Generator().manual_seed(4)
    n_v, k, n_rows, b, d = 11, 4, 9, 2, 3
    cells = torch.tensor([[0, 1, 3, 4], [4, 5, 7, 7], [2, 3, 5, 6]])
    cell_of = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 1, 2, 0])
    index = torch.cat([cells[cell_of], torch.full((n_v, 1), 8)], 1)
    f64 = {"generator": g, "dtype": torch.float64, "requires_grad": True}
    weight = torch.rand(n_v, k + 1, **f64)
    table = torch.randn(n_rows, b * d, **f64)
    beta = torch.randn(n_v, d, **f64)
    grouping = gather_module._row_groups(index[:, :k], 3)
    assert grouping is not None and sorted(grouping[1]) == [3, 4, 4]
    assert gather_module._row_groups(index[:, :k], 4) is None  # 11 / 3 < 4: bags

    def fused(w, t, bt):
        return gather_readout(index, w, t, bt, block_bytes=4 * b * d * 2, group_min_mean=3)

    assert torch.autograd.gradcheck(fused, (weight, table, beta))
    naive = _naive_readout(index, weight, table, beta)
    np.testing.assert_allclose(fused(weight, table, beta).detach(), naive, rtol=1e-12)


def test_gather_method_follows_the_device_and_refuses_unknown_names():
    assert gather_method("cpu") == "bag"
    assert gather_method("cuda") == "dense"
    assert gather_method(torch.device("mps")) == "dense"
    with pytest.raises(ValueError, match="gather method"):
        weighted_gather(
            torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), torch.ones(1, 1), "x"
        )


def test_dense_gather_matches_the_bag_gather_in_float32():
    """The GPU path's code, run on the CPU: forward and every parameter's gradient of a
    float32 model equal the CPU path's within 1e-5 (relative to the largest value)."""
    m, _ = _model(widths=(6, 9, 4), grid=(5, 7), v=120, d=16, dtype=torch.float32)
    local, glob = _tokens(m, b=4, dtype=torch.float32)
    w = torch.randn(4, m.n_vertices, generator=torch.Generator().manual_seed(3))
    out = {}
    for method in GATHER_METHODS:
        m.gather = method
        m.zero_grad()
        y = m(local, glob)
        (y * w).sum().backward()
        out[method] = (y.detach().clone(), {n: p.grad.clone() for n, p in m.named_parameters()})
    y_bag, g_bag = out["bag"]
    y_dense, g_dense = out["dense"]
    scale = y_bag.abs().max()
    assert (y_dense - y_bag).abs().max() <= 1e-5 * scale
    for name in g_bag:
        ref = g_bag[name]
        assert (g_dense[name] - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-12, name


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
    m, _ = _model()
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
    m, _ = _model(widths=(6,) * 6, grid=(4, 4), v=300, d=16, dtype=torch.float32)
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


def test_dense_gather_trains_under_bf16_autocast():
    """Forward and backward under bf16 autocast through the GPU path's code (run on
    the CPU): the gradients of every parameter stay close to float32's (the embedding
    bag's CUDA backward has no bf16 kernel, which crashed ``--amp`` training)."""
    m, _ = _model(widths=(16, 24), grid=(6, 6), v=300, d=16, dtype=torch.float32)
    m.gather = "dense"
    local, glob = _tokens(m, b=8, dtype=torch.float32)
    w = torch.randn(8, m.n_vertices, generator=torch.Generator().manual_seed(4))
    grads = {}
    for amp in (False, True):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = m(local, glob)
        assert y.dtype == (torch.bfloat16 if amp else torch.float32)
        (y.float() * w).sum().backward()
        grads[amp] = {n: p.grad.clone() for n, p in m.named_parameters()}
    for name, ref in grads[False].items():
        rel = (grads[True][name] - ref).norm() / ref.norm()
        assert rel < 0.02, (name, float(rel))
