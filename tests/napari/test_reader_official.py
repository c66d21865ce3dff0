"""Dropping the paper's checkpoint (.pth/.ckpt) on napari: claimed only when it is the
release's FactorTopy, imported beside itself and shown; what it cannot find is named
in one message, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

sys.path.insert(0, str(Path(__file__).parents[1] / "app"))
from _release import ReleaseFactorTopy, randomise  # noqa: E402

from napari_factortopy._napari._reader import get_reader, read_official  # noqa: E402

N_HEMI = 163842


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """A synthetic fsaverage sphere (random points on a radius-100 sphere)."""
    root = tmp_path_factory.mktemp("subjects")
    (root / "fsaverage" / "surf").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for hemi in ("lh", "rh"):
        p = rng.normal(size=(N_HEMI, 3))
        p = (100 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
        nib.freesurfer.write_geometry(
            str(root / "fsaverage" / "surf" / f"{hemi}.sphere"), p, np.array([[0, 1, 2]])
        )
    return root


def _release_file(folder: Path, n_lh: int = 400, n_rh: int = 300) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    joint = np.concatenate(
        [np.sort(rng.choice(10242, n_lh, replace=False)),
         N_HEMI + np.sort(rng.choice(10242, n_rh, replace=False))]
    )  # fmt: skip
    module = randomise(ReleaseFactorTopy(len(joint)))
    path = folder / "clip_factorTopy.pth"
    torch.save(module.state_dict(), path)
    return path, joint


def test_claims_only_the_releases_checkpoints(tmp_path):
    path, _ = _release_file(tmp_path)
    assert get_reader(str(path)) is read_official
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    code = tmp_path / "code.ckpt"
    code.write_bytes(b"\x80\x04cos\nsystem\n.")
    for p in (other, text, code, tmp_path / "missing.pth"):
        assert get_reader(str(p)) is None, p


def test_drop_with_vertices_beside_opens_the_model(
    make_napari_viewer, tmp_path, subjects, monkeypatch
):
    from napari_factortopy.core.fitted_model import FittedModel

    monkeypatch.setenv("SUBJECTS_DIR", str(subjects))
    path, joint = _release_file(tmp_path)
    np.save(tmp_path / "vertices.npy", joint)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-factortopy")
    assert len(layers) == 1 and layers[0].name.startswith("clip_factorTopy")
    model = FittedModel.load(tmp_path / "clip_factorTopy.ftopy")
    assert model.n_vertices == len(joint) and model.extra["imported"]["format"] == "bare"
    assert viewer.dims.ndisplay == 3
    # a second drop reuses the import of the same file
    stamp = (tmp_path / "clip_factorTopy.ftopy").stat().st_mtime_ns
    viewer.open(str(path), plugin="napari-factortopy")
    assert (tmp_path / "clip_factorTopy.ftopy").stat().st_mtime_ns == stamp


def test_drop_without_vertices_says_what_is_missing(
    make_napari_viewer, tmp_path, subjects, monkeypatch
):
    import napari.utils.notifications as notifications

    told = []
    monkeypatch.setattr(notifications, "show_warning", told.append)
    monkeypatch.setenv("SUBJECTS_DIR", str(subjects))
    path, joint = _release_file(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-factortopy")
    assert len(viewer.layers) == 0 and len(told) == 1
    msg = told[0]
    assert "\n" not in msg and "vertex indices" in msg and "import-official" in msg
    assert not (tmp_path / "clip_factorTopy.ftopy").exists()

    # vertex indices that do not fit the checkpoint: one message, no layer, no file
    np.save(tmp_path / "vertices.npy", joint[:-3])
    viewer.open(str(path), plugin="napari-factortopy")
    assert len(viewer.layers) == 0 and len(told) == 2
    assert f"expected {len(joint) - 3} rows" in told[1] and "\n" not in told[1]
    assert not (tmp_path / "clip_factorTopy.ftopy").exists()
