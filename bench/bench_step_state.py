"""A training step's time with trained against freshly initialised selectors.

The weighted gather's cost depends on where the spatial selectors point: a fresh model
puts every vertex on one grid point (its bag sums read a few token-table rows, which
stay in cache), a trained one spreads them over the grid. Same process, same random
tokens, the shapes of the given model file::

    python bench/bench_step_state.py MODEL.ftopy [--batch 32] [--steps 5] [--rounds 2] [--bags]

Prints, per round, the median seconds per AdamW step (forward, backward, update; the
first step of each is left out) of a fresh model of the file's configuration and of the
file's trained one, with the spread (s.d.) of their spatial selectors' outputs. With
``--bags`` the trained model is also timed with the vertices that share their rows
read by bag sums instead of by groups (``gather_readout(..., group_min_mean=inf)``,
the gather before the grouped reading), in the same round.
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import numpy as np
import torch
from torch.nn import functional as F

from napari_factortopy.core import model as model_module
from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.core.model import FactorTopy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bags", action="store_true", help="also time the bag sums' gather")
    args = p.parse_args()
    fm = FittedModel.load(args.model)
    trained = fm.to_module()
    fresh = FactorTopy(fm.state["coords"], FactorTopyConfig.from_dict(fm.config))
    widths = fm.backbone.get("widths") or [768] * fm.n_layers
    h, w = fm.config.get("grid", (8, 8))
    g = torch.Generator().manual_seed(0)
    local = [torch.randn(args.batch, c, h, w, generator=g) for c in widths]
    global_ = [torch.randn(args.batch, c, generator=g) for c in widths]
    y = torch.randn(args.batch, fm.n_vertices, generator=g)
    runs = [("fresh", fresh, None), ("trained", trained, None)]
    if args.bags:
        runs.append(("trained, bags", trained, math.inf))
    for _ in range(args.rounds):
        for name, m, groups in runs:
            opt = torch.optim.AdamW(m.parameters(), lr=1e-9)
            times = []
            readout = model_module.gather_readout
            if groups is not None:
                model_module.gather_readout = partial(readout, group_min_mean=groups)
            for _ in range(args.steps):
                t = time.perf_counter()
                sel = m.selectors()
                loss = F.smooth_l1_loss(m(local, global_, sel), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            model_module.gather_readout = readout
            spread = sel.space.detach().std(0).numpy().round(3)
            print(
                f"{name:14s} batch {args.batch}: median {np.median(times[1:]):.2f} s/step "
                f"(space s.d. {spread})",
                flush=True,
            )


if __name__ == "__main__":
    main()
