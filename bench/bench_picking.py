"""Click picking: ours (scene.picking.first_hit) against napari's Surface.get_value.

On the same random clicks (rays along napari's default 3-D camera) counts where both
pick the same vertex, where both miss, and where only ours picks (a near miss within
one edge length), and times both per click: on fsaverage5 (when on this machine) in
three mesh kinds and two views, and on a synthetic mesh of fsaverage's size (163,842
vertices a hemisphere, 655,360 triangles).

    python bench/bench_picking.py [--clicks 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _napari_vertex(layer, p, d):
    _, tri = layer.get_value(p, view_direction=d, dims_displayed=[0, 1, 2], world=True)
    if tri is None:
        return None
    verts, faces = layer.data[0].astype(np.float64), layer.data[1]
    corners = faces[tri]
    a, b, c = verts[corners]
    normal = np.cross(b - a, c - a)
    x = p + np.dot(a - p, normal) / np.dot(d, normal) * d
    return int(corners[np.argmin(((verts[corners] - x) ** 2).sum(1))])


def bench(viewer, name, verts, faces, n_clicks):
    from napari.layers import Surface

    from napari_factortopy.scene.picking import first_hit, vertex_rays

    viewer.layers.clear()
    layer = viewer.add_layer(Surface((verts, faces)))
    rays = vertex_rays(verts, faces)
    lo, hi = verts.min(0), verts.max(0)
    rng = np.random.default_rng(0)
    d = np.array([-1.0, 0.0, 0.0])
    counts = {"same": 0, "different": 0, "both miss": 0, "ours only": 0, "napari only": 0}
    t_ours = t_napari = 0.0
    ys, zs = rng.uniform(lo[1], hi[1], n_clicks), rng.uniform(lo[2], hi[2], n_clicks)
    for y, z in zip(ys, zs, strict=True):
        p = np.array([hi[0] + 10.0, y, z])
        t0 = time.perf_counter()
        ours = first_hit(rays, p, d)
        t1 = time.perf_counter()
        theirs = _napari_vertex(layer, p, d)
        t2 = time.perf_counter()
        t_ours, t_napari = t_ours + t1 - t0, t_napari + t2 - t1
        if ours is None and theirs is None:
            counts["both miss"] += 1
        elif theirs is None:
            counts["ours only"] += 1
        elif ours is None:
            counts["napari only"] += 1
        else:
            counts["same" if ours[1] == theirs else "different"] += 1
    print(
        f"| {name} | {len(faces):,} | {counts['same']} | {counts['different']} | "
        f"{counts['both miss']} | {counts['ours only']} | {counts['napari only']} | "
        f"{1e3 * t_ours / n_clicks:.1f} | {1e3 * t_napari / n_clicks:.0f} |"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clicks", type=int, default=200)
    args = p.parse_args(argv)
    from napari.components import ViewerModel

    from napari_factortopy.data.surfaces import SurfaceError
    from napari_factortopy.scene.meshes import layout, load_meshset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "napari"))
    from conftest import synthetic_loader

    viewer = ViewerModel(ndisplay=3)
    print("| mesh, view | triangles | same | different | both miss | ours only | napari only "
          "| ours ms/click | napari ms/click |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("inflated", "pial", "sphere"):
        try:
            ms = load_meshset("fsaverage5", kind)
        except (SurfaceError, OSError, ValueError) as exc:
            print(f"fsaverage5 {kind}: not on this machine ({exc})")
            continue
        for view in ("lateral", "posterior"):
            bench(viewer, f"fsaverage5 {kind}, {view}", *layout(ms, view), args.clicks)
    big = synthetic_loader(163842)("fsaverage", "inflated")
    bench(viewer, "synthetic 2 × 163,842, lateral", *layout(big, "lateral"), min(args.clicks, 20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
