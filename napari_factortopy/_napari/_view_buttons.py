"""The Brain maps panel's camera presets: one button per view, in rows of at most
three (five in one row are wider than a 1440-px screen's dock)."""

from __future__ import annotations

from collections.abc import Callable

from magicgui import widgets

from napari_factortopy.scene.brain import VIEWS

__all__ = ["ViewButtons"]


class ViewButtons:
    """A button per view of :data:`~napari_factortopy.scene.brain.VIEWS`, each calling
    ``on_view(view)``; ``rows`` is the labelled container the panel shows."""

    def __init__(self, on_view: Callable[[str], object], per_row: int = 3) -> None:
        self.buttons = tuple(
            widgets.PushButton(text=view, tooltip=f"camera preset: {view}") for view in VIEWS
        )
        for view, button in zip(VIEWS, self.buttons, strict=True):
            button.changed.connect(lambda _=None, v=view: on_view(v))
        rows = [
            widgets.Container(
                layout="horizontal", labels=False, widgets=self.buttons[i : i + per_row]
            )
            for i in range(0, len(VIEWS), per_row)
        ]
        for row in rows:
            row.margins = (0, 0, 0, 0)
        self.rows = widgets.Container(labels=False, label="view", widgets=rows)
        self.rows.margins = (0, 0, 0, 0)

    def set_flat(self, enabled: bool, tooltip: str) -> None:
        """Enable the flat view only where the mesh has a flat patch; say why not."""
        flat = self.buttons[VIEWS.index("flat")]
        flat.enabled, flat.tooltip = enabled, tooltip
