"""Typed, frozen configurations: the architecture and the optimisation recipe.

Both are plain dataclasses (no torch), passed end to end — CLI, Train panel, Python —
and recorded in the model file through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["AUTO_CHOSEN", "RECIPES", "FactorTopyConfig", "TrainConfig", "recipe_settings"]

#: Training recipes (see :class:`TrainConfig`).
RECIPES = ("paper", "auto")
#: TrainConfig fields the ``auto`` recipe chooses when they are not given.
AUTO_CHOSEN = ("batch_size", "lr", "steps_per_epoch", "reg_decay_steps")


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
    topology, select_layer, select_space, select_scale, space_samples
        Ablations (METHOD.md §6; :mod:`~napari_factortopy.core.ablations` names them).
        The defaults are FactorTopy itself. ``topology=False``: selector outputs are
        free per-vertex parameters instead of MLPs of the encoding;
        ``select_layer=False``: uniform layer weights; ``select_space=False``: the mean
        over the grid instead of a point; ``select_scale=False``: scale fixed at ½;
        ``space_samples=K``: K space points per vertex, averaged. They are written by
        :meth:`to_dict` only when they differ from the default, so a FactorTopy model
        file is unchanged and older files load as FactorTopy.
    """

    widths: tuple[int, ...]
    grid: tuple[int, int] = (8, 8)
    bottleneck: int = 128
    hidden: int = 128
    n_freqs: int = 32
    max_period: float = 1000.0
    extra: dict = field(default_factory=dict, compare=False)
    topology: bool = True
    select_layer: bool = True
    select_space: bool = True
    select_scale: bool = True
    space_samples: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(c) for c in self.widths))
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts; found {self.widths}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be (h, w) with h, w >= 1; found {self.grid}")
        if self.bottleneck < 1 or self.hidden < 1:
            raise ValueError("bottleneck and hidden must be >= 1")
        for name in ABLATION_FIELDS[:-1]:
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be True or False; found {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        k = self.space_samples
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"space_samples must be an integer >= 1; found {k!r}")
        object.__setattr__(self, "space_samples", int(k))
        if k > 1 and not self.select_space:
            raise ValueError("space_samples > 1 needs select_space (points to sample)")

    @property
    def n_layers(self) -> int:
        return len(self.widths)

    @property
    def is_ablation(self) -> bool:
        """True when any ablation field differs from FactorTopy's default."""
        return any(getattr(self, k) != ABLATION_DEFAULTS[k] for k in ABLATION_FIELDS)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["grid"] = list(self.grid)
        for k in ABLATION_FIELDS:  # written only where an ablation changes them
            if d[k] == ABLATION_DEFAULTS[k]:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FactorTopyConfig:
        keys = ("widths", "grid", "bottleneck", "hidden", "n_freqs", "max_period")
        known = {k: d[k] for k in (*keys, *ABLATION_FIELDS) if k in d}
        return cls(**known, extra=dict(d.get("extra", {})))


