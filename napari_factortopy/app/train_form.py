"""The Train panel's form without Qt: what each control does (its tooltip), which
settings the auto recipe chooses, and the controls' values → the
:class:`~napari_factortopy.core.config.TrainConfig` and
:class:`~napari_factortopy.app.jobs.TrainJob` they describe.

The panel (:mod:`napari_factortopy._napari._train_widget`) reads its controls into a
plain mapping, control name → value (``"source"``, ``"phantom"``, ``"cache"``,
``"responses"``, ``"subject"``, ``"mesh"``, ``"layers"``, ``"max_minutes"``,
``"recipe"``, the :class:`TrainConfig` fields it shows, ``"calibrate"``,
``"bottleneck"``, ``"device"``, ``"out"``), and hands it here. What the auto recipe
did to the controls (the settings the user gave, the values an auto run wrote over) is
kept in an :class:`AutoRecipeMemory`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_factortopy.app.jobs import TrainJob
from napari_factortopy.core.config import TrainConfig, recipe_settings

__all__ = [
    "AUTO_CONTROLS",
    "AUTO_TIP",
    "CALIBRATE_CHOICES",
    "DEFAULT_OUT",
    "GIVEN_TIP",
    "GPU_LOG_EVERY",
    "TIPS",
    "VALUE_CONTROLS",
    "AutoRecipeMemory",
    "budget_recipe",
    "control_specs",
    "is_auto",
    "log_every",
    "recipe_line",
    "recipe_tooltips",
    "source_rows",
    "train_config",
    "train_job",
]

#: What each control does (its tooltip).
TIPS = {
    "source": "train on a phantom subject or on a feature cache with responses",
    "phantom": "phantom subject folder (built first when empty)",
    "cache": "feature cache (zarr) made by 'factortopy extract'",
    "responses": "responses .npy, shape (images, vertices), in the cache's image order",
    "subject": "subject .npz: vertex_ids (V,), n_lh, optionally roi (V,)",
    "mesh": "mesh the subject's vertex ids refer to",
    "layers": "comma-separated backbone layers; empty = all",
    "lr": "AdamW learning rate (paper: 1e-3)",
    "weight_decay": "AdamW weight decay (paper: 1e-2)",
    "batch_size": "images per step (paper: 8)",
    "steps_per_epoch": "steps between validations (paper: 1000)",
    "recipe": "paper: the settings as given (the paper's by default); auto (needs a time "
    "budget): the run measures its speed and chooses batch size, learning rate, steps per "
    "epoch and T to fit the budget, keeping any of them you set; its choices appear in the "
    "controls and under 'auto recipe'",
    "reg_weight": "λ: weight of the selector regulariser (paper: 0.1). Early in training it "
    "keeps each vertex's layer weights spread out (entropy) and its scale away from 0 and 1, "
    "so the softmax does not collapse onto one layer before the readout has learnt; "
    "0 = no regulariser",
    "reg_decay_steps": "T: steps over which λ falls linearly to 0 (paper: 6000); after T the "
    "selectors are free to sharpen",
    "clip_norm": "gradient-norm clipping (paper: 0.5)",
    "top_k": "best checkpoints kept for the soup (paper: 10)",
    "soup": "greedy soup of the top-k checkpoints on the validation split (off: the best one)",
    "amp": "bf16 mixed precision on CUDA (off: fp32; no effect on the CPU)",
    "calibrate": "after training, choose the layer softmax's sharpness on the validation "
    "split and refit the readout on the training split (ours): the layer map's confidence "
    "then says what the validation data support, where a short run leaves it too flat; "
    "the argmax layer, space and scale maps are unchanged. auto: on with the auto recipe, "
    "off with paper",
    "seed": "seed of the initialisation, the batches and the image split",
    "max_epochs": "most epochs (training stops earlier on patience)",
    "patience": "epochs without a better validation score before stopping",
    "bottleneck": "readout dimension D (paper: 128)",
    "max_minutes": "wall-clock budget of the run; 0 = none",
    "device": "where to train; auto = CUDA, then MPS, then CPU",
    "out": "the .ftopy model file to write (opened when saved)",
    "start_button": "start training in the background",
    "pause_button": "pause / resume (acts at the next step)",
    "stop_button": "stop training now (acts at the next step), then validate, soup and "
    "save the best model; press again (Discard) to abandon the run unsaved",
    "progress": "how far the run is: with a time budget, the share of the budget used "
    "(or of the schedule, if that ends first); without, the steps done of max epochs × "
    "steps per epoch",
}
#: Tooltip of the settings the auto recipe chooses while it is on (until they are set).
AUTO_TIP = (
    "chosen by the run (auto recipe): it measures its speed and fits this to the budget; "
    "set it to keep your value"
)
#: Tooltip of a setting the user set while the auto recipe is on.
GIVEN_TIP = "given: the auto recipe keeps your value and chooses the others around it"
#: TrainConfig fields the auto recipe resolves (app.cli_train.AUTO_RESOLVED) → control.
AUTO_CONTROLS = {
    "batch_size": "batch_size",
    "lr": "lr",
    "steps_per_epoch": "steps_per_epoch",
    "reg_decay_steps": "reg_decay_steps",
}
#: The calibration control's choices → ``TrainConfig.calibrate``.
CALIBRATE_CHOICES = {"auto": None, "on": True, "off": False}
#: The controls whose values :func:`train_config` and :func:`train_job` read.
VALUE_CONTROLS = (
    "source", "phantom", "cache", "responses", "subject", "mesh", "layers", "max_minutes",
    "recipe", "lr", "weight_decay", "batch_size", "steps_per_epoch", "max_epochs",
    "patience", "reg_weight", "reg_decay_steps", "clip_norm", "top_k", "soup", "amp",
    "calibrate", "seed", "bottleneck", "device", "out",
)  # fmt: skip
#: The model file the panel offers to write (read once, at import).
DEFAULT_OUT = str(Path.home() / "factortopy" / "model.ftopy")
#: Steps between progress records on an accelerator (1 on the CPU).
GPU_LOG_EVERY = 10


def log_every(device: str) -> int:
    """Steps between "step" records for a device name (``"auto"`` is resolved).

    The panel's worker can pause or stop only where the training generator yields, so
    it asks for a record every step on the CPU (the bar moves with every step, and Pause
    and Stop act within one); on an accelerator, where a record's loss read-out costs a
    device sync, every :data:`GPU_LOG_EVERY` steps.
    """
    if device == "cpu":
        return 1
    try:
        from napari_factortopy.core.runtime import resolve_device

        return 1 if resolve_device(device).type == "cpu" else GPU_LOG_EVERY
    except (RuntimeError, ValueError, ImportError):
        return 1


def source_rows(source: str) -> dict[str, bool]:
    """Which data controls the panel shows for a data ``source`` (control name → shown):
    the phantom folder for "phantom", else the feature cache, responses, subject and
    mesh."""
    phantom = source == "phantom"
    return {
        "phantom": phantom,
        **dict.fromkeys(("cache", "responses", "subject", "mesh"), not phantom),
    }


def is_auto(recipe: str, max_minutes: float) -> bool:
    """Whether the auto recipe is on: chosen, and a time budget set."""
    return recipe == "auto" and float(max_minutes) > 0


def budget_recipe(minutes: float, enabled: bool) -> tuple[bool, str | None]:
    """The recipe control after the time budget became ``minutes``: (enabled, value to
    set, None to leave it). A budget enables the auto recipe and turns it on when it was
    disabled (as `factortopy train` does with ``--max-seconds``); no budget means the
    paper recipe. ``enabled``: whether the control was enabled."""
    if minutes > 0:
        return True, (None if enabled else "auto")
    return False, "paper"


class AutoRecipeMemory:
    """What the auto recipe did to the panel's settings of :data:`AUTO_CONTROLS`.

    The settings the user set are *given*: the recipe keeps them and chooses the others.
    An auto run writes its resolved values into the controls; the values they had
    before (the paper's, or the user's) are remembered, and put back when the recipe is
    paper again, except the settings given since.

    Attributes
    ----------
    given : set of str
        Fields of :data:`AUTO_CONTROLS` the user set.
    before : dict
        Control name → its value before an auto run first wrote over it.
    writing : bool
        Whether the panel itself is writing values into the controls (:meth:`writes`).
    """

    def __init__(self) -> None:
        self.given: set[str] = set()
        self.before: dict[str, Any] = {}
        self.writing = False

    def give(self, field: str) -> bool:
        """The user set ``field``: the auto recipe keeps it. Returns whether it is given
        (not while the panel itself writes the controls)."""
        if self.writing:
            return False
        self.given.add(field)
        return True

    @contextmanager
    def writes(self) -> Iterator[None]:
        """While the panel writes values (:meth:`resolved`'s, :meth:`restore`'s) into the
        controls: their changes are not the user's."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False

    def resolved(self, config: TrainConfig, current: Mapping[str, Any]) -> dict[str, Any]:
        """The values the auto recipe's ``config`` puts into the controls (control name
        → value); the ``current`` values (control name → value) of the settings not given
        are remembered, each the first time only."""
        for field, name in AUTO_CONTROLS.items():
            if field not in self.given:
                self.before.setdefault(name, current[name])
        return {name: getattr(config, field) for field, name in AUTO_CONTROLS.items()}

    def restore(self) -> dict[str, Any]:
        """The values to put back now the recipe is paper (control name → value), without
        the settings given since; forgotten once returned."""
        field = {name: f for f, name in AUTO_CONTROLS.items()}
        back = {n: v for n, v in self.before.items() if field[n] not in self.given}
        self.before = {}
        return back


