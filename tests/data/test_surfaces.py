"""Surfaces, flat patches, coarser meshes and ROI label readers on tiny files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets as nilearn_datasets
from nilearn import surface as nilearn_surface

from napari_factortopy.data.surfaces import (
    SurfaceError,
    fsaverage5_mesh,
    fsaverage5_morph,
    load_mesh,
    read_algonauts_mapping,
    read_annot,
    read_ctab,
    read_label,
    read_mgz_labels,
    read_patch,
    read_surface,
    to_coarser,
)

COORDS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [2, 0, 0]], np.float32)
FACES = np.array([[0, 1, 2], [1, 3, 2], [1, 4, 3]], np.int64)


def _edges(faces):
    """Undirected edges of a triangle mesh with the number of faces on each."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


@pytest.mark.parametrize("hemi", ["lh", "rh"])
def test_fsaverage5_offline(hemi):
    side = {"lh": "left", "rh": "right"}[hemi]
    files = nilearn_datasets.fetch_surf_fsaverage("fsaverage5")
    sphere = fsaverage5_mesh("sphere", hemi)
    # nilearn's own reader of the same package file
    want = nilearn_surface.load_surf_mesh(files[f"sphere_{side}"])
    np.testing.assert_allclose(sphere.vertices, want.coordinates, rtol=1e-6)
    np.testing.assert_array_equal(sphere.faces, want.faces)
    # FreeSurfer's registered sphere: radius 100, a closed icosphere (V − E + F = 2,
    # F = 2V − 4, every edge on two faces)
    np.testing.assert_allclose(np.linalg.norm(sphere.vertices, axis=1), 100.0, rtol=1e-3)
    edges, counts = _edges(sphere.faces)
    assert sphere.faces.shape == (20480, 3) and np.all(counts == 2)
    assert sphere.n_vertices - len(edges) + len(sphere.faces) == 2
    # the hemispheres are not swapped: the left pial surface lies at x < 0
    pial = fsaverage5_mesh("pial", hemi)
    sign = -1 if hemi == "lh" else 1
    assert np.mean(sign * pial.vertices[:, 0] > 0) > 0.99
    np.testing.assert_array_equal(pial.faces, sphere.faces)
    for kind in ("curv", "sulc"):
        want = nilearn_surface.load_surf_data(files[f"{kind}_{side}"])
        np.testing.assert_allclose(fsaverage5_morph(kind, hemi), want, rtol=1e-6)
    inflated = load_mesh("fsaverage5", "inflated", hemi)
    want = nilearn_surface.load_surf_mesh(files[f"infl_{side}"])
    np.testing.assert_allclose(inflated.vertices, want.coordinates, rtol=1e-6)


def test_read_freesurfer_and_gifti(tmp_path):
    fs = tmp_path / "lh.sphere"
    nib.freesurfer.write_geometry(str(fs), COORDS, FACES)
    m = read_surface(fs)
    np.testing.assert_array_equal(m.vertices, COORDS)
    np.testing.assert_array_equal(m.faces, FACES)
    gii = nib.gifti.GiftiImage(
        darrays=[
            nib.gifti.GiftiDataArray(COORDS, intent="NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(FACES.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE"),
        ]
    )
    nib.save(gii, str(tmp_path / "rh.sphere.gii"))
    np.testing.assert_array_equal(read_surface(tmp_path / "rh.sphere.gii").faces, FACES)
    with pytest.raises(SurfaceError, match="does not exist"):
        read_surface(tmp_path / "nope.gii")
    (tmp_path / "junk.gii").write_text("not a mesh")
    with pytest.raises(SurfaceError, match=r"junk\.gii"):
        read_surface(tmp_path / "junk.gii")


