"""The phantom subject: a synthetic visual cortex whose every answer is known.

- **Surface**: the real fsaverage5 meshes nilearn ships. The modelled "visual
  cortex" is, in each hemisphere, the vertices nearest the occipital pole on the
  registered sphere, split by distance from the pole into four ROI levels ordered
  like V1 → V2/V3 → OPA → EBA.
- **Ground truth** (a FactorTopy model with fixed selectors):
  a retinotopic space map (each hemisphere sees the opposite half of the image,
  smoothly mapped from the vertex's place on the sphere), a layer map rising with
  ROI level (neighbouring levels prefer different but not distant blocks), a scale
  map rising with level, smooth readout weights (radial basis functions on the
  sphere), random channel-align matrices.
- **Stimuli**: procedurally generated images (gradients, 1/f texture, ellipses,
  rectangles, gratings, bars), regenerated from (seed, index) on demand; optionally
  (``photo_fraction``) a share of them are seeded crops of the natural photographs
  scikit-image bundles (offline).
- **Features**: a real pretrained network that installs offline,
  EfficientNet-Lite0, every block a layer.
- **Responses**: the truth on those features, standardised per vertex, plus
  Gaussian noise whose variance sets each vertex's ceiling R² (drawn in
  ``ceiling``, as on NSD's better vertices).

This truth is FactorTopy-shaped, so recovering it is a consistency check; the
mismatch phantoms of :mod:`napari_factortopy.data.mismatch_phantom` are not. Both
write the same folder layout and both open with :func:`load_phantom`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path
from .phantom_stimuli import (  # noqa: F401 (re-exported: the stimuli were defined here)
    PHOTO_NAMES,
    _is_photo,
    phantom_images,
)
from .surfaces import HEMIS, fsaverage5_mesh

__all__ = [
    "PHOTO_NAMES",
    "ROI_NAMES",
    "PhantomConfig",
    "PhantomSubject",
    "PhantomSurface",
    "build_phantom",
    "load_phantom",
    "phantom_images",
    "phantom_space_map",
    "phantom_surface",
    "phantom_truth_selectors",
]

ROI_NAMES = ("V1", "V2/V3", "OPA", "EBA")


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of the phantom subject.

    Attributes
    ----------
    n_vertices : int
        Modelled vertices over both hemispheres (half each).
    n_images : int
        Number of stimuli.
    image_size : int
        Side of the generated stimuli and of the network input, in pixels.
    grid : (h, w)
        Local-token grid.
    level_layers : 4 ints
        Preferred block (0-based layer index) of each ROI level.
    layer_width : float
        Spread of the truth layer weights around the preferred block (σ of a
        Gaussian over the layer index).
    level_scales : 4 floats
        Truth scale selector (global-token weight) of each ROI level.
    ceiling : (low, high)
        Range of the per-vertex noise ceiling (signal variance share).
    truth_bottleneck : int
        Channels of the truth's aligned space.
    n_basis : int
        Radial basis functions per hemisphere for the truth readout.
    seed : int
    photo_fraction : float
        Share of the stimuli that are crops of scikit-image's bundled photographs
        (:func:`phantom_images`); 0 (the default) keeps the purely procedural stimuli.
    """

    n_vertices: int = 3000
    n_images: int = 2000
    image_size: int = 128
    grid: tuple[int, int] = (8, 8)
    level_layers: tuple[int, int, int, int] = (2, 5, 8, 11)
    layer_width: float = 0.6
    level_scales: tuple[float, float, float, float] = (0.1, 0.2, 0.35, 0.5)
    ceiling: tuple[float, float] = (0.2, 0.5)
    truth_bottleneck: int = 16
    n_basis: int = 12
    seed: int = 0
    photo_fraction: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PhantomConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class PhantomSurface:
    """Where the phantom's vertices are.

    Attributes
    ----------
    vertex_ids : array of shape (V,)
        Index of each modelled vertex in its hemisphere's fsaverage5 mesh
        (left hemisphere first).
    n_lh : int
        How many of them are left-hemisphere vertices.
    roi : array of shape (V,)
        ROI label 1..4 (``ROI_NAMES[label - 1]``).
    sphere : array of shape (V, 3)
        Per-hemisphere sphere coordinates of the modelled vertices.
    frame : array of shape (V, 2)
        Coordinates in [0, 1]² in a tangent frame around the occipital pole
        (used by the truth space map).
    """

    vertex_ids: np.ndarray
    n_lh: int
    roi: np.ndarray
    sphere: np.ndarray
    frame: np.ndarray

    @property
    def hemi(self) -> np.ndarray:
        """(V,) array of "lh"/"rh"."""
        return np.where(np.arange(len(self.vertex_ids)) < self.n_lh, "lh", "rh")


