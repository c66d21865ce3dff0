"""AdamW without ``torch.optim``: the same update, without importing ``torch._dynamo``.

Every ``torch.optim`` optimiser imports ``torch._dynamo`` (and sympy) when it is built
(``add_param_group`` is wrapped by ``torch._disable_dynamo``) and again at each
``step`` (``_use_grad_for_differentiable``): about 3 s of a short training job's
start-up (BENCHMARKS.md, issue 18). Training uses none of dynamo, so
:func:`napari_factortopy.core.training.train` uses this class: the update of
``torch.optim.AdamW`` with its defaults (decoupled weight decay, no amsgrad, not
maximising), and state dicts in ``torch.optim.AdamW``'s format, so checkpoints written
by either load in the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["AdamW"]


class AdamW:
    """AdamW (Loshchilov & Hutter) on a list of parameters, one parameter group.

    Per parameter ``p`` with gradient ``g`` at step ``t`` (1-based)::

        p ← p · (1 − lr · weight_decay)
        m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²
        p ← p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)

    Parameters
    ----------
    params : iterable of tensors
    lr, betas, eps, weight_decay
        As ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("AdamW got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": params,
                "lr": float(lr),
                "betas": (float(betas[0]), float(betas[1])),
                "eps": float(eps),
                "weight_decay": float(weight_decay),
            }
        ]
        self.state: dict[int, dict[str, Any]] = {}  # by position in params

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            g = p.grad
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {
                    "step": 0,
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            st["step"] += 1
            t = st["step"]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            p.mul_(1 - lr * wd)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim.AdamW.state_dict()``'s layout."""
        group = self.param_groups[0]
        state = {
            i: {
                "step": torch.tensor(float(st["step"])),
                "exp_avg": st["exp_avg"],
                "exp_avg_sq": st["exp_avg_sq"],
            }
            for i, st in self.state.items()
        }
        meta = {k: v for k, v in group.items() if k != "params"}
        meta.update(
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=True,
            params=list(range(len(group["params"]))),
        )
        return {"state": state, "param_groups": [meta]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by :meth:`state_dict` or by ``torch.optim.AdamW``.

        Raises
        ------
        ValueError
            Another number of parameter groups or parameters, another shape, or an
            option this class does not implement (amsgrad, maximize).
        """
        params = self.param_groups[0]["params"]
        groups = state_dict.get("param_groups") or []
        if len(groups) != 1 or len(groups[0].get("params", ())) != len(params):
            sizes = [len(g.get("params", ())) for g in groups]
            raise ValueError(
                f"the optimiser state has parameter groups of sizes {sizes}; expected one "
                f"group of {len(params)} parameters"
            )
        saved = groups[0]
        if saved.get("amsgrad") or saved.get("maximize"):
            raise ValueError(
                "the optimiser state uses amsgrad or maximize, which AdamW here lacks"
            )
        state = {}
        for pos, key in enumerate(saved["params"]):
            st = state_dict.get("state", {}).get(key)
            if st is None:
                continue
            p = params[pos]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            if m.shape != p.shape or v.shape != p.shape:
                raise ValueError(
                    f"the optimiser state of parameter {pos} has shape {tuple(m.shape)}; "
                    f"the parameter has {tuple(p.shape)}"
                )
            step = st["step"]
            state[pos] = {
                "step": int(step.item() if isinstance(step, torch.Tensor) else step),
                "exp_avg": m.to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": v.to(device=p.device, dtype=p.dtype).clone(),
            }
        self.state = state
        group = self.param_groups[0]
        group["lr"] = float(saved["lr"])
        group["betas"] = (float(saved["betas"][0]), float(saved["betas"][1]))
        group["eps"] = float(saved["eps"])
        group["weight_decay"] = float(saved["weight_decay"])
