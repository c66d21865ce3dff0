"""The phantom's stimuli: procedural images and crops of bundled photographs.

Every image is regenerated from ``(seed, index)`` on demand (no image files):
procedural ones (colour gradient, 1/f texture, ellipses, rectangles, gratings, bars)
and, for a ``photo_fraction`` share, seeded crops of the natural photographs
scikit-image bundles (offline). Used by :mod:`napari_factortopy.data.phantom`, whose
subjects' images these are.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["PHOTO_NAMES", "phantom_images"]


def _one_image(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # background: a colour gradient along a random direction
    c0, c1 = rng.random(3), rng.random(3)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) + 0.5
    img = c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]
    # 1/f texture
    f = np.fft.fftfreq(size)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    fr[0, 0] = 1.0
    spec = (rng.normal(size=(3, size, size)) + 1j * rng.normal(size=(3, size, size))) / fr**1.2
    spec[:, 0, 0] = 0
    tex = np.real(np.fft.ifft2(spec))
    tex /= tex.std() + 1e-9
    img = img + rng.uniform(0.03, 0.15) * np.moveaxis(tex, 0, -1)
    # shapes
    for _ in range(rng.integers(3, 9)):
        kind = rng.integers(0, 4)
        cx, cy = rng.random(2)
        r = rng.uniform(0.04, 0.3)
        colour = rng.random(3)
        if kind == 0:  # ellipse
            a, b = r, r * rng.uniform(0.4, 1.0)
            phi = rng.uniform(0, np.pi)
            u = np.cos(phi) * (xx - cx) + np.sin(phi) * (yy - cy)
            v = -np.sin(phi) * (xx - cx) + np.cos(phi) * (yy - cy)
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1
            img[mask] = colour
        elif kind == 1:  # rectangle
            w, h = r, r * rng.uniform(0.3, 1.0)
            mask = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
            img[mask] = colour
        elif kind == 2:  # grating patch
            freq = rng.uniform(4, 30)
            phi = rng.uniform(0, np.pi)
            wave = 0.5 + 0.5 * np.sin(
                2 * np.pi * freq * (np.cos(phi) * xx + np.sin(phi) * yy) + rng.uniform(0, 6.3)
            )
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
            img[mask] = (wave[..., None] * colour + (1 - wave[..., None]) * (1 - colour))[mask]
        else:  # bar
            phi = rng.uniform(0, np.pi)
            d = np.abs(-np.sin(phi) * (xx - cx) + np.cos(phi) * (yy - cy))
            along = np.abs(np.cos(phi) * (xx - cx) + np.sin(phi) * (yy - cy))
            mask = (d <= r * 0.12) & (along <= r * 1.5)
            img[mask] = colour
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


#: scikit-image's bundled photographs (``skimage.data.<name>()``, no download) that
#: the photo stimuli are cropped from.
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "page",
    "text",
)


@functools.cache
def _photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photographs as (H, W, 3) uint8 (grey → RGB)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - scikit-image comes with napari
        raise ImportError(
            "photo stimuli (photo_fraction > 0) are crops of scikit-image's bundled "
            "photographs: install it with `pip install scikit-image`"
        ) from exc
    img = np.asarray(getattr(data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    img.setflags(write=False)
    return img


def _photo_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a bundled photograph (side 25–100 % of the photo's
    short side), randomly mirrored, with a random gain, resized to ``size``."""
    from PIL import Image

    img = _photo(PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))])
    h, w = img.shape[:2]
    side = max(16, round(rng.uniform(0.25, 1.0) * min(h, w)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = img[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = Image.fromarray(np.ascontiguousarray(crop)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    gain = rng.uniform(0.8, 1.2)
    return np.clip(np.asarray(out, np.float32) * gain, 0, 255).astype(np.uint8)


def _is_photo(seed: int, index: int, photo_fraction: float) -> bool:
    if photo_fraction <= 0:
        return False
    return bool(np.random.default_rng([seed, index, 1]).random() < photo_fraction)


def phantom_images(
    indices, size: int = 128, seed: int = 0, photo_fraction: float = 0.0
) -> np.ndarray:
    """Generate phantom stimuli (deterministic in ``seed`` and each index).

    Parameters
    ----------
    indices : array-like of shape (n,)
    size : int
    seed : int
    photo_fraction : float
        Share of the images that are crops of scikit-image's bundled photographs
        (:data:`PHOTO_NAMES`): whether image ``i`` is one is drawn from
        ``(seed, i)`` alone. 0 gives the procedural images only, unchanged.

    Returns
    -------
    array of shape (n, size, size, 3), uint8
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    out = np.empty((len(idx), size, size, 3), np.uint8)
    for k, i in enumerate(idx):
        if _is_photo(seed, int(i), photo_fraction):
            out[k] = _photo_image(np.random.default_rng([seed, int(i), 2]), size)
        else:
            out[k] = _one_image(np.random.default_rng([seed, int(i)]), size)
    return out
