"""Network structure: shapes, parameter counts, the Y, the heads, and input checking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from constcl_zoo import ModelConfig, build_model, load
from constcl_zoo.registry import arch_config

from .conftest import TINY, random_boxes, tiny_clip


def _count(module: torch.nn.Module) -> tuple[int, int]:
    """(parameters + BN moving statistics, trainable parameters) — the TF counting."""
    total = sum(v.numel() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked"))
    return total, sum(p.numel() for p in module.parameters())


def _meta(arch: str, branch: str, **changes):
    config = arch_config(arch)
    if changes:
        config = config.replace(**changes)
    with torch.device("meta"):
        return build_model(config, branch)


def test_official_parameter_counts():
    full = _meta("constcl_r3d50", "full")
    assert _count(full.backbone) == (51_955_392, 51_879_744)
    assert _count(full.backbone.res5_region)[1] == 20_207_616
    assert _count(full.global_head)[0] == 12_869_760
    assert _count(full.region_head)[0] == 6_928_356
    assert _count(_meta("cvrl_r3d50", "global").backbone) == (31_725_248, 31_672_128)


def test_vanilla_region_head_matches_table6_size():
    """context_length 0: an MLP like the global head replaces the decoder; Table 6 row "0" has 77.7M params."""
    base = arch_config("constcl_r3d50")
    vanilla = _meta("constcl_r3d50", "full", region_head=base.region_head.__class__(context_length=0))
    assert not hasattr(vanilla.region_head, "layers")
    assert _count(vanilla.region_head)[0] == 12_869_760
    assert round(_count(vanilla)[0] / 1e6, 1) == 77.7
    assert round(_count(_meta("constcl_r3d50", "full"))[0] / 1e6, 1) == 71.8  # paper: 71.7-71.76M


def test_branches_build_only_their_res5():
    g = _meta("constcl_r3d50", "global").backbone
    r = _meta("constcl_r3d50", "region").backbone
    assert hasattr(g, "res5") and not hasattr(g, "res5_region")
    assert hasattr(r, "res5_region") and not hasattr(r, "res5")
    cvrl_region = _meta("cvrl_r3d50", "region")
    assert cvrl_region.output_endpoint == "res5"


@pytest.mark.slow
def test_r3d50_endpoint_shapes_16x224():
    model = load("constcl_r3d50", branch="full", pretrained=False)
    clip = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(clip, ("res2", "res3", "res4", "res5", "res5_region"))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res2": (1, 256, 8, 56, 56), "res3": (1, 512, 8, 28, 28), "res4": (1, 1024, 8, 14, 14),
        "res5": (1, 2048, 8, 7, 7), "res5_region": (1, 2048, 8, 7, 7)}


@pytest.mark.parametrize(("t", "h", "w"), [(15, 225, 223), (16, 100, 130), (9, 33, 47)])
def test_odd_input_sizes_follow_tf_same(t, h, w):
    model = load(TINY, branch="global", pretrained=False)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, t, h, w), ("stem", "res3", "res5"))

    def down(n, times):
        for _ in range(times):
            n = math.ceil(n / 2)
        return n

    tt = math.ceil(t / 2)
    assert feats["stem"].shape[2:] == (tt, down(h, 2), down(w, 2))
    assert feats["res3"].shape[2:] == (tt, down(h, 3), down(w, 3))
    assert feats["res5"].shape[2:] == (tt, down(h, 5), down(w, 5))


def test_branches_agree_with_full_model(tiny_full):
    """Global and region encoders given the full model's weights compute its res5 / res5_region."""
    clip = tiny_clip()
    state = tiny_full.state_dict()
    glob = build_model(tiny_full.config, "global").eval()
    reg = build_model(tiny_full.config, "region").eval()
    glob.load_state_dict({k: v for k, v in state.items() if k in glob.state_dict()})
    reg.load_state_dict({k: v for k, v in state.items() if k in reg.state_dict()})
    with torch.no_grad():
        full = tiny_full.forward_features(clip, ("res5", "res5_region"))
        torch.testing.assert_close(glob(clip), full["res5"].mean(dim=(2, 3, 4)))
        torch.testing.assert_close(reg(clip), full["res5_region"])
        # the two res5 branches have separate weights: their outputs differ
        assert not torch.allclose(full["res5"], full["res5_region"])


