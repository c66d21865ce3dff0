"""A saved picture of the workbench: which models, which map, mesh, view and camera.

:class:`Session` is a small frozen record, written as JSON, in the style of
napari-animation's ``ViewerState``: enough to draw the same picture again (model
files, the shown map with its layer slider and score, mesh kind, view preset, ROI
outlines, the camera). It holds no arrays and no Qt; the plugin reads it off a
viewer and applies it (``napari_factortopy._napari._session``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["SESSION_VERSION", "Camera", "LayerState", "Session"]

#: Format version written in every session file.
SESSION_VERSION = 1


@dataclass(frozen=True)
class Camera:
    """napari's 3-D camera: ``center`` (3,), ``zoom``, ``angles`` (3, degrees),
    ``perspective`` (degrees)."""

    center: tuple[float, ...] = (0.0, 0.0, 0.0)
    zoom: float = 1.0
    angles: tuple[float, ...] = (0.0, 0.0, 90.0)
    perspective: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", tuple(float(c) for c in self.center))
        object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
        object.__setattr__(self, "zoom", float(self.zoom))
        object.__setattr__(self, "perspective", float(self.perspective))


@dataclass(frozen=True)
class LayerState:
    """One model layer: its file and what it shows.

    Attributes
    ----------
    path : str
        The ``.ftopy`` file.
    name : str
        The layer's name.
    map : str
        The shown map (``BrainScene.map_name``).
    layer_index : int
        0-based layer of the ``layer weights`` slider.
    score_key : str or None
    kind : str
        Mesh kind.
    view : str
        View preset.
    outlines : bool
    visible : bool
    translate : tuple of float
    """

    path: str
    name: str
    map: str = "layer"
    layer_index: int = 0
    score_key: str | None = None
    kind: str = "inflated"
    view: str = "lateral"
    outlines: bool = False
    visible: bool = True
    translate: tuple[float, ...] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "translate", tuple(float(t) for t in self.translate))
        object.__setattr__(self, "layer_index", int(self.layer_index))


@dataclass(frozen=True)
class Session:
    """Everything that makes the picture (see the module notes).

    Attributes
    ----------
    layers : tuple of LayerState
        The model layers, bottom to top.
    active : str or None
        Name of the layer the Brain maps panel acts on.
    camera : Camera
    ndisplay : int
    version : int
    """

    layers: tuple[LayerState, ...] = ()
    active: str | None = None
    camera: Camera = field(default_factory=Camera)
    ndisplay: int = 3
    version: int = SESSION_VERSION

    def to_json(self) -> str:
        """The session as a JSON text."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Session:
        """Read :meth:`to_json`'s text.

        Raises
        ------
        ValueError
            Not a session, or a newer format than this version reads.
        """
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a session file: {exc}") from None
        if not isinstance(d, dict) or "layers" not in d:
            raise ValueError("not a session file: no 'layers'")
        if int(d.get("version", 0)) > SESSION_VERSION:
            raise ValueError(
                f"session format {d['version']} is newer than this plugin reads "
                f"({SESSION_VERSION}); update napari-factortopy"
            )
        return cls(
            layers=tuple(LayerState(**ly) for ly in d["layers"]),
            active=d.get("active"),
            camera=Camera(**(d.get("camera") or {})),
            ndisplay=int(d.get("ndisplay", 3)),
            version=int(d.get("version", SESSION_VERSION)),
        )

    def save(self, path: str | Path) -> Path:
        """Write the JSON file (atomically)."""
        from napari_factortopy.core.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Session:
        return cls.from_json(Path(path).read_text())
