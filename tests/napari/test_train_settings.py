"""Issue #8 item 6: every training setting in the Train panel, the same TrainConfig as
`factortopy train`, the auto recipe's resolved values and the convergence line."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from napari_factortopy.app.cli_train import add_train_parser, train_config_from_args
from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.selector_check import model_selector_check

from ._drive import dock
from .conftest import TINY_PHANTOM


def _cli(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--cache", "c", "--out", "m.ftopy", *argv])
    return train_config_from_args(args)


def _same(panel: TrainConfig, cli: TrainConfig) -> None:
    assert replace(panel, log_every=cli.log_every) == cli


def test_defaults_are_the_cli_defaults(make_napari_viewer):
    viewer = make_napari_viewer()
    train = dock(viewer, "Train")
    _same(train.train_config(), _cli())
    assert train.train_config().recipe == "paper" and not train.recipe.enabled


CHOICES = [
    # (panel settings, equivalent argv)
    ({}, []),
    (
        {"lr": 3e-4, "batch_size": 16, "steps_per_epoch": 50, "reg_decay_steps": 400,
         "reg_weight": 0.3, "weight_decay": 0.05, "clip_norm": 1.5, "top_k": 3,
         "soup": False, "amp": True, "seed": 7, "max_epochs": 9, "patience": 4},
        ["--lr", "3e-4", "--batch-size", "16", "--steps-per-epoch", "50",
         "--reg-decay-steps", "400", "--reg-weight", "0.3", "--weight-decay", "0.05",
         "--clip-norm", "1.5", "--top-k", "3", "--no-soup", "--amp", "--seed", "7",
         "--max-epochs", "9", "--patience", "4"],
    ),
    ({"max_minutes": 2.0}, ["--max-seconds", "120"]),  # a budget: auto, as the CLI
    ({"max_minutes": 2.0, "recipe": "paper", "batch_size": 32},
     ["--max-seconds", "120", "--recipe", "paper", "--batch-size", "32"]),
    ({"max_minutes": 0.5, "reg_weight": 0.0, "amp": True},
     ["--max-seconds", "30", "--reg-weight", "0", "--amp"]),
    ({"max_minutes": 2.0, "calibrate": "off"}, ["--max-seconds", "120", "--no-calibrate"]),
    ({"calibrate": "on"}, ["--calibrate"]),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "argv"), CHOICES)
def test_panel_builds_the_cli_train_config(make_napari_viewer, settings, argv):
    viewer = make_napari_viewer()
    train = dock(viewer, "Train")
    for name in ("max_minutes", "recipe"):  # the budget first: it switches the recipe
        if name in settings:
            getattr(train, name).value = settings[name]
    for name, value in settings.items():
        getattr(train, name).value = value
    _same(train.train_config(), _cli(*argv))
    _same(train.job().train, _cli(*argv))


def test_auto_recipe_chooses_only_what_was_not_set(make_napari_viewer):
    viewer = make_napari_viewer()
    train = dock(viewer, "Train")
    assert not train.recipe.enabled and "time budget" in train.recipe.tooltip
    train.max_minutes.value = 1.0
    assert train.recipe.enabled and train.recipe.value == "auto"
    for name in ("batch_size", "lr", "steps_per_epoch", "reg_decay_steps"):
        control = getattr(train, name)
        assert control.enabled and "chosen by the run" in control.tooltip
    assert train.train_config().given == ()
    # what the user sets is given: kept by the recipe, as `--batch-size 16 --lr 5e-4`
    train.batch_size.value = 16
    train.lr.value = 5e-4
    assert "given" in train.batch_size.tooltip and "chosen" in train.steps_per_epoch.tooltip
    cfg = train.train_config()
    assert (cfg.batch_size, cfg.lr, cfg.given) == (16, 5e-4, ("batch_size", "lr"))
    assert cfg.chosen == ("steps_per_epoch", "reg_decay_steps")
    _same(cfg, _cli("--max-seconds", "60", "--batch-size", "16", "--lr", "5e-4"))
    train.recipe.value = "paper"
    assert train.batch_size.enabled and "chosen" not in train.batch_size.tooltip
    train.max_minutes.value = 0.0
    assert train.recipe.value == "paper" and not train.recipe.enabled


def test_auto_run_shows_resolved_recipe_and_convergence(
    make_napari_viewer, qtbot, tmp_path, phantom_root, shot_dir
):
    viewer = make_napari_viewer()
    train = dock(viewer, "Train")
    train.phantom.value = str(phantom_root)
    train.out.value = str(tmp_path / "auto.ftopy")
    train.bottleneck.value = 8
    train.device.value = "cpu"
    train.max_minutes.value = 0.25
    train.max_epochs.value = 3
    train.batch_size.value = 16  # given: the recipe keeps it and chooses the rest
    job = train.job()
    assert job.train.recipe == "auto" and job.train.given == ("batch_size",)
    job = replace(job, phantom_config=TINY_PHANTOM, hidden=8)
    records = []
    worker = train._on_start(job=job, start=False)
    worker.yielded.connect(records.append)
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        worker.start()
    (recipe,) = [r for r in records if r["kind"] == "recipe"]
    c = recipe["config"]
    assert train.resolved == c and c.batch_size == 16
    assert recipe["info"]["given"] == {"batch_size": 16}
    assert "batch 16 (given)" in train.recipe_info.value
    assert f"T {c.reg_decay_steps} (chosen)" in train.recipe_info.value
    assert train.batch_size.value == c.batch_size and train.given == {"batch_size"}
    assert train.native.grab().save(str(shot_dir / "train_panel.png"))
    assert train.steps_per_epoch.value == c.steps_per_epoch
    saved = [r for r in records if r["kind"] == "saved"][-1]["model"]
    line = saved.summary["convergence"]["line"]
    assert line and train.result.value.startswith(line)
    # a short run of a tiny model chooses nothing, and the result says so too
    degenerate = model_selector_check(saved)["line"]
    assert train.result.value == (
        f"{line}; DEGENERATE SELECTORS: {degenerate}" if degenerate else line
    )
