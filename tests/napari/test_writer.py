"""Writer round trip: GIFTI and MGH files read back with nibabel hold the map's numbers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_factortopy._napari._layers import META_KEY, model_layers
from napari_factortopy._napari._writer import napari_write_map, write_map


@pytest.mark.parametrize("suffix", [".func.gii", ".mgz", ".mgh"])
def test_scalar_map_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    values = rng.normal(size=30)
    values[[2, 20]] = np.nan
    paths = write_map(tmp_path / f"score{suffix}", values, n_lh=12, map_name="score")
    assert [p.split("/")[-1] for p in paths] == [f"lh.score{suffix}", f"rh.score{suffix}"]
    for path, part in zip(paths, (values[:12], values[12:]), strict=True):
        img = nib.load(path)
        got = img.agg_data() if suffix == ".func.gii" else np.asarray(img.dataobj).ravel()
        np.testing.assert_array_equal(
            np.asarray(got, np.float64), part.astype(np.float32).astype(np.float64)
        )


def test_two_column_map_and_labels(tmp_path):
    space = np.random.default_rng(1).uniform(-1, 1, size=(10, 2))
    lh, rh = write_map(tmp_path / "space.func.gii", space, n_lh=4)
    got = np.stack(nib.load(rh).agg_data(), axis=1)
    np.testing.assert_allclose(got, space[4:].astype(np.float32))
    lh, _ = write_map(tmp_path / "space.mgh", space, n_lh=4)
    np.testing.assert_allclose(
        np.asarray(nib.load(lh).dataobj).reshape(4, 2), space[:4], rtol=1e-6
    )
    labels = np.array([0, 1, 2, 3, 1, 0, 2])
    lh, rh = write_map(tmp_path / "layer.label.gii", labels, 3, ["a", "b", "c"], "layer")
    img = nib.load(rh)
    np.testing.assert_array_equal(img.agg_data(), labels[3:])
    assert img.labeltable.get_labels_as_dict() == {0: "none", 1: "a", 2: "b", 3: "c"}
    with pytest.raises(ValueError, match=r"func\.gii"):
        write_map(tmp_path / "x.label.gii", space[:, 0], 4)


def test_napari_writer_saves_the_shown_map(tmp_path, model_path, tiny_model):
    ((data, kwargs, _),) = model_layers(model_path)
    meta = {"metadata": kwargs["metadata"], "name": kwargs["name"]}
    lh, _rh = napari_write_map(str(tmp_path / "m.label.gii"), data, meta)
    info = kwargs["metadata"][META_KEY]
    n_lh = info["n_lh_mesh"]
    got = nib.load(lh).agg_data()
    want = np.zeros(n_lh, np.int32)
    left = slice(0, tiny_model.n_lh)
    want[tiny_model.vertex_ids[left]] = tiny_model.layer[left].argmax(1) + 1
    np.testing.assert_array_equal(got, want)
    assert napari_write_map(str(tmp_path / "x.mgz"), data, {"metadata": {}}) == []
