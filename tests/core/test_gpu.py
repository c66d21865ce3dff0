"""GPU-only checks (skipped without CUDA): run by ``bench/gpu.sh`` on a lent GPU machine.

Self-contained: the helpers are defined here (not imported from other test modules,
whose private helpers change), and only the package's public API is used.
"""

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.model import FactorTopy, Selectors, gather_method
from napari_factortopy.core.runtime import resolve_device
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import predict, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _model(widths=(32, 48, 16), grid=(6, 7), v=600, d=32, seed=0) -> FactorTopy:
    """A float32 FactorTopy whose selectors are moved off their zero initialisation."""
    torch.manual_seed(seed)
    coords = np.random.default_rng(seed).normal(size=(v, 3))
    m = FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=d, hidden=32))
    for mlp, std in ((m.space_mlp, 3.0), (m.layer_mlp, 0.7), (m.scale_mlp, 0.7)):
        torch.nn.init.normal_(mlp[-1].weight, std=std)
    return m


def _tokens(m: FactorTopy, b=8, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h, w = m.config.grid
    local = [torch.randn(b, c, h, w, generator=g).to(device) for c in m.config.widths]
    glob = [torch.randn(b, c, generator=g).to(device) for c in m.config.widths]
    return local, glob


def _forward_backward(m: FactorTopy, local, glob, w, amp=False):
    m.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        y = m(local, glob)
    (y.float() * w).sum().backward()
    return y.detach().float().cpu(), {n: p.grad.float().cpu() for n, p in m.named_parameters()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_auto_device_is_cuda_and_its_gather_is_dense():
    assert resolve_device("auto").type == "cuda"
    assert gather_method("cuda") == "dense"


def test_cuda_forward_and_gradients_match_cpu():
    """CUDA (dense gather) against CPU (bag gather), float32, TF32 off."""
    m = _model()
    local, glob = _tokens(m)
    w = torch.randn(8, m.n_vertices, generator=torch.Generator().manual_seed(2))
    y_cpu, g_cpu = _forward_backward(m, local, glob, w)
    m = m.cuda()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        y_gpu, g_gpu = _forward_backward(
            m, [t.cuda() for t in local], [t.cuda() for t in glob], w.cuda()
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert (y_gpu - y_cpu).abs().max() <= 1e-4 * y_cpu.abs().max()
    for n in g_cpu:
        assert (g_gpu[n] - g_cpu[n]).abs().max() <= 1e-3 * g_cpu[n].abs().max() + 1e-9, n


def test_dense_and_bag_gathers_agree_on_cuda():
    m = _model().cuda()
    local, glob = _tokens(m, device="cuda")
    w = torch.randn(8, m.n_vertices, device="cuda")
    out = {}
    for method in ("bag", "dense"):
        m.gather = method
        out[method] = _forward_backward(m, local, glob, w)
    assert _rel(out["dense"][0], out["bag"][0]) < 1e-3
    for n in out["bag"][1]:
        assert _rel(out["dense"][1][n], out["bag"][1][n]) < 1e-2, n


def test_bf16_autocast_trains_forward_and_backward():
    """bf16 autocast: forward and every gradient stay close to float32 (the embedding
    bag's CUDA backward has no bf16 kernel; the dense gather has)."""
    m = _model(widths=(64, 96), grid=(8, 8), v=2000, d=64).cuda()
    local, glob = _tokens(m, b=16, device="cuda")
    w = torch.randn(16, m.n_vertices, device="cuda")
    y32, g32 = _forward_backward(m, local, glob, w)
    y16, g16 = _forward_backward(m, local, glob, w, amp=True)
    assert _rel(y16, y32) < 0.02
    for n in g32:
        assert _rel(g16[n], g32[n]) < 0.05, n


def _problem(n_images=160, v=60, widths=(8, 12), grid=(4, 4), seed=0):
    """Responses of a known FactorTopy (fixed selectors) on random tokens, plus noise."""
    rng = np.random.default_rng(seed)
    local = [rng.normal(size=(n_images, c, *grid)).astype(np.float32) for c in widths]
    glob = [rng.normal(size=(n_images, c)).astype(np.float32) for c in widths]
    coords = rng.normal(size=(v, 3))
    torch.manual_seed(seed)
    truth = FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=8, hidden=16))
    sel = Selectors(
        torch.as_tensor(rng.uniform(-0.6, 0.6, (v, 2)), dtype=torch.float32),
        torch.softmax(torch.as_tensor(rng.normal(size=(v, len(widths))) * 3).float(), 1),
        torch.as_tensor(rng.uniform(0.2, 0.8, v), dtype=torch.float32),
    )
    y = predict(truth, InMemoryFeatures(local, glob), np.arange(n_images), selectors=sel)
    y = (y - y.mean(0)) / y.std(0) + 0.3 * rng.normal(size=y.shape).astype(np.float32)
    return coords, local, glob, y.astype(np.float32), widths, grid


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_training_on_cuda_learns(amp):
    coords, local, glob, y, widths, grid = _problem()
    feats = InMemoryFeatures(local, glob, device="cuda")
    split = make_split(len(y), seed=0)
    torch.manual_seed(1)
    model = FactorTopy(coords, FactorTopyConfig(widths, grid, bottleneck=8, hidden=16)).cuda()
    yv = y[split.val]
    before = predict(model, feats, split.val, amp=False)
    r2_before = np.mean(1 - ((yv - before) ** 2).sum(0) / ((yv - yv.mean(0)) ** 2).sum(0))
    cfg = TrainConfig(batch_size=8, steps_per_epoch=40, max_epochs=6, lr=5e-3, amp=amp)
    res = list(train(model, feats, y, split, cfg))[-1]["result"]
    assert res.val_score > r2_before + 0.2