def test_load_mesh_from_subjects_dir(tmp_path, monkeypatch):
    surf = tmp_path / "fsaverage6" / "surf"
    surf.mkdir(parents=True)
    nib.freesurfer.write_geometry(str(surf / "lh.sphere"), COORDS, FACES)
    monkeypatch.setenv("SUBJECTS_DIR", str(tmp_path))
    # found, but a tiny mesh is not fsaverage6: the size check speaks
    with pytest.raises(SurfaceError, match="40962"):
        load_mesh("fsaverage6", "sphere", "lh")
    # a user folder has no size rule
    mine = load_mesh(str(tmp_path / "fsaverage6"), "sphere", "lh")
    np.testing.assert_array_equal(mine.vertices, COORDS)
    np.testing.assert_array_equal(mine.faces, FACES)
    monkeypatch.setenv("SUBJECTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(SurfaceError, match="not found; looked in"):
        load_mesh("fsaverage6", "pial", "rh")


def test_fsaverage7_morph_from_freesurfer_fsaverage_folder(tmp_path):
    """FreeSurfer ships fsaverage7 as ``subjects/fsaverage``: its curvature is found
    there as its meshes are (it was not: fsaverage7 models showed no sulci)."""
    from napari_factortopy.data.surfaces.meshes import load_morph

    surf = tmp_path / "fsaverage" / "surf"
    surf.mkdir(parents=True)
    curv = np.linspace(-1, 1, 163842).astype(np.float32)
    nib.freesurfer.write_morph_data(str(surf / "rh.curv"), curv)
    got = load_morph("fsaverage7", "curv", "rh", subjects_dir=tmp_path)
    np.testing.assert_array_equal(got, curv)
    with pytest.raises(SurfaceError, match=r"fsaverage/surf/rh\.sulc"):
        load_morph("fsaverage7", "sulc", "rh", subjects_dir=tmp_path)


def _write_patch(path, records):
    buf = np.array([-1, len(records)], ">i4").tobytes()
    rec = np.dtype([("index", ">i4"), ("x", ">f4"), ("y", ">f4"), ("z", ">f4")])
    buf += np.array(records, rec).tobytes()
    path.write_bytes(buf)


def test_read_flat_patch(tmp_path):
    p = tmp_path / "lh.full.flat.patch.3d"
    # vertices 0, 1, 2 (1 on the border) and 3; vertex 4 cut away
    _write_patch(p, [(1, 0.0, 0.0, 0.0), (-2, 1.0, 0.0, 0.0), (3, 0.0, 1.0, 0.0),
                     (4, 1.0, 1.0, 0.0)])  # fmt: skip
    from napari_factortopy.data.surfaces import Mesh

    fp = read_patch(p, Mesh(COORDS, FACES))
    np.testing.assert_array_equal(fp.vertex_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(fp.border, [False, True, False, False])
    np.testing.assert_array_equal(fp.faces, [[0, 1, 2], [1, 3, 2]])  # face with 4 dropped
    full, mask = fp.full_mesh(5)
    assert mask.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(full.vertices[:4], fp.coords)
    p.write_bytes(np.array([5, 1], ">i4").tobytes())
    with pytest.raises(SurfaceError, match="header int32 -1"):
        read_patch(p)
    p.write_bytes(np.array([-1, 3], ">i4").tobytes() + b"\0" * 16)
    with pytest.raises(SurfaceError, match="3 vertices"):
        read_patch(p)


def test_to_coarser_keeps_first_vertices():
    vids = np.array([5, 20000, 10241, 10242, 3], np.int64)  # 3 lh, 2 rh
    keep, new, n_lh = to_coarser(vids, 3, "fsaverage5")
    assert keep.tolist() == [0, 2, 4] and new.tolist() == [5, 10241, 3] and n_lh == 2


def test_roi_label_readers(tmp_path):
    labels = np.array([0, 1, 2, -1, 2], np.int32)
    img = nib.MGHImage(labels.reshape(-1, 1, 1), np.eye(4))
    nib.save(img, str(tmp_path / "lh.prf-visualrois.mgz"))
    (tmp_path / "lh.prf-visualrois.mgz.ctab").write_text(
        "0 Unknown\n1 V1v 255 0 0 0\n# comment\n2 V1d\n"
    )
    lab, names = read_mgz_labels(tmp_path / "lh.prf-visualrois.mgz")
    assert lab.tolist() == [0, 1, 2, 0, 2]
    assert names == {0: "Unknown", 1: "V1v", 2: "V1d"}
    assert read_ctab(tmp_path / "lh.prf-visualrois.mgz.ctab")[2] == "V1d"
    (tmp_path / "bad.ctab").write_text("V1 1\n")
    with pytest.raises(SurfaceError, match="line 1"):
        read_ctab(tmp_path / "bad.ctab")

    (tmp_path / "lh.V1.label").write_text(
        "#!ascii label\n2\n3 0.0 0.0 0.0 1.0\n1 1.0 0.0 0.0 1.0\n"
    )
    assert read_label(tmp_path / "lh.V1.label").tolist() == [3, 1]
    with pytest.raises(SurfaceError, match="outside the mesh"):
        read_label(tmp_path / "lh.V1.label", n_vertices=3)

    ctab = np.array([[25, 5, 25, 0, 0], [200, 0, 0, 0, 0], [0, 200, 0, 0, 0]], np.int32)
    nib.freesurfer.write_annot(
        str(tmp_path / "lh.test.annot"),
        np.array([0, 1, 2, 1, -1]),
        ctab,
        [b"unknown", b"V1", b"V2"],
        fill_ctab=True,
    )
    lab, names = read_annot(tmp_path / "lh.test.annot")
    assert names == ["V1", "V2"] and lab.tolist() == [0, 1, 2, 1, 0]

    np.save(tmp_path / "mapping_floc-places.npy", {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"})
    assert read_algonauts_mapping(tmp_path / "mapping_floc-places.npy")[3] == "RSC"
    np.save(tmp_path / "mapping_bad.npy", np.arange(3))
    with pytest.raises(SurfaceError, match="pickled dict"):
        read_algonauts_mapping(tmp_path / "mapping_bad.npy")


def test_sphere_coordinates_of_modelled_vertices():
    from napari_factortopy.data.surfaces import SurfaceError, fsaverage5_mesh, sphere_coordinates

    ids = np.array([0, 7, 10241, 3, 5])
    out = sphere_coordinates("fsaverage5", ids, 3)
    np.testing.assert_array_equal(out[:3], fsaverage5_mesh("sphere", "lh").vertices[[0, 7, 10241]])
    np.testing.assert_array_equal(out[3:], fsaverage5_mesh("sphere", "rh").vertices[[3, 5]])
    with pytest.raises(SurfaceError, match=r"my.npz: rh vertex ids span \[3, 10242\]"):
        sphere_coordinates("fsaverage5", np.array([0, 3, 10242]), 1, source="my.npz")


def test_nilearn_data_folders_are_read_without_importing_nilearn_datasets(tmp_path):
    """A mesh in nilearn's data folders ($NILEARN_SHARED_DATA, $NILEARN_DATA, in that
    order, as nilearn.datasets.utils.get_data_dirs lists them) is found, and looking
    there (napari asks for a flat patch whenever a model opens) does not import
    nilearn.datasets (2 s)."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(642, 3)).astype(np.float32)  # fsaverage3's size
    faces = rng.integers(0, 642, size=(1280, 3)).astype(np.int32)
    first, second = tmp_path / "shared", tmp_path / "mine"
    for root, shift in ((first, 0.0), (second, 5.0)):
        folder = root / "fsaverage3"
        folder.mkdir(parents=True)
        arrays = [
            nib.gifti.GiftiDataArray(coords + shift, intent="NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(faces, intent="NIFTI_INTENT_TRIANGLE"),
        ]
        nib.save(nib.gifti.GiftiImage(darrays=arrays), folder / "pial_left.gii")
    code = (
        "import sys, numpy as np\n"
        "from napari_factortopy.data.surfaces import load_mesh\n"
        "m = load_mesh('fsaverage3', 'pial', 'lh')\n"
        "print(float(np.asarray(m.vertices)[0, 0]))\n"
        "print('nilearn.datasets' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "NILEARN_SHARED_DATA": str(first),
        "NILEARN_DATA": str(second),
        "SUBJECTS_DIR": str(tmp_path / "none"),
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) == pytest.approx(float(coords[0, 0]), abs=1e-5)  # the shared one
    assert out[1] == "False"
    env.pop("NILEARN_SHARED_DATA")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) == pytest.approx(float(coords[0, 0]) + 5.0, abs=1e-5)
