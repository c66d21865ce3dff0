"""Dataset readers on tiny synthetic files in each exact layout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_factortopy.data.datasets import (
    DatasetError,
    ImageDecodeError,
    detect_kind,
    load_dataset,
    write_folder,
)

FS = 163842


def _png(path, value, size=(6, 8)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


# ------------------------------------------------------------------ Algonauts


def _algonauts(root, n=4):
    rng = np.random.default_rng(0)
    ids = [13, 2950, 7, 72999][:n]
    for row, nsd in enumerate(ids):
        name = f"train-{row + 1:04d}_nsd-{nsd:05d}.png"
        _png(root / "training_split" / "training_images" / name, 10 * row)
    fm = root / "training_split" / "training_fmri"
    fm.mkdir(parents=True)
    roi = root / "roi_masks"
    roi.mkdir()
    cols = {"lh": [0, 5, 9, 100], "rh": [1, 2, 40000]}
    data = {}
    for hemi, vs in cols.items():
        mask = np.zeros(FS, np.int64)
        mask[vs] = 1
        np.save(roi / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        data[hemi] = rng.standard_normal((n, len(vs))).astype(np.float32)
        np.save(fm / f"{hemi}_training_fmri.npy", data[hemi])
    # prf in challenge space, floc-places in fsaverage space
    np.save(roi / "lh.prf-visualrois_challenge_space.npy", np.array([1, 2, 7, 0]))
    np.save(roi / "rh.prf-visualrois_challenge_space.npy", np.array([3, 0, 0]))
    for hemi, lab in (("lh", {9: 1, 100: 3}), ("rh", {40000: 3})):
        full = np.zeros(FS, np.int64)
        for v, k in lab.items():
            full[v] = k
        np.save(roi / f"{hemi}.floc-places_fsaverage_space.npy", full)
    prf = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
    np.save(roi / "mapping_prf-visualrois.npy", dict(enumerate(prf)))
    np.save(roi / "mapping_floc-places.npy", {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"})
    return data


def test_algonauts_reads_exact_layout(tmp_path):
    root = tmp_path / "subj01"
    data = _algonauts(root)
    assert detect_kind(root) == "algonauts" and detect_kind(tmp_path) == "algonauts"
    ds = load_dataset(tmp_path, subject=1)
    assert ds.kind == "algonauts" and ds.mesh == "fsaverage"
    assert ds.image_ids.tolist() == ["nsd-00013", "nsd-02950", "nsd-00007", "nsd-72999"]
    np.testing.assert_array_equal(ds.responses, np.concatenate([data["lh"], data["rh"]], 1))
    assert ds.vertex_ids.tolist() == [0, 5, 9, 100, 1, 2, 40000] and ds.n_lh == 4
    # paper groups: V1 (V1v, V1d), V2, V4 (hV4), OPA (floc-places 1); prf wins over floc
    assert ds.roi_names == ["V1", "V2", "V4"]
    assert ds.roi.tolist() == [1, 1, 3, 0, 2, 0, 0]
    fam, names = ds.roi_families["floc-places"]
    assert names == ["OPA", "PPA", "RSC"] and fam.tolist() == [0, 0, 1, 3, 0, 0, 3]
    imgs = ds.load_images([1, 3])
    assert imgs[0].shape == (6, 8, 3) and imgs[0].dtype == np.uint8 and imgs[1][0, 0, 0] == 30
    general = load_dataset(root, nsdgeneral_only=True)
    assert general.vertex_ids.tolist() == [0, 5, 9, 1, 2] and general.n_lh == 3
    np.testing.assert_array_equal(general.responses[:, 3:], data["rh"][:, :2])
    # kept in the files (a run under a memory limit): the same numbers, read by rows
    lazy = load_dataset(root, nsdgeneral_only=True, in_memory=False)
    assert type(lazy.responses).__name__ == "ResponseRows" and lazy.responses.shape == (4, 5)
    np.testing.assert_array_equal(np.asarray(lazy.responses), general.responses)
    np.testing.assert_array_equal(lazy.responses[np.array([3, 1])], general.responses[[3, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("fortran", [False, True])
def test_copy_rows_into_matches_the_array_in_chunks(tmp_path, dtype, fortran):
    """A hemisphere's responses are copied into their columns of the whole array by
    plain reads, a few rows at a time (chunks of 3 rows of 5 here, the last short);
    the numbers are those numpy's own copy gives, for any dtype and memory order."""
    from napari_factortopy.data.datasets._base import copy_rows_into, load_npy

    rng = np.random.default_rng(3)
    a = rng.standard_normal((11, 5)).astype(dtype)
    np.save(tmp_path / "h.npy", np.asfortranarray(a) if fortran else a)
    mapped = load_npy(tmp_path / "h.npy", "an array", "test", mmap=True)
    out = np.full((11, 9), -7.0, np.float32)
    copy_rows_into(out, slice(2, 7), mapped, chunk_bytes=3 * 5 * 4)  # as float32
    want = np.full((11, 9), -7.0, np.float32)
    want[:, 2:7] = a
    np.testing.assert_array_equal(out, want)


