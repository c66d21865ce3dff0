"""``factortopy train``: a feature cache and responses → a model file.

Every training setting of :class:`~napari_factortopy.core.config.TrainConfig` is an
option here (defaults: the paper's, METHOD.md §3), checked before any work, as is the
output path. With ``--max-seconds`` the run honours the budget and, unless
``--recipe paper``, fits its schedule to it (``--recipe auto``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import _progress

__all__ = ["add_train_parser", "check_output_path", "run_train", "train_config_from_args"]

#: TrainConfig fields the ``auto`` recipe chooses when they are not given (a given one
#: is kept as it is).
AUTO_RESOLVED = ("batch_size", "lr", "steps_per_epoch", "reg_decay_steps")


def _number_type(convert, above: float, inclusive: bool, what: str):
    """An argparse ``type``: ``convert(text)``, finite, ``>= above`` or ``> above``."""
    sign = ">=" if inclusive else ">"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} {sign} {above:g}, found {text!r}"
            ) from None
        ok = value >= above if inclusive else value > above
        if not (ok and value < float("inf")):
            raise argparse.ArgumentTypeError(f"expected {what} {sign} {above:g}, found {text}")
        return value

    return parse


_positive_int = _number_type(int, 1, True, "a whole number")
_positive_float = _number_type(float, 0, False, "a finite number")
_non_negative_float = _number_type(float, 0, True, "a finite number")


def _learning_rate(text: str) -> float:
    value = _positive_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(
            f"a learning rate of {value:g} makes AdamW diverge at once; expected a value "
            "below 1 (the paper uses 1e-3)"
        )
    return value


def check_output_path(path: str | os.PathLike, suffix: str = ".ftopy") -> Path:
    """Stop before any work when ``path`` cannot be written as a model file.

    Raises
    ------
    ValueError
        Wrong suffix, a directory, a missing or unwritable folder (named).
    """
    out = Path(path)
    if out.suffix != suffix:
        raise ValueError(f"--out {out}: a model file must end in {suffix}; found {out.suffix!r}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; expected a file name ending in {suffix}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {folder} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"--out {out} exists and is not writable")
    return out


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to a sub-parser set."""
    from ..core.config import TrainConfig
    from .cli_data import DEVICE_HELP, add_dataset_arguments

    d = TrainConfig()
    t = subparsers.add_parser(
        "train",
        help="feature cache + responses → model file",
        description="Train FactorTopy on a feature cache and a subject's responses. Defaults "
        "are the paper's recipe (METHOD.md §3). With --max-seconds the run ends within the "
        "budget (it validates early when time runs out) and, unless --recipe paper, "
        "resolves batch size, learning rate, validation interval and the regulariser's "
        "decay from its measured speed so that the schedule finishes inside the budget.",
    )
    t.add_argument("--cache", required=True, help="feature cache (zarr folder)")
    t.add_argument("--phantom", help="a phantom subject folder (responses and subject)")
    add_dataset_arguments(t, required=False)
    t.add_argument(
        "--subjects-dir",
        help="FreeSurfer subjects folder holding the dataset's mesh (default $SUBJECTS_DIR)",
    )
    t.add_argument(
        "--allow-download",
        action="store_true",
        help="let nilearn download a missing fsaverage mesh (off: fail naming what is missing)",
    )
    t.add_argument("--out", required=True, help="model file to write (.ftopy)")
    t.add_argument("--device", default="auto", help=DEVICE_HELP)

    _schedule_arguments(t, d)
    _optimiser_arguments(t, d)
    _regulariser_arguments(t, d)
    _model_arguments(t)
    t.set_defaults(func=run_train)
    return t


def _schedule_arguments(t: argparse.ArgumentParser, d) -> None:
    """``train``'s schedule options (budget, recipe, epochs); ``d``: the default
    TrainConfig, whose values the help texts quote."""
    from ..core.config import RECIPES

    g = t.add_argument_group("schedule")
    g.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=None,
        help="wall-clock budget of the whole command; the run ends within ~5%% of it plus "
        "one validation",
    )
    g.add_argument(
        "--recipe",
        choices=RECIPES,
        default=None,
        help="'paper': the options as given; 'auto' (the default with --max-seconds): "
        "fit batch, lr, steps per epoch and regulariser decay to the budget",
    )
    g.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        default=None,
        help=f"steps between validations (paper: {d.steps_per_epoch})",
    )
    g.add_argument(
        "--max-epochs", type=_positive_int, default=d.max_epochs, help="hard cap on epochs"
    )
    g.add_argument(
        "--patience",
        type=_positive_int,
        default=d.patience,
        help=f"epochs without improvement before stopping (paper: {d.patience})",
    )