def recipe_tooltips(auto: bool, given: Collection[str], recipe_enabled: bool) -> dict[str, str]:
    """Tooltips of the recipe control and of the settings the auto recipe chooses (control
    name → text): while it is on, each says whether the run chooses it or keeps the
    user's value."""
    tips = {}
    for field, name in AUTO_CONTROLS.items():
        tip = (GIVEN_TIP if field in given else AUTO_TIP) if auto else ""
        tips[name] = TIPS[name] + (f" — {tip}" if tip else "")
    tips["recipe"] = TIPS["recipe"] + (
        "" if recipe_enabled else " — set a time budget to choose auto"
    )
    return tips


def train_config(values: Mapping[str, Any], given: Collection[str]) -> TrainConfig:
    """The :class:`TrainConfig` the controls' ``values`` describe — the one ``factortopy
    train`` builds from the same choices (``log_every`` aside: the panel's suits its
    device). ``given``: the settings of :data:`AUTO_CONTROLS` the user set."""
    minutes = float(values["max_minutes"])
    auto = is_auto(values["recipe"], values["max_minutes"])
    chosen = {
        "lr": float(values["lr"]),
        "batch_size": int(values["batch_size"]),
        "steps_per_epoch": int(values["steps_per_epoch"]),
        "reg_decay_steps": int(values["reg_decay_steps"]),
    }
    # as `factortopy train`: the paper recipe uses every value; auto the given ones
    kept = [k for k in AUTO_CONTROLS if k in given]
    return TrainConfig(
        **{k: v for k, v in chosen.items() if not auto or k in kept},
        given=tuple(kept),
        weight_decay=float(values["weight_decay"]),
        clip_norm=float(values["clip_norm"]),
        max_epochs=int(values["max_epochs"]),
        patience=int(values["patience"]),
        top_k=int(values["top_k"]),
        reg_weight=float(values["reg_weight"]),
        soup=bool(values["soup"]),
        seed=int(values["seed"]),
        max_seconds=60.0 * minutes if minutes > 0 else None,
        amp=bool(values["amp"]),
        recipe="auto" if auto else "paper",
        calibrate=CALIBRATE_CHOICES[values["calibrate"]],
        log_every=log_every(values["device"]),
    )


