"""Typed, frozen configurations: the architecture and the optimisation recipe.

Both are plain dataclasses (no torch), passed end to end — CLI, Train panel, Python —
and recorded in the model file through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["FactorTopyConfig", "TrainConfig"]


@dataclass(frozen=True)
class FactorTopyConfig:
    """Architecture of a FactorTopy model.

    Attributes
    ----------
    widths : tuple of int, length L
        Channel width ``C_l`` of each backbone layer.
    grid : (h, w)
        Local-token grid the features are resized to.
    bottleneck : int
        Shared channel space D after channel alignment.
    hidden : int
        Width of the selector MLPs.
    n_freqs, max_period
        Positional encoding (see :func:`~napari_factortopy.core.encoding.positional_encoding`).
    """

    widths: tuple[int, ...]
    grid: tuple[int, int] = (8, 8)
    bottleneck: int = 128
    hidden: int = 128
    n_freqs: int = 32
    max_period: float = 1000.0
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(c) for c in self.widths))
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts; found {self.widths}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be (h, w) with h, w >= 1; found {self.grid}")
        if self.bottleneck < 1 or self.hidden < 1:
            raise ValueError("bottleneck and hidden must be >= 1")

    @property
    def n_layers(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FactorTopyConfig:
        known = {
            k: d[k]
            for k in ("widths", "grid", "bottleneck", "hidden", "n_freqs", "max_period")
            if k in d
        }
        return cls(**known, extra=dict(d.get("extra", {})))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe; defaults are the paper's (METHOD.md §3).

    Attributes
    ----------
    lr, weight_decay, betas : AdamW settings.
    batch_size : int
        Images per step.
    clip_norm : float
        Gradient-norm clipping.
    steps_per_epoch : int
        Optimiser steps between validations.
    max_epochs : int
        Hard cap on epochs.
    patience : int
        Stop after this many epochs without improvement of the validation score.
    top_k : int
        Checkpoints kept (best validation scores) for the greedy soup.
    reg_weight, reg_decay_steps : float, int
        λ and T of the decaying selector regulariser ``λ·max(0, 1 − t/T)·R``.
    smooth_l1_beta : float
    soup : bool
        Greedy soup of the kept checkpoints on the validation split.
    seed : int
        Seeds initialisation order of batches.
    eval_batch_size : int
        Images per forward pass when predicting.
    max_seconds : float, optional
        Wall-clock budget; training stops at the next validation after it.
    log_every : int
        A ``"step"`` record every this many steps.
    amp : bool
        bf16 autocast on CUDA.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 8
    clip_norm: float = 0.5
    steps_per_epoch: int = 1000
    max_epochs: int = 1000
    patience: int = 20
    top_k: int = 10
    reg_weight: float = 0.1
    reg_decay_steps: int = 6000
    smooth_l1_beta: float = 0.1
    soup: bool = True
    seed: int = 0
    eval_batch_size: int = 64
    max_seconds: float | None = None
    log_every: int = 50
    amp: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {
            k: (tuple(v) if k == "betas" else v)
            for k, v in d.items()
            if k in cls.__dataclass_fields__
        }
        return cls(**known)
