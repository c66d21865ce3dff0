"""core.adamw.AdamW against torch.optim.AdamW (the reference), and the reason it
exists: training imports no torch._dynamo (issue 18)."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from napari_factortopy.core.adamw import AdamW


def _params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (2, 4, 4), (1,)]
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def _grads(params, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for k, p in enumerate(params):
        # one parameter without a gradient at odd steps: it must be skipped
        p.grad = None if (k == 1 and step % 2) else torch.randn(p.shape, generator=g)


@pytest.mark.parametrize(("lr", "wd"), [(1e-3, 1e-2), (5e-2, 0.0), (3e-4, 0.3)])
def test_same_update_as_torch_adamw(lr, wd):
    ours, ref = _params(), _params()
    opt = AdamW(ours, lr=lr, weight_decay=wd, betas=(0.8, 0.99))
    ref_opt = torch.optim.AdamW(ref, lr=lr, weight_decay=wd, betas=(0.8, 0.99))
    for step in range(25):
        _grads(ours, step)
        _grads(ref, step)
        opt.step()
        ref_opt.step()
        if step == 10:  # a learning-rate change through param_groups, as training does
            for o in (opt, ref_opt):
                o.param_groups[0]["lr"] = lr * 2
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in ours)


def test_state_dicts_load_both_ways():
    ref = _params()
    ref_opt = torch.optim.AdamW(ref, lr=1e-2)
    for step in range(5):
        _grads(ref, step)
        ref_opt.step()
    # torch's state → ours; both continue alike
    ours = [p.detach().clone().requires_grad_() for p in ref]
    opt = AdamW(ours, lr=1.0)
    opt.load_state_dict(ref_opt.state_dict())
    assert opt.param_groups[0]["lr"] == 1e-2
    for step in range(5, 9):
        _grads(ours, step)
        _grads(ref, step)
        opt.step()
        ref_opt.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # ours → a fresh torch AdamW
    back = [p.detach().clone().requires_grad_() for p in ours]
    again = torch.optim.AdamW(back, lr=0.5)
    again.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint file would
    for o, ps in ((again, back), (opt, ours)):
        _grads(ps, 9)
        o.step()
    for a, b in zip(ours, back, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # a state for other parameters is refused, naming what differs
    with pytest.raises(ValueError, match=r"sizes \[4\]; expected one group of 2 parameters"):
        AdamW(ours[:2]).load_state_dict(opt.state_dict())
    wrong = [torch.zeros(2, 2, requires_grad=True) for _ in ours]
    with pytest.raises(ValueError, match="has shape"):
        AdamW(wrong).load_state_dict(opt.state_dict())


def test_training_imports_no_dynamo():
    """A short training run (the paper recipe, a budget, checkpoints) never imports
    torch._dynamo, which torch.optim would (about 3 s of start-up)."""
    code = textwrap.dedent(
        """
        import sys, tempfile
        import numpy as np
        from napari_factortopy.core.config import FactorTopyConfig, TrainConfig
        from napari_factortopy.core.feature_source import InMemoryFeatures
        from napari_factortopy.core.model import FactorTopy
        from napari_factortopy.core.splits import make_split
        from napari_factortopy.core.training import train

        rng = np.random.default_rng(0)
        n, widths, grid = 40, (4, 6), (3, 3)
        local = [rng.normal(size=(n, c, *grid)).astype(np.float32) for c in widths]
        glob = [rng.normal(size=(n, c)).astype(np.float32) for c in widths]
        y = rng.normal(size=(n, 12)).astype(np.float32)
        fcfg = FactorTopyConfig(widths, grid, bottleneck=4, hidden=8)
        model = FactorTopy(rng.normal(size=(12, 3)), fcfg)
        cfg = TrainConfig(steps_per_epoch=5, max_epochs=2, batch_size=4)
        with tempfile.TemporaryDirectory() as tmp:
            recs = list(train(model, InMemoryFeatures(local, glob), y, make_split(n, seed=0),
                              cfg, checkpoint_dir=tmp))
        assert recs[-1]["result"].steps == 10
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
