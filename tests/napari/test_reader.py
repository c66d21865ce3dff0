"""get_reader: which paths the .ftopy reader claims (reading itself is tested elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy._napari._reader import get_reader, read_ftopy

modelfile = pytest.importorskip("napari_factortopy.core.modelfile")


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.ftopy"
    modelfile.save_ftopy(path, {"beta": np.zeros((4, 2), np.float32)}, {"note": "test"})
    return path


def test_claims_model_file(model_path):
    assert get_reader(str(model_path)) is read_ftopy
    assert get_reader(model_path) is read_ftopy
    assert get_reader([str(model_path), str(model_path)]) is read_ftopy


def test_declines_other_paths(tmp_path, model_path):
    other = tmp_path / "image.png"
    other.write_bytes(b"\x89PNG\r\n")
    foreign = tmp_path / "foreign.ftopy"
    foreign.write_bytes(b"not a safetensors file")
    folder = tmp_path / "folder.ftopy"
    folder.mkdir()
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(model_path.read_bytes())
    for path in (other, folder, renamed, tmp_path / "missing.ftopy"):
        assert get_reader(str(path)) is None, path
    # a foreign file named .ftopy is claimed: the reader says what it holds (#22.9)
    assert get_reader(str(foreign)) is read_ftopy
    assert get_reader([str(model_path), str(other)]) is None
    assert get_reader([]) is None