def phantom_surface(n_vertices: int = 3000) -> PhantomSurface:
    """Select the occipital vertices of fsaverage5 and split them into ROI levels.

    Parameters
    ----------
    n_vertices : int
        Total over both hemispheres (at least 8).
    """
    if n_vertices < 8:
        raise ValueError(f"the phantom needs at least 8 vertices; found n_vertices={n_vertices}")
    ids, rois, spheres, frames = [], [], [], []
    per_hemi = {"lh": n_vertices // 2, "rh": n_vertices - n_vertices // 2}
    for hemi in HEMIS:
        sphere = fsaverage5_mesh("sphere", hemi).vertices.astype(np.float64)
        pial = fsaverage5_mesh("pial", hemi).vertices
        unit = sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
        pole = unit[np.argmin(pial[:, 1])]  # occipital pole: the most posterior pial vertex
        angle = np.arccos(np.clip(unit @ pole, -1, 1))
        chosen = np.argsort(angle, kind="stable")[: per_hemi[hemi]]
        chosen = np.sort(chosen)
        rank = np.argsort(np.argsort(angle[chosen], kind="stable"), kind="stable")
        level = 1 + (4 * rank) // len(chosen)
        # tangent frame at the pole: e1 toward superior (z), e2 completing the frame
        up = np.array([0.0, 0.0, 1.0])
        e1 = up - (up @ pole) * pole
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(pole, e1)
        uv = np.stack([unit[chosen] @ e2, unit[chosen] @ e1], axis=1)
        uv = (uv - uv.min(0)) / np.maximum(uv.max(0) - uv.min(0), 1e-12)
        ids.append(chosen)
        rois.append(level)
        spheres.append(sphere[chosen])
        frames.append(uv)
    return PhantomSurface(
        vertex_ids=np.concatenate(ids).astype(np.int64),
        n_lh=len(ids[0]),
        roi=np.concatenate(rois).astype(np.int64),
        sphere=np.concatenate(spheres).astype(np.float32),
        frame=np.concatenate(frames).astype(np.float32),
    )


def phantom_space_map(surface: PhantomSurface) -> np.ndarray:
    """The phantom's retinotopy: a point on the token grid per vertex.

    Each hemisphere sees the opposite half of the image (left hemisphere: x > 0),
    smoothly mapped from the vertex's place in the tangent frame at the pole.

    Returns
    -------
    array of shape (V, 2), float64
        ``grid_sample`` coordinates in [-1, 1] (x first), |x| in [0.1, 0.85],
        y in [-0.8, 0.8].
    """
    sign = np.where(np.arange(len(surface.roi)) < surface.n_lh, 1.0, -1.0)
    x = sign * (0.1 + 0.75 * surface.frame[:, 0])
    y = -0.8 + 1.6 * surface.frame[:, 1]
    return np.stack([x, y], axis=1)


def phantom_truth_selectors(
    surface: PhantomSurface, n_layers: int, config: PhantomConfig
) -> dict[str, np.ndarray]:
    """The ground-truth selectors.

    Returns
    -------
    dict with ``space`` (V, 2), ``layer`` (V, L), ``scale`` (V,)
    """
    if max(config.level_layers) >= n_layers:
        raise ValueError(
            f"level_layers {config.level_layers} need at least {max(config.level_layers) + 1} "
            f"layers; the backbone has {n_layers}"
        )
    level = surface.roi - 1
    # space: left hemisphere sees the right half of the image and vice versa
    space = phantom_space_map(surface)
    mu = np.asarray(config.level_layers, np.float64)[level]
    dist = np.arange(n_layers)[None, :] - mu[:, None]
    logits = -(dist**2) / (2 * config.layer_width**2)
    layer = np.exp(logits - logits.max(1, keepdims=True))
    layer /= layer.sum(1, keepdims=True)
    scale = np.asarray(config.level_scales, np.float64)[level]
    return {
        "space": space.astype(np.float32),
        "layer": layer.astype(np.float32),
        "scale": scale.astype(np.float32),
    }


# ----------------------------------------------------------------------- subject
@dataclass
class PhantomSubject:
    """A built phantom subject on disk (see :func:`build_phantom`).

    Attributes
    ----------
    root : Path
    config : PhantomConfig
    surface : PhantomSurface
    responses : array of shape (N, V), float32
    signal : array of shape (N, V), float32
        The noise-free truth responses (standardised per vertex).
    truth : dict
        ``space`` (V, 2), ``layer`` (V, L), ``scale`` (V,) ground-truth selectors
        (and whatever else the generator stored in ``truth.npz``).
    cache_path : Path
        The feature cache (zarr).
    layer_names : list of str
    generator : str
        ``"factortopy"`` (:func:`build_phantom`) or ``"mismatch"``
        (:func:`napari_factortopy.data.mismatch_phantom.build_mismatch_phantom`).
    details : dict
        The generator's own parameters where they go beyond :class:`PhantomConfig`
        (``phantom.json``'s ``"generator_config"``); empty for ``"factortopy"``.
    """

    root: Path
    config: PhantomConfig
    surface: PhantomSurface
    responses: np.ndarray
    signal: np.ndarray
    truth: dict[str, np.ndarray]
    cache_path: Path
    layer_names: list[str] = field(default_factory=list)
    generator: str = "factortopy"
    details: dict = field(default_factory=dict)

    def images(self, indices) -> np.ndarray:
        """Stimuli (n, S, S, 3) uint8 for the given image indices."""
        cfg = self.config
        return phantom_images(indices, cfg.image_size, cfg.seed, cfg.photo_fraction)

    def subject(self):
        """The modelled vertices as a :class:`~napari_factortopy.core.estimator.Subject`."""
        from ..core.subject import Subject

        sf = self.surface
        return Subject(sf.vertex_ids, sf.n_lh, sf.sphere, "fsaverage5", sf.roi, list(ROI_NAMES))


def phantom_features(root, config: PhantomConfig, grid, *, batch_size=32, device="auto"):
    """Extract a phantom's stimuli into ``root/features.zarr`` (resumable).

    The packaged EfficientNet-Lite0 (all 16 blocks, no crop); the cache records the
    weights' identity. A generator: yields the extraction's progress records and
    returns ``(backbone, cache)``.
    """
    from .cache import FeatureCache
    from .extract import extract_features, weights_identity

    bb = _phantom_backbone(config)
    cache = FeatureCache.open_or_create(
        Path(root) / "features.zarr",
        backbone=bb.name,
        layer_names=bb.layer_names,
        widths=bb.widths,
        grid=grid,
        image_ids=[f"phantom-{i:05d}" for i in range(config.n_images)],
        preprocessing=bb.preprocessing.to_dict(),
        weights=weights_identity(bb),
    )

    def load(idx):
        return phantom_images(idx, config.image_size, config.seed, config.photo_fraction)

    yield from extract_features(bb, load, cache, batch_size=batch_size, device=device)
    return bb, cache


def _phantom_backbone(config: PhantomConfig):
    from dataclasses import replace

    from .backbones import efficientnet_lite0

    bb = efficientnet_lite0("packaged")
    # the stimuli are generated at the network's input size: no crop
    bb.preprocessing = replace(bb.preprocessing, input_size=config.image_size, crop_pct=1.0)
    return bb


def build_phantom(
    root,
    config: PhantomConfig | None = None,
    *,
    batch_size: int = 32,
    device: str | None = "auto",
) -> Iterator[dict]:
    """Build the phantom subject in ``root`` (resumable), yielding progress records.

    Writes ``root/features.zarr`` (the feature cache), ``root/responses.npy``
    (N, V) float32, ``root/truth.npz`` (selectors, signal, ceiling, truth readout;
    plain arrays, no pickle) and ``root/phantom.json`` (config, surface, layers).
    The final record has ``stage == "done"`` and ``subject`` (a :class:`PhantomSubject`).
    """
    from ..core.runtime import resolve_device

    config = config or PhantomConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    surface = phantom_surface(config.n_vertices)
    yield {"stage": "surface", "n_vertices": len(surface.vertex_ids), "elapsed": 0.0}

    bb, cache = yield from phantom_features(
        root, config, config.grid, batch_size=batch_size, device=device
    )

    # ---- truth responses
    dev = resolve_device(device)
    rng = np.random.default_rng([config.seed, 7])
    n_layers = len(bb.widths)
    sel = phantom_truth_selectors(surface, n_layers, config)
    truth, beta = _truth_network(surface, bb, cache, config, rng)
    truth.to(dev)
    signal = _truth_signal(truth, sel, cache, config.n_images, dev)
    yield {"stage": "responses", "elapsed": time.perf_counter() - t0}
    signal, ceiling, responses = _noisy_responses(truth, signal, config, rng, dev)

    _write_phantom(root, config, surface, bb, truth, sel, signal, ceiling, beta, responses)
    subject = load_phantom(root)
    yield {"stage": "done", "elapsed": time.perf_counter() - t0, "subject": subject}


def _truth_network(surface: PhantomSurface, bb, cache, config: PhantomConfig, rng):
    """The ground-truth FactorTopy network (on the CPU): random channel-align
    matrices that give each layer's aligned tokens unit variance, and a smooth readout
    (radial basis functions on each hemisphere's sphere). Draws from ``rng``.

    Returns
    -------
    truth : FactorTopy
    beta : array of shape (V, D)
        The readout before its scaling (stored in ``truth.npz``).
    """
    import torch

    from ..core.config import FactorTopyConfig
    from ..core.encoding import joint_sphere_coordinates
    from ..core.model import FactorTopy

    coords = joint_sphere_coordinates(
        surface.sphere[: surface.n_lh], surface.sphere[surface.n_lh :]
    )
    tcfg = FactorTopyConfig(
        widths=tuple(bb.widths), grid=config.grid, bottleneck=config.truth_bottleneck
    )
    truth = FactorTopy(coords, tcfg)
    probe = np.arange(min(256, config.n_images))
    p_local, p_global = cache.read(probe)
    d = config.truth_bottleneck
    with torch.no_grad():
        for li, (conv, lin) in enumerate(zip(truth.local_align, truth.global_align, strict=True)):
            c = bb.widths[li]
            # each layer's aligned tokens get unit variance: no layer is louder
            s_loc = float(p_local[li].std()) + 1e-6
            s_glo = float(p_global[li].std()) + 1e-6
            u = rng.normal(size=(d, c)) / np.sqrt(c) / s_loc
            g = rng.normal(size=(d, c)) / np.sqrt(c) / s_glo
            conv.weight.copy_(torch.as_tensor(u, dtype=torch.float32)[:, :, None, None])
            lin.weight.copy_(torch.as_tensor(g, dtype=torch.float32))
        # smooth readout: radial basis functions on each hemisphere's sphere
        beta = np.zeros((len(coords), d))
        for h in range(2):
            rows = slice(0, surface.n_lh) if h == 0 else slice(surface.n_lh, None)
            pts = surface.sphere[rows].astype(np.float64)
            centres = pts[rng.choice(len(pts), size=min(config.n_basis, len(pts)), replace=False)]
            dist = np.linalg.norm(pts[:, None] - centres[None], axis=2)
            width = np.median(dist) / 2
            phi = np.exp(-(dist**2) / (2 * width**2))
            beta[rows] = phi @ rng.normal(size=(len(centres), d))
        beta /= np.linalg.norm(beta, axis=1, keepdims=True) + 1e-12
        truth.beta.copy_(torch.as_tensor(beta * np.sqrt(d) * d, dtype=torch.float32))
        truth.bias.zero_()
    return truth, beta


def _truth_signal(truth, sel: dict, cache, n_images: int, dev) -> np.ndarray:
    """The truth network's responses to every image with the fixed selectors ``sel``,
    as (N, V) float32 (features read from ``cache`` 128 images at a time)."""
    import torch

    from ..core.model import Selectors

    tsel = Selectors(
        space=torch.as_tensor(sel["space"], device=dev),
        layer=torch.as_tensor(sel["layer"], device=dev),
        scale=torch.as_tensor(sel["scale"], device=dev),
    )
    signal = np.empty((n_images, truth.beta.shape[0]), np.float32)
    with torch.no_grad():
        for lo in range(0, n_images, 128):
            idx = np.arange(lo, min(n_images, lo + 128))
            loc, glo = cache.read(idx)
            out = truth(
                [torch.as_tensor(t, device=dev) for t in loc],
                [torch.as_tensor(t, device=dev) for t in glo],
                tsel,
            )
            signal[idx] = out.cpu().numpy()
    return signal


def _noisy_responses(truth, signal: np.ndarray, config: PhantomConfig, rng, dev):
    """Standardise ``signal`` per vertex (folded into the truth's readout, which then
    predicts it) and add Gaussian noise whose variance sets each vertex's ceiling R²
    (drawn from ``rng`` in ``config.ceiling``).

    Returns
    -------
    signal, ceiling, responses : arrays of shape (N, V) float32, (V,), (N, V) float32
    """
    import torch

    mu = signal.astype(np.float64).mean(0)
    sd = signal.astype(np.float64).std(0) + 1e-12
    signal = ((signal - mu) / sd).astype(np.float32)
    # fold the standardisation into the truth's readout: it then predicts `signal`
    with torch.no_grad():
        truth.beta.div_(torch.as_tensor(sd, dtype=torch.float32, device=dev)[:, None])
        truth.bias.copy_(torch.as_tensor(-mu / sd, dtype=torch.float32, device=dev))
    ceiling = rng.uniform(*config.ceiling, size=signal.shape[1])
    noise_sd = np.sqrt((1 - ceiling) / ceiling)
    responses = signal + rng.normal(size=signal.shape) * noise_sd[None]
    responses = responses.astype(np.float32)
    return signal, ceiling, responses


def _write_phantom(root: Path, config, surface, bb, truth, sel, signal, ceiling, beta, responses):
    """Write the phantom's files (``responses.npy``, ``truth.npz``, ``surface.npz``,
    ``truth.ftopy``, then ``phantom.json``, which marks the folder complete)."""
    with atomic_path(root / "responses.npy") as tmp:
        np.save(tmp, responses)
    _savez(
        root / "truth.npz",
        space=sel["space"],
        layer=sel["layer"],
        scale=sel["scale"],
        signal=signal.astype(np.float32),
        ceiling=ceiling.astype(np.float32),
        beta=beta.astype(np.float32),
    )
    meta = {
        "format": "factortopy-phantom",
        "version": 1,
        "config": config.to_dict(),
        "roi_names": list(ROI_NAMES),
        "mesh": "fsaverage5",
        "backbone": bb.name,
        "layer_names": bb.layer_names,
        "widths": bb.widths,
    }
    _savez(
        root / "surface.npz",
        vertex_ids=surface.vertex_ids,
        n_lh=np.asarray(surface.n_lh),
        roi=surface.roi,
        sphere=surface.sphere,
        frame=surface.frame,
    )
    _truth_model(truth, sel, surface, bb, root).save(root / "truth.ftopy")
    with atomic_path(root / "phantom.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def _truth_model(truth, sel: dict, surface: PhantomSurface, bb, root: Path):
    """The ground truth as a model file (kind ``"phantom-truth"``): its full weights
    and its fixed selectors; with those selectors it predicts the phantom's signal."""
    from ..core.fitted_model import KIND_TRUTH, FittedModel

    state = {
        k: v.detach().float().cpu().numpy()
        for k, v in truth.state_dict().items()
        if k != "encoding"
    }
    return FittedModel(
        config=truth.config.to_dict(),
        state=state,
        space=sel["space"],
        layer=sel["layer"],
        scale=sel["scale"],
        vertex_ids=surface.vertex_ids,
        n_lh=surface.n_lh,
        mesh="fsaverage5",
        roi=surface.roi,
        roi_names=list(ROI_NAMES),
        backbone={
            "name": bb.name,
            "layer_names": list(bb.layer_names),
            "widths": list(bb.widths),
            "preprocessing": bb.preprocessing.to_dict(),
        },
        kind=KIND_TRUTH,
        extra={"phantom": str(root)},
    )


def load_phantom(root) -> PhantomSubject:
    """Open a phantom subject written by :func:`build_phantom`.

    Raises
    ------
    FileNotFoundError
        Naming the missing file when the folder is incomplete.
    """
    root = Path(root)
    for name in ("phantom.json", "responses.npy", "truth.npz", "surface.npz", "features.zarr"):
        if not (root / name).exists():
            raise FileNotFoundError(
                f"{root}: not a complete phantom subject, {name} is missing "
                "(build it with `factortopy demo` or build_phantom())"
            )
    meta = json.loads((root / "phantom.json").read_text())
    if meta.get("format") != "factortopy-phantom":
        raise ValueError(f"{root / 'phantom.json'}: expected format 'factortopy-phantom'")
    with np.load(root / "surface.npz", allow_pickle=False) as s:
        surface = PhantomSurface(
            vertex_ids=s["vertex_ids"],
            n_lh=int(s["n_lh"]),
            roi=s["roi"],
            sphere=s["sphere"],
            frame=s["frame"],
        )
    with np.load(root / "truth.npz", allow_pickle=False) as t:
        truth = {k: t[k] for k in t.files}
    return PhantomSubject(
        root=root,
        config=PhantomConfig.from_dict(meta["config"]),
        surface=surface,
        responses=np.load(root / "responses.npy", allow_pickle=False),
        signal=truth.pop("signal"),
        truth=truth,
        cache_path=root / "features.zarr",
        layer_names=list(meta["layer_names"]),
        generator=str(meta.get("generator", "factortopy")),
        details=dict(meta.get("generator_config") or {}),
    )


def _savez(path: Path, **arrays) -> None:
    """``np.savez`` atomically (plain arrays, no pickle)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