def test_algonauts_bad_input(tmp_path):
    root = tmp_path / "subj01"
    _algonauts(root)
    (root / "training_split" / "training_fmri" / "rh_training_fmri.npy").unlink()
    with pytest.raises(DatasetError, match=re.escape("rh_training_fmri.npy; it is missing")):
        load_dataset(root)
    np.save(root / "training_split" / "training_fmri" / "rh_training_fmri.npy",
            np.zeros((3, 3), np.float32))  # fmt: skip
    with pytest.raises(DatasetError, match=r"shape \(3, 3\); expected \(4, vertices\)"):
        load_dataset(root)
    np.save(root / "training_split" / "training_fmri" / "rh_training_fmri.npy",
            np.zeros((4, 5), np.float32))  # fmt: skip
    with pytest.raises(DatasetError, match=re.escape("5 columns but rh.all-vertices")):
        load_dataset(root)
    np.save(root / "roi_masks" / "rh.all-vertices_fsaverage_space.npy", np.ones(10242))
    with pytest.raises(DatasetError, match=r"expected \(163842,\)"):
        load_dataset(root)


# ------------------------------------------------------------------------ NSD


def _nsd(root, n_trials=6, seed=0):
    import h5py
    import nibabel as nib
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    design = root / "nsddata" / "experiments" / "nsd"
    design.mkdir(parents=True)
    subjectim = rng.permutation(20)[None, :].repeat(8, 0) + 1  # 1-based 73k ids
    subjectim = np.stack([rng.permutation(20) + 1 for _ in range(8)])[:, :10]
    # trials 0..5 (session 1) and 750..755 (session 2) show images 1..4 with repeats
    order = np.ones(1500, np.int64)
    order[:n_trials] = [1, 2, 3, 1, 2, 1]
    order[750 : 750 + n_trials] = [4, 1, 4, 2, 3, 3]
    savemat(design / "nsd_expdesign.mat", {"masterordering": order[None], "subjectim": subjectim})
    label = root / "nsddata" / "freesurfer" / "fsaverage" / "label"
    label.mkdir(parents=True)
    verts = {"lh": [3, 10], "rh": [0, 7, 8]}
    for hemi, vs in verts.items():
        m = np.zeros(FS, np.int32)
        m[vs] = 1
        m[500] = -1
        nib.save(
            nib.MGHImage(m.reshape(-1, 1, 1), np.eye(4)), str(label / f"{hemi}.nsdgeneral.mgz")
        )
        p = np.zeros(FS, np.int32)
        p[vs[0]] = 2
        nib.save(nib.MGHImage(p.reshape(-1, 1, 1), np.eye(4)),
                 str(label / f"{hemi}.prf-visualrois.mgz"))  # fmt: skip
        (label / "prf-visualrois.mgz.ctab").write_text("0 Unknown\n1 V1v\n2 V1d\n3 V2v\n")
    betas = (
        root / "nsddata_betas" / "ppdata" / "subj01" / "fsaverage" / "betas_fithrf_GLMdenoise_RR"
    )
    betas.mkdir(parents=True)
    raw = {}
    for s in (1, 2):
        for hemi, vs in verts.items():
            b = np.zeros((FS, 1, 1, n_trials), np.float32)
            b[vs, 0, 0, :] = rng.standard_normal((len(vs), n_trials)) * 3 + 5
            raw[s, hemi] = b[vs, 0, 0, :]
            nib.save(nib.MGHImage(b, np.eye(4)), str(betas / f"{hemi}.betas_session{s:02d}.mgh"))
    for hemi, vs in verts.items():
        snr = np.zeros((FS, 1, 1), np.float32)
        snr[vs] = 1.0
        nib.save(nib.MGHImage(snr, np.eye(4)), str(betas / f"{hemi}.ncsnr.mgh"))
    stim = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    brick = np.arange(25)[:, None, None, None] * np.ones((1, 5, 5, 3))
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = brick.astype(np.uint8)
    return subjectim, order, raw


