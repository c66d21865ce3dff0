"""Issue 22, item 6 (open → map): a docked panel has the modules a model's open needs
imported ahead on a thread, so the first open in a napari session does not import them
on the UI thread."""

from __future__ import annotations

import importlib
import sys
import threading

import pytest

from napari_factortopy._napari import _background, _common

from ._drive import dock, open_model


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


@pytest.fixture
def lazy_units():
    """pint's application registry as a fresh napari session has it: the untouched lazy
    default (restored afterwards: other tests' layers were made from the one in use)."""
    import pint

    before = pint.get_application_registry().get()
    lazy = pint.LazyRegistry()
    pint.set_application_registry(lazy)
    yield lazy
    pint.set_application_registry(before)


def test_the_unit_registry_is_built_ahead_and_the_first_layer_uses_it(
    make_napari_viewer, model_path, qtbot, lazy_units, monkeypatch
):
    import pint

    started = []
    units_in_background = _common.units_in_background
    monkeypatch.setattr(
        _common, "units_in_background", lambda v: started.append(units_in_background(v))
    )
    viewer = make_napari_viewer()
    dock(viewer, "Brain maps")
    dock(viewer, "ROI table")
    assert started[0] is not None and started[1:] == [None]  # one build per window
    qtbot.waitUntil(
        lambda: not isinstance(pint.get_application_registry().get(), pint.LazyRegistry),
        timeout=30000,
    )
    built = pint.get_application_registry().get()
    assert type(lazy_units) is pint.LazyRegistry, "the lazy default was built (a race)"
    assert str(built("pixel").units) == "pixel"
    layer = open_model(viewer, model_path)
    assert all(unit._REGISTRY is built for unit in layer.units)
    assert type(lazy_units) is pint.LazyRegistry


def test_a_unit_registry_in_use_is_kept(lazy_units):
    import pint

    ahead = pint.UnitRegistry(on_redefinition="raise")
    assert str(lazy_units.meter) == "meter"  # a unit was made from the lazy default
    assert not _background.use_units(ahead)
    assert pint.get_application_registry().get() is lazy_units
    assert _background.units_in_background() is None  # nothing to build


def test_use_units_installs_over_the_untouched_default(lazy_units):
    import pint

    ahead = pint.UnitRegistry(on_redefinition="raise")
    assert _background.use_units(ahead)
    assert pint.get_application_registry().get() is ahead
