"""GNet-style vs FactorTopy training-step time, side by side (same process, same inputs)."""

import sys

import numpy as np
import torch

from napari_factortopy.app.compare_methods import step_seconds
from napari_factortopy.core.baselines import GNet
from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.model import FactorTopy

v, c, d = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
L, n = 12, 32
rng = np.random.default_rng(0)
cfg = FactorTopyConfig(widths=(c,) * L, grid=(8, 8), bottleneck=d)
feats = InMemoryFeatures(
    [rng.normal(size=(n, c, 8, 8)).astype(np.float32) for _ in range(L)],
    [rng.normal(size=(n, c)).astype(np.float32) for _ in range(L)],
)
y = rng.normal(size=(n, v)).astype(np.float32)
coords = rng.normal(size=(v, 3))
rows = np.arange(n)
torch.manual_seed(0)
out = {}
for name, m in (("factortopy", FactorTopy(coords, cfg)), ("gnet", GNet(coords, cfg))):
    out[name] = step_seconds(m, feats, y, rows, batch_size=8, n_steps=3, warmup=1)
    print(name, f"{out[name]:.3f} s/step", flush=True)
print(f"V={v} C={c} D={d} L={L} batch 8: gnet/factortopy = {out['gnet'] / out['factortopy']:.1f}x")