#: FactorTopyConfig's ablation fields (METHOD.md §6) and their FactorTopy values.
ABLATION_FIELDS = ("topology", "select_layer", "select_space", "select_scale", "space_samples")
ABLATION_DEFAULTS = {
    "topology": True,
    "select_layer": True,
    "select_space": True,
    "select_scale": True,
    "space_samples": 1,
}


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
        Wall-clock budget of the whole run (training, the last validation, the soup and
        the test scores): when it is about to run out, training validates early and
        stops, so the run ends within ≈ 5 % of the budget plus one validation pass.
    log_every : int
        A ``"step"`` record every this many steps.
    amp : bool
        bf16 autocast on CUDA (off by default: fp32 until a GPU run shows bf16
        recovers the phantom as well).
    recipe : {"paper", "auto"}
        ``"paper"``: the fields as given (METHOD.md §3). ``"auto"`` (needs
        ``max_seconds``): after a short warm-up the run measures its speed and
        resolves batch size, learning rate and the validation interval, and decays
        the regulariser over the first half of the training time (by the clock), so that
        the schedule finishes inside the budget —
        see :func:`napari_factortopy.core.training.resolve_auto_recipe`. It chooses
        only what was not given (``given``). The resolved values are recorded in the
        model file.
    given : tuple of str, optional
        Which of :data:`AUTO_CHOSEN` were set by the user: the ``auto`` recipe keeps
        them as they are and chooses the others. None (default): those whose value
        differs from the paper's default (so ``TrainConfig(recipe="auto",
        max_seconds=60, batch_size=16)`` trains with batch 16); list a field to keep
        it at its default value too. The ``paper`` recipe uses every field as it is.
    calibrate : bool, optional
        After training, choose the layer softmax's sharpness (and the readout's ridge
        penalty) on the validation split and refit the readout on the training split
        (:mod:`napari_factortopy.core.calibration`; ours).
        None (default): on for the ``auto`` recipe, off for ``paper``.
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
    amp: bool = False
    recipe: str = "paper"
    calibrate: bool | None = None
    given: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.given is None:  # what differs from the paper's default was given
            defaults = TrainConfig.__dataclass_fields__
            given = tuple(k for k in AUTO_CHOSEN if getattr(self, k) != defaults[k].default)
        else:
            given = tuple(str(k) for k in self.given)
            unknown = sorted(set(given) - set(AUTO_CHOSEN))
            if unknown or isinstance(self.given, str):
                raise ValueError(f"given must list fields of {AUTO_CHOSEN}; found {self.given!r}")
        object.__setattr__(self, "given", tuple(k for k in AUTO_CHOSEN if k in given))
        positive_ints = (
            "batch_size",
            "steps_per_epoch",
            "max_epochs",
            "patience",
            "top_k",
            "reg_decay_steps",
            "eval_batch_size",
            "log_every",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; found {value!r}")
        ranges = {"lr": (0, 1e3), "clip_norm": (0, math.inf), "smooth_l1_beta": (0, math.inf)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            ok = isinstance(value, int | float) and math.isfinite(value) and lo <= value < hi
            if not ok or (name != "lr" and value == 0):
                raise ValueError(
                    f"{name} must be a finite number in [{lo}, {hi:g}); found {value!r}"
                )
        for name in ("weight_decay", "reg_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; found {value!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); found {self.betas}")
        if self.max_seconds is not None and not (
            isinstance(self.max_seconds, int | float)
            and math.isfinite(self.max_seconds)
            and self.max_seconds > 0
        ):
            raise ValueError(f"max_seconds must be a positive number; found {self.max_seconds!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}; found {self.recipe!r}")
        if self.recipe == "auto" and self.max_seconds is None:
            raise ValueError("recipe 'auto' fits the schedule to a budget: give max_seconds")
        if self.calibrate is not None and not isinstance(self.calibrate, bool):
            raise ValueError(f"calibrate must be true, false or None; found {self.calibrate!r}")

    @property
    def calibrates(self) -> bool:
        """Whether the run ends with the sharpness calibration (``calibrate`` resolved)."""
        return self.recipe == "auto" if self.calibrate is None else self.calibrate

    @property
    def chosen(self) -> tuple[str, ...]:
        """The fields of :data:`AUTO_CHOSEN` the ``auto`` recipe chooses (empty for
        ``paper``)."""
        return (
            tuple(k for k in AUTO_CHOSEN if k not in self.given) if self.recipe == "auto" else ()
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["given"] = list(self.given)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {
            k: (tuple(v) if k in ("betas", "given") else v)
            for k, v in d.items()
            if k in cls.__dataclass_fields__
        }
        # written before ``given`` existed: the auto recipe chose all of its fields
        known.setdefault("given", ())
        return cls(**known)


def recipe_settings(tc) -> str:
    """``batch 16 (given), lr 0.0005 (given), validation every 40 steps (chosen), T 300
    (chosen)``: the four settings the ``auto`` recipe may choose, each marked given or
    chosen (unmarked for ``paper``, which uses them all as given).

    Parameters
    ----------
    tc : TrainConfig or dict
        A training configuration, or its ``to_dict()`` as stored in a model file (one
        written before ``given`` existed counts every ``auto`` setting as chosen).
    """
    d = tc if isinstance(tc, dict) else tc.to_dict()
    auto = d.get("recipe") == "auto"
    given = set(d.get("given") or ())

    def mark(key: str) -> str:
        return (" (given)" if key in given else " (chosen)") if auto else ""

    def num(key: str, fmt: str) -> str:
        v = d.get(key)
        return "?" if v is None else format(v, fmt)

    return (
        f"batch {num('batch_size', 'g')}{mark('batch_size')}, lr {num('lr', '.2g')}"
        f"{mark('lr')}, validation every {num('steps_per_epoch', 'g')} steps"
        f"{mark('steps_per_epoch')}, T {num('reg_decay_steps', 'g')}{mark('reg_decay_steps')}"
    )
