"""The TF checkpoint reader and the converter's refusals (no TensorFlow needed)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from constcl_zoo import WeightsNotAvailableError, load
from constcl_zoo.convert import ConversionError, convert_variables, model_variables
from constcl_zoo.tf_checkpoint import TFCheckpoint, TFCheckpointError, open_tf_checkpoint

from .conftest import reference_key_list
from .parity.formula import formula_value

GOLDEN = Path(__file__).parent / "fixtures" / "constcl_golden.npz"


@pytest.fixture(scope="module")
def constcl_variables() -> dict[str, tuple[int, ...]]:
    meta = json.loads(bytes(np.load(GOLDEN)["meta_json"]).decode())
    return {k: tuple(v) for k, v in meta["variables"].items()}


def _convert(shapes: dict[str, tuple[int, ...]], **kwargs):
    return convert_variables(shapes, lambda n: formula_value(n, shapes[n]), **kwargs)


@pytest.mark.slow
def test_constcl_layout_maps_every_variable(constcl_variables):
    config, tensors, layout = _convert(constcl_variables, context_length=3)
    assert layout == "constcl" and config.region_head.context_length == 3
    assert len(tensors) == len(constcl_variables)
    # conv kernel [kt, kh, kw, in, out] -> [out, in, kt, kh, kw]; dense [in, out] -> [out, in]
    stem = formula_value("backbone/_stem_conv/kernel", (5, 7, 7, 3, 64))
    np.testing.assert_array_equal(tensors["backbone.stem.conv.weight"].numpy(), stem.transpose(4, 3, 0, 1, 2))
    k = "model/layer_with_weights-2/_attention_decoder/_layers/1/_mha_units/2/layer_k/kernel"
    np.testing.assert_array_equal(tensors["region_head.layers.1.units.2.k.weight"].numpy(),
                                  formula_value(k, (2064, 128)).T)
    bn = "backbone/_res_5_1_layers/cell_2/_norm3/moving_variance"
    np.testing.assert_array_equal(tensors["backbone.res5_region.2.bn3.running_var"].numpy(),
                                  formula_value(bn, (2048,)))


@pytest.mark.slow
def test_unknown_missing_and_misshaped_variables_are_refused(constcl_variables):
    extra = {**constcl_variables, "model/layer_with_weights-3/kernel": (2048, 10)}
    with pytest.raises(ConversionError, match=r"1 variable\(s\) the converter does not understand:\n"
                                              r"  model/layer_with_weights-3/kernel \[2048, 10\]"):
        _convert(extra)
    missing = dict(constcl_variables)
    del missing["backbone/_blocks/res_3/cell_1/_norm2/gamma"]
    with pytest.raises(ConversionError, match="'backbone/_blocks/res_3/cell_1/_norm2/gamma' is missing"):
        _convert(missing)
    bad = {**constcl_variables, "model/layer_with_weights-2/_projection_layer/kernel": (384, 1000)}
    with pytest.raises(ConversionError, match=r"_projection_layer/kernel -> region_head.projection.weight: "
                                              r"\[1000, 384\], model \[2048, 384\]"):
        _convert(bad)


def test_optimizer_slots_and_counters_are_skipped(constcl_variables):
    keys = {f"{k}/.ATTRIBUTES/VARIABLE_VALUE": v for k, v in constcl_variables.items()}
    keys["_CHECKPOINTABLE_OBJECT_GRAPH"] = ()
    keys["global_step/.ATTRIBUTES/VARIABLE_VALUE"] = ()
    keys["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] = ()
    keys["backbone/_stem_conv/kernel/.OPTIMIZER_SLOT/optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE"] = (5, 7, 7, 3,
                                                                                                       64)
    assert model_variables(keys) == constcl_variables


@pytest.mark.slow
def test_cvrl_layout_from_reference_key_list():
    shapes = reference_key_list("cvrl_fullmodel_ckpt_vars_TF2.20_random.txt")
    variables = model_variables(shapes)
    config, tensors, layout = _convert(variables)
    assert layout == "cvrl" and config.arch == "cvrl_r3d50" and config.global_head.hidden_bias
    assert sum(t.numel() for k, t in tensors.items() if k.startswith("backbone.")) == 31_725_248
    backbone_only = {k: v for k, v in variables.items() if k.startswith("backbone/")}
    config, tensors, _ = _convert(backbone_only)
    assert not any(k.startswith("global_head") for k in tensors)


def test_reader_rejects_garbage_and_unsafe_tarballs(tmp_path):
    fake = tmp_path / "ckpt-1.index"
    fake.write_bytes(b"\x00" * 100)
    with pytest.raises(TFCheckpointError, match="bad table magic"):
        TFCheckpoint(tmp_path / "ckpt-1")
    with pytest.raises(TFCheckpointError, match="no such checkpoint index"):
        TFCheckpoint(tmp_path / "missing")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.index")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(TFCheckpointError, match=r"evil.tar.gz: refused unsafe member '../outside.index'"), \
            open_tf_checkpoint(evil):
        pass
    assert not (tmp_path.parent / "outside.index").exists()


def _gzip_bomb(path: Path, members: int, member_bytes: int) -> Path:
    """A .tar.gz of ``members`` files of zeros: ~1000x smaller than what it expands to."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"ckpt/ckpt-1.data-{i:05d}-of-{members:05d}")
            info.size = member_bytes
            tar.addfile(info, io.BytesIO(bytes(member_bytes)))
    return path


