"""factortopy predict: (N, V) responses for new images in the order given, through the
model's own backbone; checked against the one-image path of app/predict.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from napari_factortopy.app.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random FactorTopy on the packaged EfficientNet-Lite0 (offline weights)."""
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.data.backbones import efficientnet_lite0

    bb = efficientnet_lite0()
    rng = np.random.default_rng(0)
    v = 300
    coords = rng.normal(size=(v, 3))
    torch.manual_seed(0)
    module = FactorTopy(coords, FactorTopyConfig(widths=bb.widths, grid=(4, 4)))
    with torch.no_grad():
        for name in ("space_mlp", "layer_mlp", "scale_mlp"):
            getattr(module, name)[4].weight.normal_(0, 0.3)
    ids = np.concatenate([np.arange(150), np.arange(150)])
    model = FittedModel.from_module(module, vertex_ids=ids, n_lh=150, backbone=bb.describe())
    path = tmp_path_factory.mktemp("model") / "m.ftopy"
    model.save(path)
    return path


def _write_images(folder, sizes, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (h, w) in sizes.items():
        im = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(im).save(folder / name)
        paths.append(folder / name)
    return paths


def test_predict_folder_and_files_in_order(model_file, tmp_path, capsys):
    from PIL import Image

    from napari_factortopy.app.predict import predict_array
    from napari_factortopy.core.fitted_model import FittedModel

    folder = tmp_path / "imgs"
    _write_images(folder, {"b.png": (90, 120), "a.jpg": (200, 150), "c.png": (64, 64)})
    (folder / "notes.txt").write_text("not an image")
    single = _write_images(tmp_path / "one", {"z.png": (100, 100)}, seed=1)[0]
    out = tmp_path / "pred.npy"
    argv = ["predict", str(model_file), str(folder), str(single), "--out", str(out)]
    assert main([*argv, "--batch-size", "2", "--device", "cpu"]) == 0
    pred = np.load(out)
    model = FittedModel.load(model_file)
    assert pred.shape == (4, model.n_vertices) and pred.dtype == np.float32
    order = [folder / "a.jpg", folder / "b.png", folder / "c.png", single]
    for row, path in zip(pred, order, strict=True):
        with Image.open(path) as im:
            ref, _ = predict_array(model, np.asarray(im.convert("RGB")))
        assert np.abs(row - ref).max() <= 1e-4 * np.ptp(ref), path
    assert "wrote" in capsys.readouterr().err


def test_predict_errors_exit_2_without_output(model_file, tmp_path, capsys):
    out = tmp_path / "pred.npy"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(model_file), str(empty), "--out", str(out)]) == 2
    assert "empty" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(model_file), str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    assert "nope.png" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", str(model_file), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "expected an image" in err and not out.exists()
    assert main(["predict", str(model_file), str(bad), "--out", str(tmp_path / "p.csv")]) == 2
    assert ".npy" in capsys.readouterr().err


def test_predict_names_missing_backbone_weights(tmp_path, capsys, monkeypatch):
    """The paper's backbone without its weights on disk: exit 2, one line saying what to
    fetch, before any image is read."""
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.fitted_model import FittedModel
    from napari_factortopy.core.model import FactorTopy
    from napari_factortopy.data.backbones.open_clip_family import paper_backbone_record

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    module = FactorTopy(
        np.random.default_rng(0).normal(size=(20, 3)), FactorTopyConfig([768] * 12)
    )
    ids = np.arange(20)
    m = FittedModel.from_module(module, vertex_ids=ids, n_lh=20, backbone=paper_backbone_record())
    m.save(tmp_path / "paper.ftopy")
    img = _write_images(tmp_path / "i", {"x.png": (50, 50)})[0]
    out = tmp_path / "p.npy"
    argv = ["predict", str(tmp_path / "paper.ftopy"), str(img), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ViT-B-16" in err[0] and "--weights" in err[0], err
    assert not out.exists()
    assert main([*argv, "--weights", str(tmp_path / "missing.bin")]) == 2
    assert "missing.bin" in capsys.readouterr().err and not out.exists()
