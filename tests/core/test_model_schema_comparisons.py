"""The model-file schema for the comparisons (#11): ablation models round-trip and run;
``"baseline"`` files load (display-only); malformed ones are refused naming the field."""

import numpy as np
import pytest
import torch

from napari_factortopy.core.ablations import ABLATIONS, ablation_config
from napari_factortopy.core.config import FactorTopyConfig
from napari_factortopy.core.fitted_model import KIND_BASELINE, FittedModel
from napari_factortopy.core.model import FactorTopy
from napari_factortopy.core.modelfile import ModelFileError, load_ftopy, save_ftopy

CFG = FactorTopyConfig(widths=(3, 5), grid=(2, 3), bottleneck=4, hidden=8)
V = 10


def _subject():
    return {"vertex_ids": np.arange(V), "n_lh": V // 2, "mesh": "fsaverage5"}


def _tokens():
    g = torch.Generator().manual_seed(1)
    return (
        [torch.randn(2, c, *CFG.grid, generator=g) for c in CFG.widths],
        [torch.randn(2, c, generator=g) for c in CFG.widths],
    )


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_model_file_round_trip(tmp_path, name):
    torch.manual_seed(0)
    coords = np.random.default_rng(0).normal(size=(V, 3))
    m = FactorTopy(coords, ablation_config(CFG, name))
    with torch.no_grad():
        for k, p in m.named_parameters():
            if k.endswith(("_free", ".4.weight")):
                p.normal_()
    path = FittedModel.from_module(m, **_subject()).save(tmp_path / f"{name}.ftopy")
    back = FittedModel.load(path)
    assert FactorTopyConfig.from_dict(back.config) == m.config
    loc, glo = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(back.to_module()(loc, glo), m(loc, glo))


def test_free_parameters_of_the_wrong_shape_are_refused(tmp_path):
    m = FactorTopy(
        np.random.default_rng(0).normal(size=(V, 3)), ablation_config(CFG, "no_topology")
    )
    path = FittedModel.from_module(m, **_subject()).save(tmp_path / "m.ftopy")
    tensors, meta = load_ftopy(path)
    tensors["state/layer_free"] = np.zeros((V, 7), np.float32)
    save_ftopy(tmp_path / "bad.ftopy", tensors, meta)
    with pytest.raises(ModelFileError, match="state/layer_free"):
        FittedModel.load(tmp_path / "bad.ftopy")
    meta["config"]["topology"] = "no"
    save_ftopy(tmp_path / "bad2.ftopy", load_ftopy(path)[0], meta)
    with pytest.raises(ModelFileError, match="topology"):
        FittedModel.load(tmp_path / "bad2.ftopy")


def test_baseline_file_loads_display_only(tmp_path):
    layer = np.eye(2, dtype=np.float32)[np.arange(V) % 2]
    fm = FittedModel(
        config=FactorTopyConfig(widths=(3, 5), grid=(2, 3), bottleneck=1, hidden=1).to_dict(),
        state={"coords": np.zeros((V, 3), np.float32), "beta": np.zeros((V, 1), np.float32)},
        space=np.zeros((V, 2), np.float32),
        layer=layer,
        scale=np.zeros(V, np.float32),
        scores={"r2_test": np.linspace(0, 1, V).astype(np.float32)},
        kind=KIND_BASELINE,
        extra={"baseline": {"method": "ridge"}},
        **_subject(),
    )
    back = FittedModel.load(fm.save(tmp_path / "ridge.ftopy"))
    assert back.kind == "baseline" and back.extra["baseline"]["method"] == "ridge"
    np.testing.assert_array_equal(back.layer.argmax(1), np.arange(V) % 2)
    with pytest.raises(ValueError, match="display-only"):
        back.to_module()
    tensors, meta = load_ftopy(tmp_path / "ridge.ftopy")
    meta["kind"] = "something-else"
    save_ftopy(tmp_path / "bad.ftopy", tensors, meta)
    with pytest.raises(ModelFileError, match="kind"):
        FittedModel.load(tmp_path / "bad.ftopy")
