"""GPU-only checks (skipped without CUDA): run by bench/gpu.sh on a lent GPU machine."""

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.runtime import resolve_device
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import predict, train
from tests.core.test_model import _model, _tokens
from tests.core.test_training import _fresh, _problem

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_cuda_forward_and_gradients_match_cpu():
    m = _model(dtype=torch.float32)
    local, glob = _tokens(m, dtype=torch.float32)
    w = torch.randn(3, m.n_vertices)
    out = {}
    for dev in ("cpu", "cuda"):
        mm = m.to(dev)
        mm.zero_grad()
        y = mm([t.to(dev) for t in local], [t.to(dev) for t in glob])
        (y * w.to(dev)).sum().backward()
        out[dev] = (y.detach().cpu(), {n: p.grad.cpu() for n, p in mm.named_parameters()})
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-4, atol=1e-5)
    for n in out["cpu"][1]:
        np.testing.assert_allclose(
            out["cuda"][1][n], out["cpu"][1][n], rtol=1e-3, atol=1e-5, err_msg=n
        )


def test_bf16_autocast_stays_close_to_float32():
    m = _model(widths=(32, 48), grid=(8, 8), v=500, d=64, dtype=torch.float32).cuda()
    local, glob = _tokens(m, b=8, dtype=torch.float32)
    local, glob = [t.cuda() for t in local], [t.cuda() for t in glob]
    with torch.no_grad():
        ref = m(local, glob)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = m(local, glob).float()
    rel = (low - ref).norm() / ref.norm()
    assert rel < 0.02


def test_training_on_cuda_learns():
    coords, feats_cpu, y = _problem()
    feats = InMemoryFeatures(
        [t.numpy() for t in feats_cpu.local], [t.numpy() for t in feats_cpu.global_], device="cuda"
    )
    split = make_split(len(y), seed=0)
    model = _fresh(coords).cuda()
    before = predict(model, feats, split.val)
    cfg = TrainConfig(batch_size=8, steps_per_epoch=40, max_epochs=6, lr=5e-3)
    recs = list(train(model, feats, y, split, cfg))
    res = recs[-1]["result"]
    yv = y[split.val]
    r2_before = np.mean(1 - ((yv - before) ** 2).sum(0) / ((yv - yv.mean(0)) ** 2).sum(0))
    assert res.val_score > r2_before + 0.2