def train_job(values: Mapping[str, Any], train: TrainConfig) -> TrainJob:
    """The :class:`TrainJob` the controls' ``values`` describe, training with ``train``."""
    layers = tuple(s.strip() for s in values["layers"].split(",") if s.strip()) or None
    common = {
        "out": str(values["out"]),
        "train": train,
        "layers": layers,
        "bottleneck": int(values["bottleneck"]),
        "device": values["device"],
        "seed": int(values["seed"]),
    }
    if values["source"] == "phantom":
        return TrainJob(phantom=str(values["phantom"]), **common)
    return TrainJob(
        cache=str(values["cache"]),
        responses=str(values["responses"]),
        subject=str(values["subject"]),
        mesh=values["mesh"],
        **common,
    )


def recipe_line(config: TrainConfig, info: Mapping[str, Any]) -> str:
    """The auto recipe's resolved values, each marked given or chosen, with the measured
    step time and the planned steps when ``info`` has them."""
    text = recipe_settings(config)
    if "step_seconds" in info:
        text += f" ({info['step_seconds'] * 1e3:.0f} ms/step"
        text += f", ~{info['planned_steps']} steps)" if "planned_steps" in info else ")"
    return text


def control_specs() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each setting control of the panel: name → (kind, keyword arguments of its
    magicgui widget), the recipe's at the paper's defaults (METHOD §3), as ``factortopy
    train`` has them. Kinds: "combo", "file", "line", "float", "int", "check"."""
    home = Path.home() / "factortopy"
    d = TrainConfig()
    return {
        "source": ("combo", {"label": "data", "choices": ["phantom", "feature cache"],
                             "value": "phantom"}),
        "phantom": ("file", {"label": "phantom folder", "mode": "d",
                             "value": str(home / "phantom")}),
        "cache": ("file", {"label": "feature cache", "mode": "d", "visible": False}),
        "responses": ("file", {"label": "responses (.npy)", "filter": "*.npy",
                               "visible": False}),
        "subject": ("file", {"label": "subject (.npz)", "filter": "*.npz", "visible": False}),
        "mesh": ("combo", {"label": "mesh", "visible": False,
                           "choices": ["fsaverage5", "fsaverage6", "fsaverage"]}),
        "layers": ("line", {"label": "layers", "value": "",
                            "tooltip": "comma-separated backbone layers; empty = all"}),
        "recipe": ("combo", {"label": "recipe", "choices": ["paper", "auto"],
                             "value": "paper", "enabled": False}),
        "lr": ("float", {"label": "learning rate", "value": d.lr, "step": 1e-5, "min": 1e-7,
                         "max": 0.999}),
        "weight_decay": ("float", {"label": "weight decay", "value": d.weight_decay,
                                   "step": 1e-4, "min": 0, "max": 10}),
        "batch_size": ("int", {"label": "batch size", "value": d.batch_size, "min": 1,
                               "max": 4096}),
        "steps_per_epoch": ("int", {"label": "steps / epoch", "value": d.steps_per_epoch,
                                    "min": 1, "max": 10**6}),
        "max_epochs": ("int", {"label": "max epochs", "value": d.max_epochs, "min": 1,
                               "max": 10**6}),
        "patience": ("int", {"label": "patience", "value": d.patience, "min": 1,
                             "max": 10**6}),
        "reg_weight": ("float", {"label": "regulariser λ", "value": d.reg_weight,
                                 "step": 0.01, "min": 0, "max": 100}),
        "reg_decay_steps": ("int", {"label": "regulariser decay T",
                                    "value": d.reg_decay_steps, "min": 1, "max": 10**8}),
        "clip_norm": ("float", {"label": "gradient clipping", "value": d.clip_norm,
                                "step": 0.1, "min": 1e-6, "max": 1e6}),
        "top_k": ("int", {"label": "top-k checkpoints", "value": d.top_k, "min": 1,
                          "max": 1000}),
        "soup": ("check", {"text": "greedy soup", "value": d.soup}),
        "amp": ("check", {"text": "mixed precision (bf16 on CUDA)", "value": d.amp}),
        "calibrate": ("combo", {"label": "calibration", "choices": list(CALIBRATE_CHOICES),
                                "value": "auto"}),
        "seed": ("int", {"label": "seed", "value": d.seed, "min": 0, "max": 2**31 - 1}),
        "bottleneck": ("int", {"label": "bottleneck D", "value": 128, "min": 1,
                               "max": 4096}),
        "max_minutes": ("float", {"label": "time budget (min, 0 = none)", "value": 0.0,
                                  "min": 0, "max": 10**6}),
        "device": ("combo", {"label": "device", "choices": ["auto", "cpu", "cuda", "mps"],
                             "value": "auto"}),
        "out": ("file", {"label": "save as", "mode": "w", "filter": "*.ftopy",
                         "value": DEFAULT_OUT}),
    }  # fmt: skip
