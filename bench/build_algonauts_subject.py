"""A synthetic Algonauts 2023 subject in the release's exact layout and sizes (issue 21,
item 1): the input of the full-size rehearsal (extract → train → info → figure → napari).

Defaults are subject 1's sizes: 9,841 training images of 425 px, 19,004 + 20,544
response columns on fsaverage (fsaverage7: 163,842 vertices per hemisphere), of which
37,984 are nsdgeneral and the rest RSC (floc-places), all six ROI label families in
challenge space with their ``mapping_<family>.npy`` tables, and a FreeSurfer subjects
folder whose ``fsaverage/surf/?h.sphere`` have fsaverage7's vertex count. Written::

    OUT/subj01/training_split/training_images/train-NNNN_nsd-MMMMM.png
    OUT/subj01/training_split/training_fmri/{lh,rh}_training_fmri.npy   (float32)
    OUT/subj01/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy
    OUT/subj01/roi_masks/{lh,rh}.<family>_challenge_space.npy, mapping_<family>.npy
    OUT/subjects/fsaverage/surf/{lh,rh}.{sphere,inflated,pial,white}, {lh,rh}.{curv,sulc}
    OUT/noise_ceiling.npy       NC in percent, (2, 163842), NaN off the columns
    OUT/build.json              sizes, seconds, peak RSS

The responses are learnable: each vertex reads a smooth (over the sphere) mixture of
the image's coarse colour layout (a 4×4 grid of mean RGB values, 48 numbers), plus
Gaussian noise whose share sets the vertex's noise ceiling (uniform in
``--ceiling``, percent), which ``noise_ceiling.npy`` holds. Images are the phantom's
procedural stimuli (:func:`napari_factortopy.data.phantom.phantom_images`).

Full size takes about 2 GB of PNGs, 1.6 GB of responses and ~15 minutes on two cores;
a small run for checking the layout::

    python bench/build_algonauts_subject.py --out WORK --images 40 --lh 1900 --rh 2054 \\
        --nsdgeneral 3798
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

N_FS = 163842  # fsaverage7 vertices per hemisphere
FAMILIES = {  # the release's label tables (value → name; 0 Unknown)
    "prf-visualrois": ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "floc-bodies": ["Unknown", "EBA", "FBA-1", "FBA-2", "mTL-bodies"],
    "floc-faces": ["Unknown", "OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "floc-places": ["Unknown", "OPA", "PPA", "RSC"],
    "floc-words": ["Unknown", "OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"],
    "streams": [
        "Unknown",
        "early",
        "midventral",
        "midlateral",
        "midparietal",
        "ventral",
        "lateral",
        "parietal",
    ],
}
#: Ring of each family around the pole, as quantiles of the nsdgeneral columns'
#: distance to it (retinotopic innermost; streams everywhere).
RINGS = {
    "prf-visualrois": (0.0, 0.35),
    "floc-bodies": (0.35, 0.5),
    "floc-faces": (0.5, 0.6),
    "floc-places": (0.6, 0.7),
    "floc-words": (0.7, 0.8),
    "streams": (0.0, 1.0),
}


def sphere(rng: np.random.Generator) -> np.ndarray:
    """``N_FS`` points on a sphere of radius 100 (Fibonacci lattice, slightly jittered)."""
    i = np.arange(N_FS) + 0.5
    phi = np.arccos(1 - 2 * i / N_FS)
    theta = np.pi * (1 + 5**0.5) * i
    p = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    p += rng.normal(scale=1e-4, size=p.shape)
    return 100 * p / np.linalg.norm(p, axis=1, keepdims=True)


def write_meshes(surf: Path, hemi: str, pts: np.ndarray) -> None:
    """A hemisphere's FreeSurfer surfaces on the sphere's points, triangulated by their
    convex hull (faces wound outwards): ``sphere`` (radius 100), ``inflated``, ``pial`` and
    ``white`` (an ellipsoid of 35 × 100 × 70 mm, shifted to its side of the midline), and
    a smooth ``curv``/``sulc`` pattern, so that napari and figures draw a closed surface of
    fsaverage7's size."""
    import nibabel as nib
    from scipy.spatial import ConvexHull

    unit = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    faces = ConvexHull(unit).simplices.astype(np.int32)
    normal = np.cross(unit[faces[:, 1]] - unit[faces[:, 0]], unit[faces[:, 2]] - unit[faces[:, 0]])
    flip = (normal * unit[faces].mean(1)).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    side = -40.0 if hemi == "lh" else 40.0
    brain = (unit * [35.0, 100.0, 70.0] + [side, 0.0, 0.0]).astype(np.float32)
    for kind, verts in (("sphere", pts), ("inflated", brain), ("pial", brain), ("white", brain)):
        nib.freesurfer.write_geometry(
            str(surf / f"{hemi}.{kind}"), verts.astype(np.float32), faces
        )
    theta, phi = np.arctan2(unit[:, 1], unit[:, 0]), np.arccos(unit[:, 2].clip(-1, 1))
    curv = (np.sin(5 * theta) * np.sin(4 * phi)).astype(np.float32)
    for kind in ("curv", "sulc"):
        nib.freesurfer.write_morph_data(str(surf / f"{hemi}.{kind}"), curv)


