"""The Brain maps panel's keyboard shortcuts (docs/NAPARI.md), bound on the viewer while
the panel is open: next / previous map and the view presets."""

from __future__ import annotations

from collections.abc import Callable

from napari_factortopy.scene.brain import VIEWS

__all__ = ["KEYS", "bind_keys", "unbind_keys"]

#: Keyboard shortcuts, by action name.
KEYS = {
    "next map": "Alt-N",
    "previous map": "Alt-P",
    **{f"view {v}": f"Alt-{i}" for i, v in enumerate(VIEWS, start=1)},
}


def bind_keys(
    viewer, step_map: Callable[[int], object], show_view: Callable[[str], object]
) -> dict[str, Callable]:
    """Bind :data:`KEYS` on ``viewer``: ``step_map(+1)`` / ``step_map(-1)`` for the next
    and previous map, ``show_view(view)`` for each view preset (bindings of these keys
    made before are replaced). Returns the actions, by action name."""
    actions = {
        "next map": lambda v=None: step_map(+1),
        "previous map": lambda v=None: step_map(-1),
        **{f"view {w}": (lambda v=None, w=w: show_view(w)) for w in VIEWS},
    }
    for name, key in KEYS.items():
        viewer.bind_key(key, actions[name], overwrite=True)
    return actions


def unbind_keys(viewer) -> None:
    """Unbind :data:`KEYS` on ``viewer`` (keys bound to nothing are left alone)."""
    for key in KEYS.values():
        try:
            viewer.bind_key(key, None)  # unbinds
        except (KeyError, ValueError, TypeError):
            pass
