"""factortopy import-official: the paper's release → .ftopy, checked against a transcription.

The reference (tests/app/_release.py) is written from the issue's description of the
release, not from our model: random weights, saved as a bare state dict and as a
Lightning checkpoint, imported on a synthetic 2 × 163,842 fsaverage sphere (random
points on a radius-100 sphere: we cannot download fsaverage here), compared on random
native-grid tokens. Bad files exit 2 with one line and leave no output.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

sys.path.insert(0, str(Path(__file__).parent))
from _release import (  # noqa: E402
    ReleaseFactorTopy,
    downsample,
    randomise,
    release_coords,
)

from napari_factortopy.app.cli import main  # noqa: E402
from napari_factortopy.core.fitted_model import FittedModel  # noqa: E402

N_HEMI = 163842
V = 3000
TOL = 1e-4  # of the reference's range


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A synthetic fsaverage sphere, random release weights saved both ways, vertices."""
    root = tmp_path_factory.mktemp("release")
    rng = np.random.default_rng(0)
    spheres = {}
    (root / "fsaverage" / "surf").mkdir(parents=True)
    for hemi in ("lh", "rh"):
        p = rng.normal(size=(N_HEMI, 3))
        p = (100 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
        spheres[hemi] = p
        nib.freesurfer.write_geometry(
            str(root / "fsaverage" / "surf" / f"{hemi}.sphere"), p, np.array([[0, 1, 2]])
        )
    joint = np.sort(rng.choice(2 * N_HEMI, V, replace=False)).astype(np.int64)
    np.save(root / "vertices.npy", joint)
    module = randomise(ReleaseFactorTopy(V)).eval()
    sd = module.state_dict()
    torch.save(sd, root / "bare.pth")
    coords = torch.from_numpy(release_coords(spheres["lh"], spheres["rh"], joint))
    lightning = {
        "epoch": 7,
        "global_step": 7000,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {
            "coords": coords.clone(),
            "backbone.vision_model.conv1.weight": torch.zeros(4, 3, 2, 2),
            **{f"model.{k}": v for k, v in sd.items()},
        },
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(lightning, root / "trained.ckpt")
    return {"root": root, "module": module, "coords": coords, "joint": joint, "sd": sd}


def _import(release, ckpt: str, out: Path, *extra: str) -> int:
    root = release["root"]
    argv = ["import-official", str(root / ckpt), "--out", str(out)]
    argv += ["--vertices", str(root / "vertices.npy"), "--subjects-dir", str(root), *extra]
    return main(argv)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (b.max() - b.min()))


def _tokens(seed: int, grid=(14, 14), b: int = 3):
    g = torch.Generator().manual_seed(seed)
    local = {str(i): torch.randn(b, 768, *grid, generator=g) for i in range(12)}
    glob = {str(i): torch.randn(b, 768, generator=g) for i in range(12)}
    return local, glob


def differences(model: FittedModel, release) -> dict[str, float]:
    """Our imported model against the transcription: selectors, the release's prediction
    path (native 14×14 tokens → plain bilinear 8×8), and the module alone at 14×14."""
    from napari_factortopy.data.backbones import resize_tokens

    ref_mod, coords = release["module"], release["coords"]
    with torch.no_grad():
        space, layer, scale = ref_mod.selectors(coords)
        local, glob = _tokens(1)
        ref8 = ref_mod(downsample(local), glob, coords).numpy()
        ours8 = model.to_module()(
            resize_tokens(list(local.values()), (8, 8), "bilinear"), list(glob.values())
        ).numpy()
        import dataclasses

        native = dataclasses.replace(model, config={**model.config, "grid": [14, 14]})
        ref14 = ref_mod(dict(local), glob, coords).numpy()
        ours14 = native.to_module()(list(local.values()), list(glob.values())).numpy()
    return {
        "space": _rel(model.space, space.numpy()),
        "layer": _rel(model.layer, layer.numpy()),
        "scale": _rel(model.scale, scale.numpy()[:, 0]),
        "prediction_8x8": _rel(ours8, ref8),
        "prediction_14x14": _rel(ours14, ref14),
    }


@pytest.mark.parametrize("ckpt", ["bare.pth", "trained.ckpt"])
def test_import_matches_the_release(release, ckpt, tmp_path, capsys):
    out = tmp_path / "paper.ftopy"
    assert _import(release, ckpt, out) == 0
    model = FittedModel.load(out)
    assert model.n_vertices == V and model.mesh == "fsaverage"
    assert model.n_lh == int((release["joint"] < N_HEMI).sum())
    np.testing.assert_array_equal(
        model.vertex_ids,
        np.where(release["joint"] < N_HEMI, release["joint"], release["joint"] - N_HEMI),
    )
    assert model.config["grid"] == [8, 8] and model.config["widths"] == [768] * 12
    assert model.backbone["name"] == "open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper"
    d = differences(model, release)
    print(f"{ckpt}: " + ", ".join(f"{k} {v:.2e}" for k, v in d.items()))
    assert max(d.values()) <= TOL, d
    # the selectors vary (the comparison is not trivially between constants)
    assert np.ptp(model.space) > 1.0 and np.ptp(model.layer) > 0.2


def test_the_encoding_permutation_matters(release):
    """Negative control: without reordering the encoding's columns, the selectors are
    far from the release's (so the comparison above can fail)."""
    from napari_factortopy.core import official

    state = dict(release["sd"])
    state = {k: v.numpy() for k, v in state.items()}
    ours = official.release_to_state(state, release["coords"].numpy())
    ident = {**ours}
    for name in ("space", "layer", "scale"):
        ident[f"{name}_mlp.0.weight"] = state[f"{name}_selector_mlp.1.weight"]
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy

    module = FactorTopy(ours["coords"], FactorTopyConfig(widths=[768] * 12))
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in ident.items()}
    module.load_state_dict({**sd, "encoding": module.encoding})
    with torch.no_grad():
        wrong = module.selectors().numpy()["space"]
        ref = release["module"].selectors(release["coords"])[0].numpy()
    assert _rel(wrong, ref) > 1e-2


