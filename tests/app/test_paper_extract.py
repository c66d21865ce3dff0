"""``factortopy extract --backbone paper``: the cache holds the release's tokens on the
preset's 8×8 grid (plain bilinear from 14×14), or the native 14×14 grid when asked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

sys.path.insert(0, str(Path(__file__).parent))
from _release import downsample, release_images, release_tokens  # noqa: E402


def test_extract_with_the_paper_preset(tmp_path):
    from napari_factortopy.app.cli_data import (
        RANDOM_WEIGHTS_SEED,
        add_extract_parser,
        run_extract,
    )
    from napari_factortopy.data.backbones import load_backbone
    from napari_factortopy.data.cache import FeatureCache
    from napari_factortopy.data.datasets import write_folder

    rng = np.random.default_rng(0)
    ims = {f"{i}.png": rng.integers(0, 255, (60, 90, 3), dtype=np.uint8) for i in range(3)}
    root = write_folder(tmp_path / "ds", ims, np.zeros((3, 2)), np.array([1, 2]), 1)
    parser = argparse.ArgumentParser()
    add_extract_parser(parser.add_subparsers())
    argv = ["extract", "--backbone", "paper", "--weights", "random", "--dataset", str(root),
            "--batch-size", "2", "--device", "cpu"]  # fmt: skip
    assert run_extract(parser.parse_args([*argv, "--cache", str(tmp_path / "p8.zarr")])) == 0
    grid14 = ["--cache", str(tmp_path / "p14.zarr"), "--grid", "14", "14"]
    assert run_extract(parser.parse_args([*argv, *grid14])) == 0

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        bb = load_backbone("paper", weights="random")
    with torch.no_grad():
        local, glob = release_tokens(bb.module, release_images([ims[k] for k in sorted(ims)]))
    small = downsample(local)
    for name, ref_local in (("p8.zarr", small), ("p14.zarr", local)):
        cache = FeatureCache.open(tmp_path / name)
        assert cache.backbone == "open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper"
        assert tuple(cache.grid) == tuple(ref_local["0"].shape[-2:])
        got_local, got_glob = cache.read(np.arange(3))
        for i in range(12):
            scale = float(ref_local[str(i)].abs().max())
            # the cache stores float16: 2⁻¹¹ relative rounding
            assert np.abs(got_local[i] - ref_local[str(i)].numpy()).max() <= 2e-3 * scale
            assert np.abs(got_glob[i] - glob[str(i)].numpy()).max() <= 2e-3 * scale
