"""Issue 22, item 6 (open → map): a docked panel has the modules a model's open needs
imported ahead on a thread, so the first open in a napari session does not import them
on the UI thread."""

from __future__ import annotations

import importlib
import sys
import threading

from napari_factortopy._napari import _background, _common

from ._drive import dock


def test_modules_are_imported_on_a_thread_and_a_broken_one_is_left_alone(tmp_path, monkeypatch):
    (tmp_path / "ftopy_warm_good.py").write_text(
        "import threading\nIMPORTED_ON = threading.current_thread().name\n"
    )
    (tmp_path / "ftopy_warm_bad.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("ftopy_warm_good", "ftopy_warm_bad"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    thread = _background.import_in_background(("ftopy_warm_bad", "ftopy_warm_good"))
    assert isinstance(thread, threading.Thread)
    thread.join(timeout=20)
    assert not thread.is_alive()
    good = sys.modules["ftopy_warm_good"]
    assert good.IMPORTED_ON == "factortopy-imports" != threading.current_thread().name
    assert "ftopy_warm_bad" not in sys.modules  # its error waits for whoever imports it
    assert _background.import_in_background(("ftopy_warm_good",)) is None  # nothing left
    monkeypatch.delitem(sys.modules, "ftopy_warm_good")


def test_the_open_path_modules_exist():
    """A renamed module would make the warm-up import nothing, silently."""
    for name in _background.OPEN_PATH_MODULES:
        assert importlib.import_module(name).__name__ == name


def test_docking_a_model_panel_starts_the_imports(make_napari_viewer, monkeypatch):
    asked = []
    monkeypatch.setattr(_common, "import_in_background", lambda *a: asked.append(a))
    viewer = make_napari_viewer()
    dock(viewer, "ROI table")
    assert asked == [()]  # the defaults: OPEN_PATH_MODULES
    dock(viewer, "Brain maps")
    assert len(asked) >= 2
