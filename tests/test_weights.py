"""Checkpoint folders: save -> load round trip, strict key checking, integrity, ``load()`` resolution."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from constcl_zoo import (
    CheckpointMismatchError,
    ChecksumError,
    ModelConfig,
    PretrainedWeights,
    WeightsNotAvailableError,
    list_models,
    list_pretrained,
    load,
    register_weights,
)
from constcl_zoo.checkpoint import sha256_of
from constcl_zoo.registry import set_default_weights, unregister_weights

from .conftest import TINY, random_boxes, tiny_clip


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_folder_contents(tiny_checkpoint):
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == ["config.json", "model.safetensors"]
    data = json.loads((tiny_checkpoint / "config.json").read_text())
    assert data["arch"] == TINY and data["format_version"] == 1
    assert data["preprocess"] == {"num_frames": 8, "frame_stride": 2, "crop_size": 112, "resize_short_side": 112,
                                  "value_range": [-1.0, 1.0], "interpolation": "bilinear", "channel_order": "rgb"}
    assert data["weights"]["sha256"] == sha256_of(tiny_checkpoint / "model.safetensors")
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        assert f.metadata()["arch"] == TINY
        assert not any(k.endswith("num_batches_tracked") for k in f.keys())
    assert ModelConfig.from_json(tiny_checkpoint / "config.json").region_head.context_length == 3


@pytest.mark.parametrize("branch", ["global", "region", "full"])
def test_save_load_round_trip_is_exact(tiny_full, tiny_checkpoint, branch):
    model = load(tiny_checkpoint, branch=branch)
    assert not model.training
    clip, boxes = tiny_clip(2), random_boxes(2, 3)
    with torch.no_grad():
        if branch == "full":
            ours, ref = model(clip, boxes), tiny_full(clip, boxes)
            for key in ref:
                assert torch.equal(ours[key], ref[key]), key
        else:
            feats = tiny_full.forward_features(clip, ("res5", "res5_region"))
            expected = feats["res5"].mean(dim=(2, 3, 4)) if branch == "global" else feats["res5_region"]
            assert torch.equal(model(clip), expected)


def test_branch_checkpoint_resaves_and_local_dir_prefix(tmp_path, tiny_checkpoint):
    glob = load(f"local-dir:{tiny_checkpoint}")
    folder = glob.save_pretrained(tmp_path / "global_only")
    again = load(folder)
    clip = tiny_clip(1)
    with torch.no_grad():
        assert torch.equal(again(clip), glob(clip))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(\d+\):\n    backbone.res5_region"):
        load(folder, branch="region")


def test_wrong_keys_are_listed(tmp_path, tiny_checkpoint):
    folder = _copy(tiny_checkpoint, tmp_path / "bad")
    tensors = load_file(folder / "model.safetensors")
    tensors["backbone.res2.0.bn1.extra"] = torch.zeros(3)
    tensors["global_head.out.weight"] = torch.zeros(7, 7)
    del tensors["backbone.stem.conv.weight"]
    save_file(tensors, folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["weights"]  # a third-party folder without a digest
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError) as err:
        load(folder, branch="full")
    msg = str(err.value)
    assert "missing keys (1):\n    backbone.stem.conv.weight" in msg
    assert "unexpected keys (1):\n    backbone.res2.0.bn1.extra" in msg
    assert "mis-shaped keys (1):\n    global_head.out.weight: file [7, 7], model [128, 512]" in msg
    # keys of parts a branch does not use are still checked against the architecture
    with pytest.raises(CheckpointMismatchError, match="global_head.out.weight"):
        load(folder, branch="global")


def test_wrong_dtypes_are_listed(tmp_path, tiny_checkpoint):
    """An int or bool tensor of the right shape used to load silently (cast to float by load_state_dict)."""
    folder = _copy(tiny_checkpoint, tmp_path / "dtypes")
    tensors = load_file(folder / "model.safetensors")
    tensors["backbone.stem.conv.weight"] = tensors["backbone.stem.conv.weight"].to(torch.int64)
    tensors["backbone.stem.bn.running_var"] = tensors["backbone.stem.bn.running_var"] > 0
    tensors["global_head.out.bias"] = tensors["global_head.out.bias"].half()  # floating: allowed, cast on load
    save_file(tensors, folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["weights"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError) as err:
        load(folder, branch="full")
    msg = str(err.value)
    assert "keys of the wrong dtype (floating tensors must be stored as floating point) (2):" in msg
    assert "    backbone.stem.bn.running_var: file BOOL, model float32" in msg
    assert "    backbone.stem.conv.weight: file I64, model float32" in msg
    assert "global_head.out.bias" not in msg


def test_invalid_config_values_are_refused_before_building(tmp_path, tiny_checkpoint, monkeypatch):
    import constcl_zoo._factory as factory
    from constcl_zoo import ConstclZooError
    from constcl_zoo.config import ConfigError

    def no_build(*args, **kwargs):
        raise AssertionError("build_model ran on an invalid config")

    monkeypatch.setattr(factory, "build_model", no_build)
    cases = [("backbone", "width", 0, "config.backbone: BackboneConfig.width = 0: must be an integer in [1, 1024]"),
             ("backbone", "temporal_kernels", [[1], [1], [1]], "must list 4 stages"),
             ("backbone", "bn_eps", -1.0, "BackboneConfig.bn_eps = -1.0: must be a finite number in (0, 1]"),
             ("global_head", "hidden_layers", 100000, "GlobalHeadConfig.hidden_layers = 100000"),
             ("region_head", "num_heads", 0, "RegionHeadConfig.num_heads = 0"),
             ("region_head", "dropout", 1.5, "RegionHeadConfig.dropout = 1.5"),
             ("preprocess", "num_frames", 10**9, "PreprocessConfig.num_frames = 1000000000"),
             ("preprocess", "value_range", [-1.0, 1e999], "PreprocessConfig.value_range = (-1.0, inf)"),
             ("preprocess", "resize_short_side", 100, "PreprocessConfig.resize_short_side = 100: must be an "
                                                      "integer in [112, 8192]"),
             ("preprocess", "interpolation", "nearest", "'nearest' is not one of ['bilinear', 'bicubic']")]
    for section, key, value, words in cases:
        folder = _copy(tiny_checkpoint, tmp_path / f"{section}-{key}")
        cfg = json.loads((folder / "config.json").read_text())
        cfg[section][key] = value
        (folder / "config.json").write_text(json.dumps(cfg).replace("Infinity", "1e999"))
        with pytest.raises(ConfigError) as err:
            load(folder)
        assert words in str(err.value) and str(folder / "config.json") in str(err.value), str(err.value)
        assert isinstance(err.value, ConstclZooError) and isinstance(err.value, ValueError)
    with pytest.raises(ConfigError, match=r"GlobalHeadConfig.out_dim = -1"):
        load(TINY, pretrained=False, global_head={"out_dim": -1})


def test_flipped_byte_is_refused(tmp_path, tiny_checkpoint):
    folder = _copy(tiny_checkpoint, tmp_path / "flip")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit of one weight changed
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match"):
        load(folder)


def test_unreadable_files_give_clear_errors(tmp_path, tiny_checkpoint):
    folder = _copy(tiny_checkpoint, tmp_path / "trunc")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["weights"]
    (folder / "config.json").write_text(json.dumps(cfg))
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointMismatchError, match="not a readable safetensors file"):
        load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        load(folder)
    cfg["backbone"]["depth"] = 50
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.backbone: unknown field\(s\) \['depth'\]"):
        load(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        load(str(tmp_path / "missing") + "/")


def test_config_round_trip_and_strictness():
    from constcl_zoo.registry import arch_config

    for arch in list_models():
        config = arch_config(arch)
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    data = arch_config("constcl_r3d50").to_dict()
    data["backbone"]["width"] = "64"
    with pytest.raises(TypeError, match="config.backbone.width: expected int, got str"):
        ModelConfig.from_dict(data)
    data = arch_config("constcl_r3d50").to_dict()
    data["format_version"] = 99
    with pytest.raises(ValueError, match="format_version 99"):
        ModelConfig.from_dict(data)


def test_pretrained_names_and_errors():
    assert {"constcl_r3d50", "cvrl_r3d50", "constcl_r3d14_w16", "cvrl_r3d14_w16"} <= set(list_models())
    assert list_models("cvrl*") == ["cvrl_r3d14_w16", "cvrl_r3d50"]
    with pytest.raises(WeightsNotAvailableError, match="'constcl_r3d50' has no published weights. Names with weights"):
        load("constcl_r3d50")
    with pytest.raises(KeyError, match="Did you mean 'constcl_r3d50'"):
        load("constcl_r3d5")
    with pytest.raises(ValueError, match="only apply with pretrained=False"):
        load(TINY, region_head={"context_length": 1})
    with pytest.raises(ValueError, match="unknown config field 'depth'"):
        load(TINY, pretrained=False, depth=3)
    with pytest.raises(ValueError, match="branch must be one of"):
        load(TINY, pretrained=False, branch="both")
    entry = PretrainedWeights(name=f"{TINY}.offline_only", how_to_get="Download x.tar.gz and run convert.")
    register_weights(entry)
    try:
        assert f"{TINY}.offline_only" in list_pretrained()
        with pytest.raises(WeightsNotAvailableError, match="not on the Hugging Face Hub. Download x.tar.gz"):
            load(f"{TINY}.offline_only")
        # registering is not naming a default (tests/test_registry.py); once named, the arch means the entry
        set_default_weights(TINY, "offline_only")
        with pytest.raises(WeightsNotAvailableError, match="Download x.tar.gz"):
            load(TINY)
    finally:
        unregister_weights(entry.name)


def test_seeded_random_init_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load(TINY, pretrained=False, seed=1)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = load(TINY, pretrained=False, seed=1)
    c = load(TINY, pretrained=False, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["backbone.stem.conv.weight"], sc["backbone.stem.conv.weight"])


def test_dtype_and_device_are_honoured(tiny_checkpoint):
    ref = load(tiny_checkpoint)
    bf16 = load(tiny_checkpoint, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in bf16.parameters()} == {"cpu"}
    clip = tiny_clip(2)
    with torch.no_grad():
        out = bf16(clip.bfloat16())
        assert out.dtype == torch.bfloat16
        cos = torch.nn.functional.cosine_similarity(out.float(), ref(clip), dim=-1)
    assert cos.min() > 0.99
    with pytest.raises(ValueError, match="floating dtype"):
        load(tiny_checkpoint, dtype=torch.int8)
