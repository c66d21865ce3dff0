"""The on-disk feature cache: backbone tokens of N images for L layers, in zarr.

One job per module; :class:`FeatureCache` brings them together:

- :mod:`.format`: the arrays and attributes on disk, checks of a found cache's layout;
- :mod:`.identity`: what made the rows (backbone, layers, grid, images, preprocessing,
  weights), checked on creation, on opening and before rows are added;
- :mod:`.integrity`: damage (missing or short chunk files, digest mismatches),
  :meth:`FeatureCache.verify` and repair;
- :mod:`.claims`: which process extracts which image range;
- :mod:`.rows`: writing and reading rows, crash safety, concurrent writers;
- :mod:`.store`: :class:`FeatureCache` itself, its creation and opening.
"""

from .claims import CLAIM_STALE_SECONDS
from .format import CACHE_FORMAT, CACHE_VERSION, CacheError
from .identity import image_digest
from .integrity import CacheReport
from .store import FeatureCache

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CLAIM_STALE_SECONDS",
    "CacheError",
    "CacheReport",
    "FeatureCache",
    "image_digest",
]