def _optimiser_arguments(t: argparse.ArgumentParser, d) -> None:
    """``train``'s optimiser options (batch, AdamW, clipping, precision)."""
    o = t.add_argument_group("optimiser")
    o.add_argument(
        "--batch-size", type=_positive_int, default=None, help=f"images per step ({d.batch_size})"
    )
    o.add_argument(
        "--lr", type=_learning_rate, default=None, help=f"AdamW learning rate ({d.lr:g})"
    )
    o.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=d.weight_decay,
        help=f"AdamW weight decay ({d.weight_decay:g})",
    )
    o.add_argument(
        "--clip-norm",
        type=_positive_float,
        default=d.clip_norm,
        help=f"gradient-norm clipping ({d.clip_norm:g})",
    )
    o.add_argument(
        "--amp",
        action="store_true",
        help="bf16 mixed precision on CUDA (off: fp32, until a GPU run shows bf16 recovers "
        "the phantom as well)",
    )


def _regulariser_arguments(t: argparse.ArgumentParser, d) -> None:
    """``train``'s regulariser, soup and calibration options."""
    r = t.add_argument_group("regulariser and soup")
    r.add_argument(
        "--reg-weight",
        type=_non_negative_float,
        default=d.reg_weight,
        help=f"λ of the selector regulariser ({d.reg_weight:g})",
    )
    r.add_argument(
        "--reg-decay-steps",
        type=_positive_int,
        default=None,
        help=f"T: steps over which λ decays to 0 ({d.reg_decay_steps})",
    )
    r.add_argument(
        "--top-k",
        type=_positive_int,
        default=d.top_k,
        help=f"best checkpoints kept for the soup ({d.top_k})",
    )
    r.add_argument(
        "--no-soup",
        action="store_true",
        help="use the best checkpoint instead of the greedy soup of the top-k",
    )
    r.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after training, choose the layer softmax's sharpness on the validation split "
        "and refit the readout on the training split at that sharpness (ours; default: on "
        "with --recipe auto, off with paper)",
    )


def _model_arguments(t: argparse.ArgumentParser) -> None:
    """``train``'s model and data options (bottleneck, memory, noise ceiling,
    checkpoints, seeds, jobs)."""
    m = t.add_argument_group("model and data")
    m.add_argument("--bottleneck", type=_positive_int, default=128, help="channels D (paper: 128)")
    m.add_argument(
        "--memory-limit",
        type=_positive_float,
        default=None,
        help=(
            "GiB the features may take on the device (default: automatic). With it, an "
            "Algonauts or folder dataset's responses stay in their .npy files, read by "
            "rows, and the best states kept for the soup wait on disk (in "
            "--checkpoints/kept, else a hidden folder beside --out removed at the end), "
            "and the C allocator keeps two arenas; the process also holds about 1 GiB "
            "more (libraries, the training step, validation) at Algonauts' size"
        ),
    )
    m.add_argument(
        "--noise-ceiling",
        metavar="FILE",
        help="noise ceiling per vertex (.npy: one value per modelled vertex or per mesh "
        "vertex, lh then rh; percent or fractions) for the challenge's noise-normalised "
        "score; default: the dataset's own (NSD ncsnr, a folder's noise_ceiling.npy)",
    )
    m.add_argument("--checkpoints", help="checkpoint folder (enables --resume)")
    m.add_argument("--resume", action="store_true", help="continue from --checkpoints")
    m.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 image split")
    m.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    m.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="train K initialisations (seeds SEED..SEED+K-1, one after the other, sharing "
        "the budget) and store them in one model file: the maps show their mean, and "
        "per-vertex consistency maps show where they agree",
    )
    m.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="with --seeds: train this many seeds at once, each in its own process "
        "(the CPU cores are divided among them; on CUDA, seed k uses GPU k mod the GPU "
        "count); the budget is shared as if they ran in rounds of JOBS",
    )


