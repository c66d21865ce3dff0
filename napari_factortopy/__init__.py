"""napari-factortopy: map a deep vision network onto the human visual cortex.

The package is organised in three layers, with dependencies pointing one way:

- :mod:`napari_factortopy.core` — the method (model, training, metrics, analyses,
  colours, the model file); numpy and torch only, never Qt.
- :mod:`napari_factortopy.data` — what comes in: backbones, the feature cache,
  datasets (phantom subject), surfaces.
- :mod:`napari_factortopy._napari` — the thin napari plugin layer.
"""

from .core.version import __version__

__all__ = ["__version__"]

from .core.runtime import install_triton_guard as _install_triton_guard

_install_triton_guard()