def _z(x):
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def test_nsd_zscore_average_and_design(tmp_path):
    pytest.importorskip("h5py")
    subjectim, order, raw = _nsd(tmp_path)
    assert detect_kind(tmp_path) == "nsd"
    ds = load_dataset(tmp_path, subject=1)
    trials = np.r_[order[:6], order[750:756]]
    ids73k = subjectim[0, trials - 1] - 1
    uniq = np.unique(ids73k)
    assert ds.image_ids.tolist() == [f"nsd-{i:05d}" for i in uniq]
    z = np.concatenate(
        [np.concatenate([_z(raw[s, "lh"]), _z(raw[s, "rh"])], 0).T for s in (1, 2)], 0
    )
    expect = np.stack([z[ids73k == u].mean(0) for u in uniq])
    np.testing.assert_allclose(ds.responses, expect, atol=1e-5)
    assert ds.vertex_ids.tolist() == [3, 10, 0, 7, 8] and ds.n_lh == 2
    assert ds.roi_names == ["V1"] and ds.roi.tolist() == [1, 0, 1, 0, 0]
    counts = np.array([(ids73k == u).sum() for u in uniq])
    np.testing.assert_allclose(ds.noise_ceiling, 1 / (1 + np.mean(1 / counts)), rtol=1e-5)
    imgs = ds.load_images([2, 0])
    assert imgs[0][0, 0, 0] == uniq[2] and imgs[1][0, 0, 0] == uniq[0]

    single = load_dataset(tmp_path, subject=1, average=False, sessions=[1, 2])
    assert single.n_samples == 12 and single.n_images == len(uniq)
    np.testing.assert_allclose(single.responses, z, atol=1e-5)
    assert (single.image_ids[single.image_index] == [f"nsd-{i:05d}" for i in ids73k]).all()
    with pytest.raises(DatasetError, match=re.escape("betas_session03.mgh; it is missing")):
        load_dataset(tmp_path, "nsd", sessions=[3])


# --------------------------------------------------------------------- folder