def test_permutation_is_the_layout_change():
    """ours[a, s, k] = release[a, k, s], checked on labelled columns."""
    from napari_factortopy.core.official import encoding_permutation

    f = 4
    rel = [(a, k, s) for a in range(3) for k in range(f) for s in range(2)]
    ours = [(a, k, s) for a in range(3) for s in range(2) for k in range(f)]
    perm = encoding_permutation(f)
    assert [rel[p] for p in perm] == ours


def test_info_says_where_it_came_from(release, tmp_path, capsys):
    out = tmp_path / "paper.ftopy"
    assert _import(release, "bare.pth", out) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported" in text and "huzeyann/BrainDecodesDeepNets" in text
    assert "bare.pth" in text and "CC-BY-NC" in text and str(release["root"]) in text


def test_lightning_coords_catch_wrong_vertex_order(release, tmp_path, capsys):
    joint = release["joint"].copy()
    lh = joint[joint < N_HEMI]
    np.save(tmp_path / "v.npy", np.concatenate([lh[::-1], joint[len(lh) :]]))
    out = tmp_path / "m.ftopy"
    argv = ["import-official", str(release["root"] / "trained.ckpt"), "--out", str(out)]
    argv += ["--vertices", str(tmp_path / "v.npy"), "--subjects-dir", str(release["root"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained.ckpt" in err[0] and "row order" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------ bad files


class _RunsCode:
    """Unpickling this would create a file (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad(kind: str, release, folder: Path) -> Path:
    sd = {k: v.clone() for k, v in release["sd"].items()}
    path = folder / "bad.pth"
    if kind == "other model":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(10)}, path)
    elif kind == "missing key":
        del sd["layer_selector_mlp.3.bias"]
        torch.save(sd, path)
    elif kind == "extra key":
        sd["space_selector_mlp.7.weight"] = torch.zeros(2, 2)
        torch.save(sd, path)
    elif kind == "wrong shape":
        sd["global_token_bottleneck.3.weight"] = torch.zeros(128, 512)
        torch.save(sd, path)
    elif kind == "vertex count":
        sd["weight"] = torch.zeros(V + 5, 128)
        sd["bias"] = torch.zeros(V + 5)
        torch.save(sd, path)
    elif kind == "non-finite":
        sd["scale_selector_mlp.1.bias"][0] = float("nan")
        torch.save(sd, path)
    elif kind == "integer tensor":
        sd["layer_selector_mlp.5.weight"] = torch.zeros(12, 128, dtype=torch.int64)
        torch.save(sd, path)
    elif kind == "code in zip":
        torch.save({**sd, "hook": _RunsCode(folder / "ran")}, path)
    elif kind == "code in legacy pickle":
        with open(path, "wb") as fh:
            pickle.dump(_RunsCode(folder / "ran"), fh)
    elif kind == "not a checkpoint":
        path.write_text("just some text\n")
    elif kind == "foreign lightning":
        torch.save(
            {"state_dict": {"model.weight": sd["weight"], "net.fc.weight": sd["bias"]}}, path
        )
    elif kind == "not a dict":
        torch.save([sd["weight"]], path)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return path


BAD = [
    "other model",
    "missing key",
    "extra key",
    "wrong shape",
    "vertex count",
    "non-finite",
    "integer tensor",
    "code in zip",
    "code in legacy pickle",
    "not a checkpoint",
    "foreign lightning",
    "not a dict",
]


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_exit_2_with_one_line(kind, release, tmp_path, capsys):
    bad = _bad(kind, release, tmp_path)
    out = tmp_path / "out.ftopy"
    argv = ["import-official", str(bad), "--out", str(out), "--vertices"]
    argv += [str(release["root"] / "vertices.npy"), "--subjects-dir", str(release["root"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert str(bad) in line and "expected" in line and "found" in line, line
    assert not out.exists() and not list(tmp_path.glob("out*"))
    assert not (tmp_path / "ran").exists()  # no code ran


def test_missing_checkpoint_and_missing_sphere(release, tmp_path, capsys):
    out = tmp_path / "m.ftopy"
    assert main(["import-official", str(tmp_path / "nope.pth"), "--out", str(out),
                 "--vertices", str(release["root"] / "vertices.npy")]) == 2  # fmt: skip
    assert "nope.pth" in capsys.readouterr().err
    empty = tmp_path / "subjects"
    empty.mkdir()
    argv = ["import-official", str(release["root"] / "bare.pth"), "--out", str(out)]
    argv += ["--vertices", str(release["root"] / "vertices.npy"), "--subjects-dir", str(empty)]
    code = main(argv)
    err = capsys.readouterr().err
    if code == 2:  # no fsaverage anywhere on this machine: the message says where it looked
        assert "sphere" in err and str(empty) in err
    assert not out.exists() or code == 0


# --------------------------------------------------------- Algonauts subject


def _algonauts_masks(root: Path, rng) -> dict:
    """An Algonauts-style roi_masks folder: challenge masks, floc-places with RSC, V1."""
    masks = root / "subj01" / "roi_masks"
    masks.mkdir(parents=True)
    out = {}
    for hemi in ("lh", "rh"):
        mask = np.zeros(N_HEMI, np.float32)
        idx = np.sort(rng.choice(N_HEMI, 900, replace=False))
        mask[idx] = 1
        np.save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        places = rng.choice([0, 1, 2, 3], size=idx.size, p=[0.7, 0.1, 0.1, 0.1])
        np.save(masks / f"{hemi}.floc-places_challenge_space.npy", places.astype(np.int32))
        vis = rng.choice([0, 1, 2], size=idx.size)
        np.save(masks / f"{hemi}.prf-visualrois_challenge_space.npy", vis.astype(np.int32))
        out[hemi] = (idx, places, vis)
    np.save(masks / "mapping_floc-places.npy", {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"})
    np.save(masks / "mapping_prf-visualrois.npy", {0: "Unknown", 1: "V1v", 2: "V1d"})
    return out


def test_algonauts_subject_gives_vertices_and_rois(release, tmp_path, capsys):
    from napari_factortopy.data.official import algonauts_release_vertices

    rng = np.random.default_rng(3)
    truth = _algonauts_masks(tmp_path, rng)
    joint, v1 = [], []
    for off, hemi in ((0, "lh"), (N_HEMI, "rh")):
        idx, places, vis = truth[hemi]
        keep = places != 3
        joint.append(off + idx[keep])
        v1.append(vis[keep] > 0)
    joint = np.concatenate(joint)
    rv = algonauts_release_vertices(tmp_path / "subj01")
    np.testing.assert_array_equal(rv.joint, joint)
    assert rv.n_lh == int((truth["lh"][1] != 3).sum())
    assert "RSC" in rv.source and str(len(joint)) in rv.source
    names = rv.roi_names
    assert "V1" in names and np.array_equal(rv.roi == names.index("V1") + 1, np.concatenate(v1))

    # a checkpoint with that many vertices imports with ROI labels; another count exits 2
    module = randomise(ReleaseFactorTopy(len(joint)), seed=5)
    torch.save(module.state_dict(), tmp_path / "s1.pth")
    out = tmp_path / "s1.ftopy"
    argv = ["import-official", str(tmp_path / "s1.pth"), "--out", str(out)]
    argv += [
        "--algonauts-subject",
        str(tmp_path / "subj01"),
        "--subjects-dir",
        str(release["root"]),
    ]
    assert main(argv) == 0
    m = FittedModel.load(out)
    assert m.roi_names == names and np.array_equal(m.roi, rv.roi)
    capsys.readouterr()
    argv[1] = str(release["root"] / "bare.pth")
    argv[3] = str(tmp_path / "other.ftopy")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"expected {len(joint)} rows" in err[0] and f"found {V}" in err[0]
    assert not (tmp_path / "other.ftopy").exists()


def test_vertex_file_errors(release, tmp_path, capsys):
    out = tmp_path / "m.ftopy"
    for arr, word in (
        (np.array([5, 3, N_HEMI + 1, 2]), "interleaved"),
        (np.array([1, 1, 2]), "repeated"),
        (np.array([0, 2 * N_HEMI]), "0..327683"),
        (np.zeros(3, np.float32), "integer"),
    ):
        np.save(tmp_path / "v.npy", arr)
        argv = ["import-official", str(release["root"] / "bare.pth"), "--out", str(out)]
        argv += ["--vertices", str(tmp_path / "v.npy"), "--subjects-dir", str(release["root"])]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "v.npy" in err[0] and word in err[0], err
        assert not out.exists()
