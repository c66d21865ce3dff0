"""Whether a mesh is closed and which way its faces turn, against plain loops (the
canvas skips back faces only on this answer: a wrong +1 would hide what is seen)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from napari_factortopy.scene.closed_surface import closed_orientation, surface_orientation
from napari_factortopy.scene.meshes import VIEWS, MeshSet, layout, load_meshset


def _octahedron(centre=(0.0, 0.0, 0.0), size=1.0):
    """A closed octahedron with outward faces (checked by the loop below)."""
    v = np.array(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float
    ) * size + np.asarray(centre)
    f = np.array(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    )
    return v, f


def _naive(vertices, faces) -> int:
    """The same question with loops: directed edges counted, every piece's volume
    summed face by face."""
    edges = Counter()
    for a, b, c in faces:
        for e in ((a, b), (b, c), (c, a)):
            edges[e] += 1
    if any(n != 1 or edges[(e[1], e[0])] != 1 for e, n in edges.items()):
        return 0
    # pieces by a flood fill over the faces
    piece, label = {}, 0
    for start in range(len(faces)):
        if start in piece:
            continue
        stack = [start]
        piece[start] = label
        while stack:
            i = stack.pop()
            for j in range(len(faces)):
                if j not in piece and set(faces[i]) & set(faces[j]):
                    piece[j] = label
                    stack.append(j)
        label += 1
    volume = [0.0] * label
    for i, (a, b, c) in enumerate(faces):
        volume[piece[i]] += float(np.dot(vertices[a], np.cross(vertices[b], vertices[c])))
    signs = {int(np.sign(x)) if abs(x) > 1e-12 else 0 for x in volume}
    return signs.pop() if len(signs) == 1 and 0 not in signs else 0


def _two(first, second):
    (v1, f1), (v2, f2) = first, second
    return np.vstack([v1, v2]), np.vstack([f1, f2 + len(v1)])


def _cases():
    v, f = _octahedron((0.3, -0.2, 0.5))
    far = _octahedron((5.0, 0.0, 0.0), 2.0)
    sheet_v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    return {
        "outward": ((v, f), 1),
        "inward": ((v, f[:, ::-1]), -1),
        "corners rotated": ((v, np.roll(f, 1, axis=1)), 1),
        "a hole": ((v, f[1:]), 0),
        "one face flipped": ((v, np.vstack([f[:1, ::-1], f[1:]])), 0),
        "a face twice": ((v, np.vstack([f, f[:1]])), 0),
        "two pieces outward": (_two((v, f), far), 1),
        "two pieces inward": (_two((v, f[:, ::-1]), (far[0], far[1][:, ::-1])), -1),
        "pieces turned differently": (_two((v, f), (far[0], far[1][:, ::-1])), 0),
        "a closed sheet without volume": ((sheet_v, np.array([[0, 1, 2], [0, 2, 1]])), 0),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_closed_orientation_against_loops(name):
    (vertices, faces), expected = _cases()[name]
    assert _naive(vertices, faces) == expected, "the loop itself disagrees with the case"
    assert closed_orientation(vertices, faces) == expected


def test_bad_shapes_are_not_closed():
    v, f = _octahedron()
    assert closed_orientation(v, f[:0]) == 0
    assert closed_orientation(v[:, :2], f) == 0
    assert closed_orientation(v, f + 10) == 0  # indices past the vertices


def test_fsaverage_surfaces_are_closed_and_outward():
    """nilearn's fsaverage5 (FreeSurfer's meshes): every kind closed and outward, the
    flat patch never; and every view's layout keeps the orientation (a rotation),
    which BrainScene.orientation relies on."""
    for kind in ("inflated", "sphere", "pial"):
        ms = load_meshset("fsaverage5", kind)
        assert surface_orientation(ms) == 1, kind
        for view in VIEWS:
            if view == "flat":
                continue
            verts, faces = layout(ms, view)
            assert closed_orientation(verts, faces) == 1, (kind, view)
    v, f = _octahedron()
    flat = MeshSet("x", "flat", {"lh": v, "rh": v}, {"lh": f, "rh": f}, {})
    assert surface_orientation(flat) == 0
    mixed = MeshSet("x", "inflated", {"lh": v, "rh": v}, {"lh": f, "rh": f[:, ::-1]}, {})
    assert surface_orientation(mixed) == 0