def test_folder_roundtrip_repeats_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    imgs = {"a.png": np.full((4, 4, 3), 1, np.uint8), "sub/b.png": np.full((4, 4, 3), 2, np.uint8)}
    resp = rng.standard_normal((3, 4)).astype(np.float32)
    root = write_folder(
        tmp_path / "mine",
        imgs,
        resp,
        np.array([0, 641, 5, 6]),
        2,
        "fsaverage3",
        stimuli=["sub/b.png", "a.png", "sub/b.png"],
        roi=np.array([1, 0, 2, 2]),
        roi_names=["V1", "FFA"],
        noise_ceiling=np.full(4, 0.5),
    )
    assert detect_kind(root) == "folder"
    ds = load_dataset(root)
    assert ds.image_ids.tolist() == ["a.png", "sub/b.png"]
    assert ds.image_index.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(ds.responses, resp)
    assert ds.roi_names == ["V1", "FFA"] and ds.noise_ceiling.tolist() == [0.5] * 4
    assert ds.load_images([1])[0][0, 0, 0] == 2
    assert ds.hemispheres.tolist() == ["lh", "lh", "rh", "rh"]
    # kept in its file (a run under a memory limit): the same rows, read when asked for
    lazy = load_dataset(root, in_memory=False)
    assert type(lazy.responses).__name__ == "ResponseRows"
    np.testing.assert_array_equal(lazy.responses[np.array([2, 0])], resp[[2, 0]])
    np.testing.assert_array_equal(
        np.asarray(lazy.select_vertices([1, 3]).responses), resp[:, [1, 3]]
    )

    np.save(root / "vertex_ids.npy", np.array([0, 642, 5, 6]))
    with pytest.raises(DatasetError, match="lh vertex ids outside the mesh fsaverage3"):
        load_dataset(root)
    np.save(root / "vertex_ids.npy", np.array([0, 1, 5, 6]))
    (root / "stimuli.txt").unlink()
    with pytest.raises(
        DatasetError, match=re.escape("2 images in images/ but responses.npy has 3 rows")
    ):
        load_dataset(root)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["n_lh"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="must give 'n_lh'"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="cannot tell its kind"):
        detect_kind(tmp_path)


def test_undecodable_image_is_named(tmp_path):
    root = write_folder(tmp_path / "d", {"a.png": np.zeros((4, 4, 3), np.uint8)},
                        np.zeros((2, 1)), np.array([0]), 1, "fsaverage5",
                        stimuli=["a.png", "broken.png"])  # fmt: skip
    (root / "images" / "broken.png").write_bytes(b"not a png")
    ds = load_dataset(root)
    with pytest.raises(ImageDecodeError, match=re.escape("broken.png")) as err:
        ds.load_images([0, 1])
    assert err.value.index == 1


def _small_folder(tmp_path):
    return write_folder(tmp_path / "f", {"a.png": np.zeros((4, 4, 3), np.uint8),
                                         "b.png": np.ones((4, 4, 3), np.uint8)},
                        np.zeros((2, 3)), np.array([0, 1, 2]), 2, "fsaverage3",
                        roi=np.array([1, 0, 2]), roi_names=["V1", "V2"])  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[:-7]),
            "is truncated: its header declares a "
            "float32 array of shape (2, 3) (24 bytes) but only 17 bytes follow",
        ),
        (lambda p: np.save(p, np.array([{"x": 1}, None], dtype=object)), "holds Python objects"),
        (lambda p: p.write_bytes(b"\x80\x04K\x01."), "is not a readable .npy file"),
        (lambda p: p.write_bytes(b""), "is not a readable .npy file"),
    ],
)
def test_broken_npy_files_are_named(tmp_path, damage, fragment):
    root = _small_folder(tmp_path)
    target = root / "responses.npy"
    damage(target)
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert str(target) in msg and fragment in msg, msg
    assert "mmap length" not in msg and "allow_pickle" not in msg


def test_roi_label_range_names_the_file(tmp_path):
    root = _small_folder(tmp_path)
    np.save(root / "roi.npy", np.array([1, -1, 3]))
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert f"{root / 'roi.npy'} holds labels -1..3; expected 0..2" in msg
    assert str(root / "dataset.json") in msg
    np.save(root / "vertex_ids.npy", np.array([0.0, 1.0, 2.0]))
    with pytest.raises(DatasetError, match=r"vertex_ids\.npy must be an int array"):
        load_dataset(root)
