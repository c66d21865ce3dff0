"""The Train panel's form without Qt (app/train_form): the recipe a budget chooses, the
rows a data source shows, and the auto recipe's memory of the values it wrote over."""

from __future__ import annotations

import pytest

from napari_factortopy.app.train_form import (
    AUTO_CONTROLS,
    AutoRecipeMemory,
    budget_recipe,
    source_rows,
)
from napari_factortopy.core.config import TrainConfig


@pytest.mark.parametrize(
    ("minutes", "enabled", "expected"),
    [
        (2.0, False, (True, "auto")),  # a first budget turns auto on, as --max-seconds
        (2.0, True, (True, None)),  # a changed budget keeps the user's choice
        (0.0, True, (False, "paper")),  # no budget: paper
        (0.0, False, (False, "paper")),
    ],
)
def test_budget_recipe(minutes, enabled, expected):
    assert budget_recipe(minutes, enabled) == expected


def test_source_rows():
    data = ("cache", "responses", "subject", "mesh")
    assert source_rows("phantom") == {"phantom": True, **dict.fromkeys(data, False)}
    assert source_rows("feature cache") == {"phantom": False, **dict.fromkeys(data, True)}


def test_auto_recipe_memory_puts_back_what_it_wrote_over():
    paper = TrainConfig()
    shown = {name: getattr(paper, field) for field, name in AUTO_CONTROLS.items()}
    shown["batch_size"] = 16
    memory = AutoRecipeMemory()
    assert memory.give("batch_size")  # the user set the batch: the recipe keeps it
    with memory.writes():  # the panel writing a value: not the user's
        assert not memory.give("steps_per_epoch") and memory.writing
    assert not memory.writing and memory.given == {"batch_size"}
    chosen = TrainConfig(batch_size=16, lr=5e-4, steps_per_epoch=50, reg_decay_steps=400)
    written = memory.resolved(chosen, shown)
    assert written == {"batch_size": 16, "lr": 5e-4, "steps_per_epoch": 50, "reg_decay_steps": 400}
    assert memory.before == {
        "lr": paper.lr,
        "steps_per_epoch": paper.steps_per_epoch,
        "reg_decay_steps": paper.reg_decay_steps,
    }
    # a second auto run: what was there before the first is what goes back
    memory.resolved(TrainConfig(lr=1e-2, steps_per_epoch=9, reg_decay_steps=9), written)
    assert memory.before["lr"] == paper.lr
    memory.give("lr")  # set since: stays as the user set it
    assert memory.restore() == {
        "steps_per_epoch": paper.steps_per_epoch,
        "reg_decay_steps": paper.reg_decay_steps,
    }
    assert memory.restore() == {} and memory.given == {"batch_size", "lr"}