def test_tarball_caps_stop_extraction(tmp_path, monkeypatch):
    """Caps on each member and on the total, counted while extracting; the temporary folder is removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    bomb = _gzip_bomb(tmp_path / "bomb.tar.gz", members=1, member_bytes=64 * 2**20)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(TFCheckpointError, match=r"bomb.tar.gz: member 'ckpt/ckpt-1.data-00000-of-00001' "
                                                r"\(67108864 bytes\) is over the limit of 8388608 bytes"), \
            open_tf_checkpoint(bomb, max_member_bytes=8 * 2**20):
        pass
    many = _gzip_bomb(tmp_path / "many.tar.gz", members=4, member_bytes=3 * 2**20)
    with pytest.raises(TFCheckpointError, match="the extracted total .* is over the limit of 8388608 bytes"), \
            open_tf_checkpoint(many, max_total_bytes=8 * 2**20):
        pass
    monkeypatch.setenv("CONSTCL_ZOO_MAX_EXTRACT_MB", "2")  # the environment sets both caps
    with pytest.raises(TFCheckpointError, match="over the limit of 2097152 bytes.*CONSTCL_ZOO_MAX_EXTRACT_MB"), \
            open_tf_checkpoint(many):
        pass
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing left behind


def test_tarball_claiming_a_huge_member_is_refused_by_default(tmp_path):
    """A header declaring a 5 GB member (the tarball itself is tiny) is refused before anything is written."""
    info = tarfile.TarInfo("ckpt-1.data-00000-of-00001")
    info.size = 5 * 2**30
    fake = tmp_path / "huge.tar.gz"
    with gzip.open(fake, "wb") as f:
        f.write(info.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 20))
    with pytest.raises(TFCheckpointError, match=r"\(5368709120 bytes\) is over the limit of 2147483648 bytes"), \
            open_tf_checkpoint(fake):
        pass


def test_shard_reads_check_recorded_sizes(tmp_path, monkeypatch):
    """Entries are read with a seek and bounded chunks; a recorded size that disagrees with the shape, or runs
    past the shard, is refused before any buffer of that size is allocated."""
    from constcl_zoo.tf_checkpoint import TensorEntry

    shard = tmp_path / "ckpt.data-00000-of-00001"
    values = np.arange(10, dtype="<f4")
    shard.write_bytes(values.tobytes())
    ckpt = TFCheckpoint.__new__(TFCheckpoint)
    ckpt.prefix, ckpt.num_shards = tmp_path / "ckpt", 1
    ckpt.entries = {"ok": TensorEntry(1, (2, 5), 0, 0, 40, None, False),
                    "huge": TensorEntry(1, (2**40,), 0, 0, 2**42, None, False),
                    "lying": TensorEntry(1, (2**40,), 0, 0, 40, None, False)}
    monkeypatch.setattr("constcl_zoo.tf_checkpoint._CHUNK", 16)  # several chunks for the 40 bytes
    np.testing.assert_array_equal(ckpt.read("ok"), values.reshape(2, 5))
    with pytest.raises(TFCheckpointError, match="huge runs past the end of its data shard"):
        ckpt.read("huge")
    with pytest.raises(TFCheckpointError, match=r"lying records 40 bytes for shape \[1099511627776\]"):
        ckpt.read("lying")


def test_registry_names_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSTCL_ZOO_OFFLINE", "1")  # online, load() downloads it (tests/test_download.py)
    with pytest.raises(WeightsNotAvailableError) as err:
        load("cvrl_r3d50.k400_200ep", cache_dir=tmp_path)
    msg = str(err.value)
    assert "https://storage.googleapis.com/tf_model_garden/vision/cvrl/r3d_1x_k400_200ep.tar.gz" in msg
    assert "python -m training convert-tf /path/to/r3d_1x_k400_200ep.tar.gz --out DIR" in msg
    # `load("cvrl_r3d50")` means its default weights, the K600 800-epoch model
    with pytest.raises(WeightsNotAvailableError, match="r3d_1x_k600_800ep.tar.gz"):
        load("cvrl_r3d50", cache_dir=tmp_path)


@pytest.mark.slow
def test_reader_matches_tensorflow_and_detects_corruption(tmp_path):
    """A checkpoint written by TensorFlow (the parity venv) reads back exactly; one flipped bit is refused."""
    from .test_parity_cvrl import TF_PYTHON, _require_tf

    _require_tf()
    script = ("import sys, tensorflow as tf; tf.train.Checkpoint(v=tf.Variable(tf.range(1000, dtype=tf.float32)), "
              "b=tf.Variable(tf.constant([1.5, -2.0], tf.bfloat16))).write(sys.argv[1])")
    subprocess.run([str(TF_PYTHON), "-c", script, str(tmp_path / "ckpt")], check=True, capture_output=True)
    ckpt = TFCheckpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(ckpt.read("v/.ATTRIBUTES/VARIABLE_VALUE"), np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(ckpt.read("b/.ATTRIBUTES/VARIABLE_VALUE"), np.array([1.5, -2.0], np.float32))
    with pytest.raises(TFCheckpointError, match="not readable as numbers"):
        ckpt.read("_CHECKPOINTABLE_OBJECT_GRAPH")
    data = next(tmp_path.glob("ckpt.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="fails its CRC32C check"):
        TFCheckpoint(tmp_path / "ckpt").read("v/.ATTRIBUTES/VARIABLE_VALUE")
