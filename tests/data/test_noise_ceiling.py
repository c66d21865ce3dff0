"""Reading a user's noise-ceiling file: every layout, both units, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.data.noise_ceiling import read_noise_ceiling

M = 10242  # fsaverage5 vertices per hemisphere
IDS = np.array([3, 10, 500, 7, 10241])  # 3 left, 2 right
N_LH = 3


def test_one_value_per_vertex_in_percent(tmp_path):
    np.save(tmp_path / "nc.npy", np.array([50.0, 20.0, np.nan, 100.0, 0.0]))
    nc, note = read_noise_ceiling(tmp_path / "nc.npy", IDS, N_LH, "fsaverage5")
    np.testing.assert_allclose(nc, [0.5, 0.2, np.nan, 1.0, 0.0], equal_nan=True)
    assert "percent" in note and "1 vertices without a ceiling" in note


def test_whole_mesh_layouts_are_read_at_the_vertex_ids(tmp_path):
    full = np.random.default_rng(0).uniform(0, 80, size=(2, M))
    want = np.r_[full[0][IDS[:N_LH]], full[1][IDS[N_LH:]]] / 100
    np.save(tmp_path / "a.npy", full)
    np.save(tmp_path / "b.npy", full.reshape(-1))
    np.savez(tmp_path / "c.npz", lh=full[0], rh=full[1])
    for name in ("a.npy", "b.npy", "c.npz"):
        nc, note = read_noise_ceiling(tmp_path / name, IDS, N_LH, "fsaverage5")
        np.testing.assert_allclose(nc, want, rtol=1e-6, err_msg=name)
        assert "fsaverage5" in note


def test_fractions_are_recognised_and_said(tmp_path):
    np.save(tmp_path / "f.npy", np.full(5, 0.4))
    nc, note = read_noise_ceiling(tmp_path / "f.npy", IDS, N_LH, "fsaverage5")
    np.testing.assert_allclose(nc, 0.4)
    assert "fractions" in note


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(7), r"shape \(7,\) fits neither the 5 modelled vertices"),
        (np.full(5, 120.0), "0–100"),
        (np.full(5, -1.0), "0–100"),
    ],
)
def test_bad_files_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message) as info:
        read_noise_ceiling(tmp_path / "bad.npy", IDS, N_LH, "fsaverage5")
    assert "bad.npy" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such noise-ceiling file"):
        read_noise_ceiling(tmp_path / "none.npy", IDS, N_LH, "fsaverage5")
