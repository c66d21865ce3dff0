"""The paper's token convention (``open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper``) against
open_clip's own forward on a random-weight ViT-B-16 (built without pretrained weights,
nothing downloaded), and images → predictions end to end against the release's path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
nib = pytest.importorskip("nibabel")

sys.path.insert(0, str(Path(__file__).parent))
from _release import (  # noqa: E402
    ReleaseFactorTopy,
    downsample,
    randomise,
    release_coords,
    release_images,
    release_tokens,
)

N_HEMI = 163842


@pytest.fixture(scope="module")
def paper():
    from napari_factortopy.data.backbones import load_backbone

    torch.manual_seed(0)
    return load_backbone("paper", weights="random")


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, size=(180, 260, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8),
    ]


def test_preset_record_is_what_the_backbone_describes(paper):
    from napari_factortopy.data.backbones.open_clip_family import (
        PAPER_BACKBONE,
        paper_backbone_record,
    )

    built = paper.describe()
    built["source"] = {k: v for k, v in built["source"].items() if k != "weights"}
    assert built == paper_backbone_record()
    assert paper.name == PAPER_BACKBONE and paper.token_resize == "bilinear"
    assert paper.grid == (8, 8) and paper.global_token == "class" and paper.n_layers == 12


def test_preprocessing_is_the_releases(paper):
    ims = _images()
    ours = paper.preprocessing(ims).numpy()
    ref = release_images(ims).numpy()
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    assert np.abs(ours - ref).max() < 1e-5


def test_tokens_are_open_clips_block_outputs(paper):
    """Every block's raw output: equal to a step-by-step transcription of the release's
    get_tokens, to open_clip's forward_intermediates, and, through ln_post and proj, to
    open_clip's own forward (pooled features and output tokens)."""
    visual = paper.module
    x = release_images(_images(1))
    local, glob = paper(x)
    ref_local, ref_glob = release_tokens(visual, x)
    assert len(local) == 12 and tuple(local[0].shape) == (2, 768, 14, 14)
    for i in range(12):
        scale = float(ref_local[str(i)].abs().max())
        assert float((local[i] - ref_local[str(i)]).abs().max()) <= 1e-5 * scale
        assert float((glob[i] - ref_glob[str(i)]).abs().max()) <= 1e-5 * scale
    with torch.no_grad():
        inter = visual.forward_intermediates(x, output_fmt="NCHW", output_extra_tokens=True)
        visual.output_tokens = True
        try:
            pooled, tokens = visual(x)
        finally:
            visual.output_tokens = False
    for i in range(12):
        torch.testing.assert_close(local[i], inter["image_intermediates"][i], rtol=0, atol=1e-4)
        torch.testing.assert_close(
            glob[i], inter["image_intermediates_prefix"][i][:, 0], rtol=0, atol=1e-4
        )
    last = torch.cat([glob[-1][:, None], local[-1].flatten(2).transpose(1, 2)], dim=1)
    normed = visual.ln_post(last)
    torch.testing.assert_close(normed[:, 0] @ visual.proj, pooled, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(normed[:, 1:], tokens, rtol=1e-4, atol=1e-4)


def test_images_to_predictions_match_the_release(paper, tmp_path):
    """import-official + predict_files on image files vs the release's whole path: its
    preprocessing, get_tokens, 8×8 plain-bilinear downsampling and module."""
    from PIL import Image

    from napari_factortopy.app.cli_predict import predict_files
    from napari_factortopy.app.import_official import import_official

    rng = np.random.default_rng(4)
    (tmp_path / "fsaverage" / "surf").mkdir(parents=True)
    spheres = {}
    for hemi in ("lh", "rh"):
        p = rng.normal(size=(N_HEMI, 3))
        spheres[hemi] = (100 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
        nib.freesurfer.write_geometry(
            str(tmp_path / "fsaverage" / "surf" / f"{hemi}.sphere"),
            spheres[hemi],
            np.array([[0, 1, 2]]),
        )
    joint = np.sort(rng.choice(2 * N_HEMI, 800, replace=False))
    np.save(tmp_path / "v.npy", joint)
    release = randomise(ReleaseFactorTopy(len(joint)), seed=2).eval()
    torch.save(release.state_dict(), tmp_path / "paper.pth")
    model = import_official(
        tmp_path / "paper.pth", vertices=tmp_path / "v.npy", subjects_dir=tmp_path
    )
    ims = _images(2)
    paths = []
    for i, im in enumerate(ims):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(im).save(paths[-1])
    recs = list(predict_files(model, paths, paper, batch_size=1, device="cpu"))
    ours = recs[-1]["responses"]
    coords = torch.from_numpy(release_coords(spheres["lh"], spheres["rh"], joint))
    with torch.no_grad():
        local, glob = release_tokens(paper.module, release_images(ims))
        ref = release(downsample(local), glob, coords).numpy()
    diff = float(np.abs(ours - ref).max() / np.ptp(ref))
    print(f"images → predictions: max |ours − release| = {diff:.2e} of the range")
    assert ours.shape == (2, len(joint)) and ours.dtype == np.float32
    assert diff <= 1e-4
    # the Stimuli panel's path for a dropped image (app.predict.predict_array)
    from napari_factortopy.app.predict import predict_array

    one, _ = predict_array(model, ims[1], paper)
    assert np.abs(one - ref[1]).max() <= 1e-4 * np.ptp(ref)