def test_forward_features_endpoints_and_feature_info(tiny_full):
    model = load(TINY, pretrained=False)
    clip = tiny_clip(1)
    with torch.no_grad():
        feats = model.forward_features(clip, ("res3", "res4", "res5"))
        assert list(feats) == ["res3", "res4", "res5"]
        torch.testing.assert_close(model(clip), feats["res5"].mean(dim=(2, 3, 4)))
    info = {i["name"]: i for i in model.feature_info}
    assert list(info) == ["stem", "res2", "res3", "res4", "res5"]
    for name, f in feats.items():
        assert f.shape[1] == info[name]["channels"]
        assert 64 // info[name]["reduction"][1] == f.shape[-1]
    with pytest.raises(ValueError, match="res5_region"):
        model.forward_features(clip, ("res5_region",))


def test_global_and_region_outputs(tiny_full):
    glob = load(TINY, pretrained=False)
    reg = load(TINY, branch="region", pretrained=False)
    clip = tiny_clip(2)
    boxes = random_boxes(2, 5)
    with torch.no_grad():
        assert glob(clip).shape == (2, 512)
        dense = reg(clip)
        assert dense.shape == (2, 512, 4, 2, 2)
        roi = reg.roi_features(clip, boxes)
        assert roi.shape == (2, 5, 512)
        # centre key frame of the L2-normalised map, like training
        from constcl_zoo.nn.layers import roi_align_mean

        expected = roi_align_mean(F.normalize(dense[:, :, 2], dim=1), boxes)
        torch.testing.assert_close(roi, expected)
        raw_mean = reg.roi_features(clip, boxes, frame="mean", normalize=False)
        torch.testing.assert_close(raw_mean, roi_align_mean(dense.mean(2), boxes))
        with pytest.raises(ValueError, match="frame"):
            reg.roi_features(clip, boxes, frame=9)


def _reference_unit(unit, query, memory):
    """The official DecoderUnit, written with torch's SDPA: LN(attn(q, k, v) + q) -> FFN (no residual)."""
    q, k, v = unit.q(query), unit.k(memory), unit.v(memory)
    h = F.scaled_dot_product_attention(q, k, v)
    h = F.layer_norm(h + q, (q.shape[-1],), unit.norm.weight, unit.norm.bias, eps=1e-12)
    return unit.ffn2(F.gelu(unit.ffn1(h), approximate="none"))