def train_config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` the options describe (paper defaults where not given).

    With ``--recipe auto`` the options given among ``--batch-size``, ``--lr``,
    ``--steps-per-epoch`` and ``--reg-decay-steps`` are kept as given
    (:attr:`TrainConfig.given`); the recipe chooses the others.

    Raises
    ------
    ValueError
        ``--recipe auto`` without a budget.
    """
    from ..core.config import TrainConfig

    recipe = args.recipe or ("auto" if args.max_seconds else "paper")
    given = {k: getattr(args, k) for k in AUTO_RESOLVED if getattr(args, k) is not None}
    if recipe == "auto" and not args.max_seconds:
        raise ValueError("--recipe auto fits the schedule to a budget: give --max-seconds")
    return TrainConfig(
        **given,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
        max_epochs=args.max_epochs,
        patience=args.patience,
        top_k=args.top_k,
        reg_weight=args.reg_weight,
        soup=not args.no_soup,
        seed=args.seed,
        max_seconds=args.max_seconds,
        amp=args.amp,
        recipe=recipe,
        calibrate=args.calibrate,
        given=tuple(given),
    )


def run_train(args: argparse.Namespace) -> int:
    """Run ``factortopy train``; returns the exit status.

    A model that trained but predicts worse than each vertex's mean (test R² < 0) is
    still written (nothing lost), with ``summary["convergence"]["state"] == "failed"``
    that ``factortopy info`` and napari show, and a warning here.
    """
    started = time.perf_counter()
    if args.memory_limit is not None:  # before any thread: the allocator's arenas
        from ..core.runtime import limit_malloc_arenas

        limit_malloc_arenas(2)
    tcfg = train_config_from_args(args)
    out = check_output_path(args.out)
    from ..core.estimator import fit
    from ..core.runtime import machine_busy, resolve_device
    from ..core.selector_check import model_selector_check
    from .inputs import training_inputs

    dev = resolve_device(args.device)
    if note := machine_busy(dev, getattr(args, "threads", None)):
        print(f"factortopy train: note: {note}", file=sys.stderr)
    if args.phantom:
        source = {"phantom": args.phantom}
    elif args.dataset:
        from .cli_data import dataset_from_args

        source = {"dataset": dataset_from_args(args)}
    else:
        raise ValueError("train needs --phantom DIR or --dataset PATH")
    if args.resume and not args.checkpoints:
        raise ValueError("--resume continues the run in --checkpoints FOLDER: give that folder")
    inputs = training_inputs(
        args.cache,
        **source,
        split_seed=args.split_seed,
        device=dev,
        memory_limit=None if args.memory_limit is None else int(args.memory_limit * 2**30),
        subjects_dir=args.subjects_dir,
        allow_download=args.allow_download,
        noise_ceiling=args.noise_ceiling,
    )
    for note in inputs.notes:
        print(note, file=sys.stderr)
    fit_args = {
        "config": inputs.model_config(bottleneck=args.bottleneck),
        "backbone": inputs.backbone,
        "device": dev,
        "extra": {"dataset": inputs.dataset},
        "noise_ceiling": inputs.noise_ceiling,
        "noise_ceiling_source": inputs.noise_ceiling_source,
        "identity": inputs.identity,
    }
    with _kept_folder(args, out) as kept:
        if args.seeds == 1:
            gen = fit(
                inputs.features,
                inputs.responses,
                inputs.subject,
                inputs.split,
                train_config=tcfg,
                checkpoint_dir=args.checkpoints,
                resume=args.resume,
                seed=args.seed,
                started_at=started,
                kept_dir=kept,
                **fit_args,
            )
            fitted = _progress.drain_training(gen, tcfg)
            path = fitted.save(out)
        else:
            from .cli_seeds import train_seeds

            fitted = train_seeds(args, inputs, tcfg, {**fit_args, "kept_dir": kept}, out, started)
            path = out
    s = fitted.summary
    conv = s.get("convergence", {})
    nc = (
        f", noise-normalised score {s['nc_test_mean']:.2f} %"
        if s.get("noise_ceiling") and s.get("nc_test_mean") == s.get("nc_test_mean")
        else " (raw; no noise ceiling known)"
    )
    print(
        f"wrote {path}: test R² {s['r2_test_mean']:.4f} (mean over {fitted.n_vertices} "
        f"vertices){nc}, {s['steps']} steps in {time.perf_counter() - started:.0f} s"
    )
    print(conv.get("line", ""), file=sys.stderr)
    check = model_selector_check(fitted) or {}
    if check.get("line"):
        print(f"factortopy train: warning: degenerate selectors: {check['line']}", file=sys.stderr)
    if conv.get("state") == "failed":
        print(
            f"factortopy train: warning: {path} was written, but {conv['line']}", file=sys.stderr
        )
    return 0


@contextmanager
def _kept_folder(args: argparse.Namespace, out: Path) -> Iterator[Path | None]:
    """Where a run under ``--memory-limit`` keeps its best states for the soup (None:
    in memory): ``--checkpoints``/kept, which the checkpoints name (they stay with
    them), else a hidden folder beside ``out``, removed when the command ends."""
    if args.memory_limit is None:
        yield None
    elif args.checkpoints:
        yield Path(args.checkpoints) / "kept"
    else:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.kept-", dir=out.parent) as tmp:
            yield Path(tmp)
