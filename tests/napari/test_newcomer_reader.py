"""Issue #22.9: a damaged or foreign file named ``.ftopy`` opened from napari's File menu
tells, in the toast itself, which file it is and what it holds instead of a model."""

from __future__ import annotations

import pytest

from ._drive import PLUGIN, Toasts, settle


@pytest.fixture
def toasts():
    t = Toasts()
    yield t
    t.close()


@pytest.fixture
def bad_files(tmp_path, model_path):
    """name → (a file named .ftopy, words the message must hold)."""
    good = model_path.read_bytes()
    files = {
        "empty": (b"", "empty file"),
        "truncated": (good[: len(good) // 2], "truncated model file"),
        "notes": (b"FactorTopy notes: model of subject 1\n", "text file"),
        "picture": (b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG image"),
    }
    out = {}
    for name, (data, words) in files.items():
        path = tmp_path / f"{name}.ftopy"
        path.write_bytes(data)
        out[name] = (path, words)
    return out


def test_a_bad_ftopy_file_is_named_in_the_plugins_words(make_napari_viewer, bad_files, toasts):
    """File → Open through the plugin's reader: no exception, no layer,
    one warning toast naming the file and what was found in it."""
    viewer = make_napari_viewer(show=True)
    for name, (path, words) in bad_files.items():
        toasts.clear()
        viewer.open(str(path), plugin=PLUGIN)  # as File → Open with the plugin
        settle()
        assert not len(viewer.layers), name
        said = toasts.messages()
        assert len(said) == 1, said
        (line,) = said
        assert path.name in line and words in line, line
        assert "\n" not in line and len(line) < 300, line
        if name != "truncated":  # what a model file is, for a file that is something else
            assert "expected a FactorTopy model" in line, line