def test_instance_reconstructor_matches_reference(tiny_full):
    head = tiny_full.region_head
    gen = torch.Generator().manual_seed(5)
    b, n, c, t, h, w = 2, 4, 512, 4, 3, 3
    feats = torch.randn(2 * b, c, t, h, w, generator=gen)
    boxes = random_boxes(2 * b, n, seed=1)
    with torch.no_grad():
        out = head(feats, boxes)
        norm = F.normalize(feats, dim=1)
        from constcl_zoo.nn.layers import roi_align_mean

        inst = roi_align_mean(norm[:, :, t // 2], boxes)
        torch.testing.assert_close(out["inst_a"], inst[:b])
        torch.testing.assert_close(out["target_b"], inst[b:])
        # memory: context 3, stride t//3 = 1 around key frame 2 -> frames 1, 2, 3 with positions concatenated
        mem = head.memory(norm, torch.full((2 * b,), 2))
        assert mem.shape == (2 * b, 3 * h * w, c + 16)
        mem5 = mem.reshape(2 * b, 3, h, w, c + 16)
        torch.testing.assert_close(mem5[..., :c], norm[:, :, 1:4].permute(0, 2, 3, 4, 1))
        tpos = head.temporal_mlp(torch.tensor([[-1.0], [0.0], [1.0]]))
        spos = head.spatial_mlp(torch.tensor([[-1.0, -1.0], [1.0, 0.0]]))
        torch.testing.assert_close(mem5[0, :, 0, 0, c:c + 8], tpos)
        torch.testing.assert_close(mem5[0, 0, 0, 0, c + 8:], spos[0])
        torch.testing.assert_close(mem5[0, 0, 2, 1, c + 8:], spos[1])
        # decoder: a2b queries view a's regions in view b's memory, via independent units, then projection
        query = inst[:b]
        for layer in head.layers:
            query = torch.cat([_reference_unit(u, query, mem[b:]) for u in layer.units], dim=-1)
        torch.testing.assert_close(out["inst_a2b"], head.projection(query), rtol=1e-4, atol=1e-5)


def test_context_length_zero_is_vanilla_region_contrast():
    model = load(TINY, branch="full", pretrained=False, region_head={"context_length": 0})
    clip, boxes = tiny_clip(4), random_boxes(4, 3)
    with torch.no_grad():
        out = model(clip, boxes)
    assert out["inst_a2b"].shape == (2, 3, 128)
    torch.testing.assert_close(out["target_b"], out["inst_b2a"])
    torch.testing.assert_close(out["inst_a2b"], model.region_head.mlp(out["inst_a"]))


def test_full_forward_outputs_and_key_frames(tiny_full):
    clip, boxes = tiny_clip(4), random_boxes(4, 3)
    with torch.no_grad():
        out = tiny_full(clip, boxes)
        assert out["global_embeddings"].shape == (4, 128)
        for key in ("inst_a", "inst_b", "inst_a2b", "inst_b2a", "target_a", "target_b"):
            assert out[key].shape == (2, 3, 512), key
        same = tiny_full(clip, boxes, key_frames=torch.full((4,), 2))
        torch.testing.assert_close(same["inst_a2b"], out["inst_a2b"])
        other = tiny_full(clip, boxes, key_frames=torch.tensor([0, 1, 3, 2]))
        assert not torch.allclose(other["inst_a"], out["inst_a"])
    with pytest.raises(ValueError, match="key_frames"):
        tiny_full(clip, boxes, key_frames=torch.tensor([0, 1, 4, 2]))
    with pytest.raises(ValueError, match="boxes"):
        tiny_full(clip)


def test_cvrl_full_model():
    model = load("cvrl_r3d14_w16", branch="full", pretrained=False)
    assert model.global_head.hidden[0].bias is not None
    with torch.no_grad():
        out = model(tiny_clip(2))
    assert list(out) == ["global_embeddings"] and out["global_embeddings"].shape == (2, 128)


@pytest.mark.parametrize(
    ("clip", "match"),
    [
        (torch.zeros(2, 8, 64, 64, 3, dtype=torch.uint8), "preprocess"),
        (torch.zeros(3, 8, 64, 64), "batch axis"),
        (torch.zeros(1, 8, 64, 64, 3), "channels-last"),
        (torch.zeros(1, 4, 8, 64, 64), "3 \\(RGB\\) channels"),
        (torch.zeros(1, 3, 1, 64, 64), "1 frame"),
        (torch.zeros(1, 3, 8, 16, 64), "16x64"),
        ("not a tensor", "torch.Tensor"),
    ],
)
def test_bad_clips_raise_clear_errors(clip, match):
    model = load(TINY, pretrained=False)
    with pytest.raises((ValueError, TypeError), match=match):
        model(clip)


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (torch.tensor([[[0.1, 0.1, 1.2, 0.5]]]), r"boxes\[0, 0\].*outside \[0, 1\]"),
        (torch.tensor([[[0.6, 0.1, 0.2, 0.5]]]), r"boxes\[0, 0\].*x2 < x1"),
        (torch.tensor([[[0.1, 0.1, 0.2, 0.5], [0.1, 0.7, 0.2, 0.5]]]), r"boxes\[0, 1\].*y2 < y1"),
        (torch.tensor([[[0.1, float("nan"), 0.2, 0.5]]]), "not finite"),
        (torch.tensor([[0.1, 0.1, 0.2, 0.5]]), r"\[B, N, 4\]"),
        (torch.tensor([[[1, 1, 2, 5]]]), "floating point"),
        (torch.zeros(2, 1, 4), "2 box sets for a batch of 1"),
    ],
)
def test_bad_boxes_raise_clear_errors(boxes, match):
    model = load(TINY, branch="region", pretrained=False)
    with pytest.raises((ValueError, TypeError), match=match):
        model.roi_features(tiny_clip(1), boxes)


def test_full_model_needs_enough_frames_for_context(tiny_full):
    assert tiny_full.min_frames == 5
    with pytest.raises(ValueError, match="at least 5"):
        tiny_full(tiny_clip(2, frames=4), random_boxes(2, 2))


def test_config_validation():
    from constcl_zoo.config import BackboneConfig, ConfigError, GlobalHeadConfig, PreprocessConfig

    with pytest.raises(ConfigError, match=r"PreprocessConfig.interpolation = 'nearest': must be one of"):
        PreprocessConfig(interpolation="nearest")  # Literal fields are checked on direct construction too
    with pytest.raises(ConfigError, match=r"BackboneConfig.stem_stride = \(2, 0, 2\)"):
        BackboneConfig(stem_stride=(2, 0, 2))
    with pytest.raises(ConfigError, match=r"GlobalHeadConfig.bn_momentum = nan"):
        GlobalHeadConfig(bn_momentum=float("nan"))
    with pytest.raises(ConfigError, match=r"BackboneConfig.width = True"):
        BackboneConfig(width=True)
    with pytest.raises(ValueError, match="odd"):
        arch_config("constcl_r3d50").region_head.__class__(context_length=4)
    with pytest.raises(ValueError, match="single res5"):
        ModelConfig(arch="x", family="cvrl")
