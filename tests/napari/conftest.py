"""Fixtures of the plugin tests: synthetic models, a synthetic mesh, viewers showing them.

Chain: ``tiny_model`` (a FittedModel on fsaverage5, numpy only) → ``model_path`` (its
``.ftopy`` file) → ``shown`` (a napari viewer with its layer and the main widget).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.data.phantom import PhantomConfig, phantom_surface


def make_model(
    n_vertices: int = 200,
    n_layers: int = 6,
    d: int = 8,
    seed: int = 0,
    mesh: str = "fsaverage5",
    vertex_ids=None,
    n_lh=None,
) -> FittedModel:
    """A FittedModel with random selectors and readout (no training, no torch)."""
    rng = np.random.default_rng(seed)
    if vertex_ids is None:
        surf = phantom_surface(n_vertices)
        vertex_ids, n_lh, roi = surf.vertex_ids, surf.n_lh, surf.roi
    else:
        roi = rng.integers(0, 5, size=len(vertex_ids))
    v = len(vertex_ids)
    logits = rng.normal(size=(v, n_layers)) * 3
    layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    space = rng.uniform(-1, 1, size=(v, 2))
    config, state = _module_state(v, n_layers, d, seed)
    state["beta"] = rng.normal(size=(v, d)).astype(np.float32)
    scores = {
        "r2_test": rng.uniform(-0.1, 0.6, size=v).astype(np.float32),
        "r_test": rng.uniform(0, 0.8, size=v).astype(np.float32),
    }
    return FittedModel(
        config=config,
        state=state,
        space=space,
        layer=layer,
        scale=rng.uniform(0, 1, v),
        vertex_ids=vertex_ids,
        n_lh=n_lh,
        mesh=mesh,
        roi=roi,
        roi_names=["V1", "V2/V3", "OPA", "EBA"],
        scores=scores,
        backbone={"name": "test", "layer_names": [f"b{i}" for i in range(n_layers)]},
    )


def _module_state(v: int, n_layers: int, d: int, seed: int) -> tuple[dict, dict]:
    """Config and a complete state dict of a small FactorTopy module (the model file
    checks every tensor), from the torch module itself."""
    import torch

    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy

    torch.manual_seed(seed)
    coords = np.random.default_rng(seed).normal(size=(v, 3))
    cfg = FactorTopyConfig((4,) * n_layers, (4, 4), bottleneck=d, hidden=8, n_freqs=4)
    module = FactorTopy(coords, cfg)
    state = {k: t.detach().float().numpy() for k, t in module.state_dict().items()}
    state.pop("encoding", None)
    return module.config.to_dict(), state


def synthetic_loader(n_per_hemi: int):
    """A mesh loader with icosphere-like synthetic hemispheres of ``n_per_hemi`` vertices.

    Vertices on a Fibonacci sphere (radius 50) stretched like a hemisphere, faces from
    the sphere's convex hull; curvature = sign of a wavy function.
    """
    from napari_factortopy.scene.brain import MeshSet

    cache = {}

    def loader(name: str, kind: str):
        if kind not in cache:
            cache[kind] = _synthetic_meshset(n_per_hemi, name, kind)
        return cache[kind]

    def _synthetic_meshset(n, name, kind):
        i = np.arange(n) + 0.5
        phi = np.arccos(1 - 2 * i / n)
        theta = np.pi * (1 + 5**0.5) * i
        unit = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
        from scipy.spatial import ConvexHull

        faces = ConvexHull(unit).simplices.astype(np.int64)
        # orient faces outward
        centre = unit[faces].mean(1)
        normal = np.cross(
            unit[faces[:, 1]] - unit[faces[:, 0]], unit[faces[:, 2]] - unit[faces[:, 0]]
        )
        flip = (normal * centre).sum(1) < 0
        faces[flip] = faces[flip][:, ::-1]
        verts = unit * np.array([35.0, 100.0, 70.0]) if kind != "sphere" else unit * 100
        if kind == "flat":
            verts = np.stack([theta % (2 * np.pi) * 30, phi * 60, 0 * phi], 1)
        curv = np.sin(5 * theta) * np.sin(4 * phi)
        return MeshSet(
            name,
            kind,
            {"lh": verts.astype(np.float32), "rh": verts.astype(np.float32)},
            {"lh": faces, "rh": faces},
            {"lh": curv, "rh": curv},
        )

    return loader


@pytest.fixture
def shot_dir(tmp_path) -> Path:
    """Folder for the screenshots a test keeps for a human to look at:
    ``$FACTORTOPY_TEST_SHOTS`` if set (created if missing), else the test's tmp_path."""
    env = os.environ.get("FACTORTOPY_TEST_SHOTS")
    if not env:
        return tmp_path
    folder = Path(env)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> FittedModel:
    return make_model()


@pytest.fixture
def model_path(tmp_path, tiny_model):
    return tiny_model.save(tmp_path / "tiny.ftopy")


TINY_PHANTOM = PhantomConfig(n_vertices=200, n_images=64, image_size=64)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """Folder for a tiny phantom subject (built by the first job that uses it)."""
    return tmp_path_factory.mktemp("phantom") / "subject"


@pytest.fixture(scope="session")
def phantom_model_path(phantom_root, tmp_path_factory):
    """A model trained for a few steps on the tiny phantom (the plugin's own job)."""
    from napari_factortopy.app.jobs import TrainJob, training_job
    from napari_factortopy.core.config import TrainConfig

    out = tmp_path_factory.mktemp("trained") / "phantom.ftopy"
    job = TrainJob(
        out=out,
        phantom=phantom_root,
        phantom_config=TINY_PHANTOM,
        train=TrainConfig(steps_per_epoch=3, max_epochs=1, log_every=1),
        bottleneck=8,
        hidden=8,
        device="cpu",
    )
    for _ in training_job(job):
        pass
    return out
