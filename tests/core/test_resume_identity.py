"""Checkpoints record what they were made for; resuming with other data is refused,
naming the folder, what they were made for and what was given, and touches nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_factortopy.core.config import TrainConfig
from napari_factortopy.core.feature_source import InMemoryFeatures
from napari_factortopy.core.splits import make_split
from napari_factortopy.core.training import ResumeMismatch, run_identity, train
from tests.core.test_training import _fresh, _problem, _run

CFG = TrainConfig(steps_per_epoch=10, max_epochs=4, lr=5e-3, soup=False)
DATA = {"dataset": {"what": "algonauts /data/subj01 (96 rows)", "digest": "aaaa"}}


def _checkpointed(tmp_path, coords, feats, y, split, identity=None):
    """Train into ``tmp_path`` until the first validation, then stop (a killed run)."""
    gen = train(_fresh(coords), feats, y, split, CFG, checkpoint_dir=tmp_path, identity=identity)
    for rec in gen:
        if rec["kind"] == "validation":
            gen.close()
            break
    path = tmp_path / "checkpoint.pt"
    return path, path.read_bytes(), path.stat().st_mtime_ns


def test_another_dataset_is_refused_and_the_checkpoints_stay(tmp_path):
    coords, feats, y = _problem()
    path, before, mtime = _checkpointed(
        tmp_path, coords, feats, y, make_split(len(y), seed=0), DATA
    )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["identity"]["dataset"] == DATA["dataset"]
    assert set(saved["identity"]) == {"dataset", "responses", "split"}
    # the same vertices, a smaller dataset (10 images): today's IndexError, now a message
    small_y, small_feats = (
        y[:10],
        InMemoryFeatures(
            [t[:10].float().numpy() for t in feats.local],
            [t[:10].float().numpy() for t in feats.global_],
        ),
    )
    other = {"dataset": {"what": "algonauts /data/subj02 (10 rows)", "digest": "bbbb"}}
    with pytest.raises(ResumeMismatch) as err:
        list(
            train(
                _fresh(coords),
                small_feats,
                small_y,
                make_split(10, seed=0),
                CFG,
                checkpoint_dir=tmp_path,
                resume=True,
                identity=other,
            )
        )
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "made for algonauts /data/subj01 (96 rows) [aaaa], given algonauts /data/subj02" in msg
    assert "responses: made for responses of 96 rows × 30 vertices" in msg and "10 rows" in msg
    assert "split: made for split seed 0" in msg
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_another_split_or_responses_is_refused_the_same_data_resumes(tmp_path):
    coords, feats, y = _problem()
    split = make_split(len(y), seed=0)
    path, before, _ = _checkpointed(tmp_path, coords, feats, y, split, DATA)
    with pytest.raises(
        ResumeMismatch, match=r"split: made for split seed 0: .*given split seed 3"
    ):
        list(
            train(
                _fresh(coords),
                feats,
                y,
                make_split(len(y), seed=3),
                CFG,
                checkpoint_dir=tmp_path,
                resume=True,
                identity=DATA,
            )
        )
    other_y = y.copy()
    other_y[0] += 1.0  # row 0 is one of the 64 rows the digest reads
    with pytest.raises(ResumeMismatch, match="responses: made for"):
        list(
            train(
                _fresh(coords),
                feats,
                other_y,
                split,
                CFG,
                checkpoint_dir=tmp_path,
                resume=True,
                identity=DATA,
            )
        )
    assert path.read_bytes() == before
    # a moved dataset (other path, same digest) resumes
    moved = {"dataset": {"what": "algonauts /mnt/subj01 (96 rows)", "digest": "aaaa"}}
    _, res = _run(
        train(
            _fresh(coords),
            feats,
            y,
            split,
            CFG,
            checkpoint_dir=tmp_path,
            resume=True,
            identity=moved,
        )
    )
    assert res.steps == 40


def test_old_checkpoints_without_an_identity_are_checked_by_their_batch_order(tmp_path):
    coords, feats, y = _problem()
    path, _, _ = _checkpointed(tmp_path, coords, feats, y, make_split(len(y), seed=0))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    del saved["identity"]  # as written before checkpoints recorded their data
    torch.save(saved, path)
    before = path.read_bytes()
    small = InMemoryFeatures(
        [t[:10].float().numpy() for t in feats.local],
        [t[:10].float().numpy() for t in feats.global_],
    )
    with pytest.raises(ResumeMismatch, match="older version") as err:
        list(
            train(
                _fresh(coords),
                small,
                y[:10],
                make_split(10, seed=0),
                CFG,
                checkpoint_dir=tmp_path,
                resume=True,
            )
        )
    assert str(tmp_path) in str(err.value) and path.read_bytes() == before


def test_run_identity_is_cheap_and_content_based():
    y = np.random.default_rng(0).normal(size=(500, 40)).astype(np.float32)
    split = make_split(500, seed=0)
    a, b = run_identity(y, split), run_identity(y.copy(), make_split(500, seed=0))
    assert a == b
    assert a["responses"]["what"] == "responses of 500 rows × 40 vertices"
    assert a["split"]["what"].startswith("split seed 0: 400/50/50")