def columns(pts: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` vertices nearest the occipital pole (−y), in mesh order: a cap."""
    d = np.linalg.norm(pts - np.array([0.0, -100.0, 0.0]), axis=1)
    return np.sort(np.argsort(d, kind="stable")[:n])


def labels(pts: np.ndarray, fam: str, n_general: int) -> np.ndarray:
    """Contiguous labels of one family on a hemisphere's columns, given as unit vectors
    nearest the pole first (0 = none): bands by angle around the pole over the
    family's ring (:data:`RINGS`) of the nsdgeneral columns; RSC on the columns after."""
    names = FAMILIES[fam]
    k = len(names) - 1 - (1 if fam == "floc-places" else 0)  # RSC placed apart
    ang = np.arctan2(pts[:n_general, 2], pts[:n_general, 0])
    rad = np.linalg.norm(pts[:n_general] - np.array([0.0, -1.0, 0.0]), axis=1)
    out = np.zeros(len(pts), np.int64)
    lo, hi = np.quantile(rad, RINGS[fam])
    inside = (rad >= lo) & (rad <= hi)
    band = np.floor((ang + np.pi) / (2 * np.pi) * k).astype(np.int64).clip(0, k - 1) + 1
    out[:n_general][inside] = band[inside]
    if fam == "floc-places":
        out[n_general:] = names.index("RSC")
    return out


def image_features(images: np.ndarray) -> np.ndarray:
    """(n, 48): mean RGB over a 4×4 grid, standardised."""
    n, s = images.shape[:2]
    g = images[:, : s // 4 * 4, : s // 4 * 4].reshape(n, 4, s // 4, 4, s // 4, 3)
    f = g.mean(axis=(2, 4)).reshape(n, 48).astype(np.float32)
    return (f - 127.5) / 64.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=9841)
    p.add_argument("--size", type=int, default=425)
    p.add_argument("--lh", type=int, default=19004, help="left response columns")
    p.add_argument("--rh", type=int, default=20544, help="right response columns")
    p.add_argument("--nsdgeneral", type=int, default=37984, help="columns that are not RSC")
    p.add_argument("--ceiling", type=float, nargs=2, default=(10.0, 60.0), help="NC range, %%")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--meshes-only", action="store_true", help="(re)write only the subjects folder's meshes"
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    from PIL import Image

    from napari_factortopy.data.phantom import phantom_images

    out = Path(args.out)
    root = out / "subj01"
    imgs_dir = root / "training_split" / "training_images"
    fmri_dir = root / "training_split" / "training_fmri"
    masks = root / "roi_masks"
    surf = out / "subjects" / "fsaverage" / "surf"
    for d in (imgs_dir, fmri_dir, masks, surf, root / "test_split" / "test_images"):
        d.mkdir(parents=True, exist_ok=True)
    if args.meshes_only:
        for h, hemi in enumerate(("lh", "rh")):
            write_meshes(surf, hemi, sphere(np.random.default_rng([args.seed, h])))
        return
    rng = np.random.default_rng(args.seed)
    rsc = args.lh + args.rh - args.nsdgeneral
    if not 0 <= rsc <= min(args.lh, args.rh):
        raise SystemExit("--nsdgeneral must leave 0..min(lh, rh) columns for RSC")
    rsc_lh = rsc * args.lh // (args.lh + args.rh)
    hemis = {"lh": (args.lh, args.lh - rsc_lh), "rh": (args.rh, args.rh - (rsc - rsc_lh))}
    nsd_ids = np.sort(rng.choice(73000, args.images, replace=False))

    # meshes, columns, labels
    nc_full = np.full((2, N_FS), np.nan, np.float32)
    geo = {}
    for h, (hemi, (n_cols, n_general)) in enumerate(hemis.items()):
        pts = sphere(np.random.default_rng([args.seed, h]))
        write_meshes(surf, hemi, pts)
        cols = columns(pts, n_cols)
        # nsdgeneral: the columns nearest the pole; RSC: the outer rim
        near = np.argsort(np.linalg.norm(pts[cols] - [0, -100, 0], axis=1), kind="stable")
        order = cols[near]  # nearest first
        mask = np.zeros(N_FS, np.int64)
        mask[cols] = 1
        np.save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        local = pts[order] / 100  # columns nearest-first for labelling, then back to order
        back = np.argsort(near, kind="stable")
        for fam in FAMILIES:
            lab = labels(local, fam, n_general)[back]
            np.save(masks / f"{hemi}.{fam}_challenge_space.npy", lab)
            full = np.zeros(N_FS, np.int64)
            full[cols] = lab
            np.save(masks / f"{hemi}.{fam}_fsaverage_space.npy", full)
        geo[hemi] = (cols, pts[cols] / 100)
        nc_full[h, cols] = rng.uniform(*args.ceiling, size=n_cols)
    for fam, names in FAMILIES.items():
        np.save(masks / f"mapping_{fam}.npy", dict(enumerate(names)), allow_pickle=True)
    np.save(out / "noise_ceiling.npy", nc_full)

    # responses: smooth mixtures of the coarse colour layout, plus noise at the ceiling
    readouts = {}
    centres = rng.normal(size=(48, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for hemi, (_cols, unit) in geo.items():
        w = np.exp(8 * unit @ centres.T)  # (V, 48): smooth over the sphere
        readouts[hemi] = (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)
    fmri = {
        hemi: np.lib.format.open_memmap(
            fmri_dir / f"{hemi}_training_fmri.npy",
            mode="w+",
            dtype=np.float32,
            shape=(args.images, n),
        )
        for hemi, (n, _) in hemis.items()
    }
    signal_sd = {}
    block = 256
    for lo in range(0, args.images, block):
        ids = np.arange(lo, min(lo + block, args.images))
        ims = phantom_images(ids, size=args.size, seed=args.seed)
        for k, i in enumerate(ids):
            Image.fromarray(ims[k]).save(imgs_dir / f"train-{i + 1:04d}_nsd-{nsd_ids[i]:05d}.png")
        f = image_features(ims)
        for h, hemi in enumerate(hemis):
            cols = geo[hemi][0]
            s = f @ readouts[hemi].T  # (b, V)
            if hemi not in signal_sd:  # scale fixed from the first block
                signal_sd[hemi] = s.std(0) + 1e-6
            s /= signal_sd[hemi]
            share = nc_full[h, cols] / 100  # signal variance share = NC
            noise = rng.standard_normal(s.shape).astype(np.float32)
            fmri[hemi][ids] = np.sqrt(share) * s + np.sqrt(1 - share) * noise
        print(f"{ids[-1] + 1}/{args.images} images", flush=True)
    for arr in fmri.values():
        arr.flush()
    info = {
        "images": args.images,
        "size": args.size,
        "columns": {h: n for h, (n, _) in hemis.items()},
        "nsdgeneral": args.nsdgeneral,
        "rsc": rsc,
        "mesh_vertices_per_hemisphere": N_FS,
        "seconds": time.perf_counter() - t0,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    (out / "build.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
