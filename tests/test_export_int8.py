"""int8 ONNX export (``python -m export onnx --precision int8``): QDQ graph, metadata, cosine check on held-out
videos."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from constcl_zoo import load
from constcl_zoo.inference.embed import WindowSpec, frames_of, iter_windows
from export.__main__ import main as export_main
from export.quantize import compare, nearest_neighbours, non_finite_consumers, sample_windows, stem_convs
from export.runtime import OnnxEmbedder, read_metadata

from .conftest import TINY

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CALIBRATION, HELD_OUT = VIDEOS / "tree.avi", VIDEOS / "bikes.mp4"  # small frames: cheap to decode and preprocess
SEED = 5
pytestmark = pytest.mark.skipif(not HELD_OUT.is_file(), reason="needs ../shared/data/videos")


def _cli(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    code = export_main(["onnx", TINY, "--random-init", "--seed", str(SEED), "--precision", "int8",
                        "--calibration", str(CALIBRATION), str(HELD_OUT), "--calibration-windows", "8", "--out",
                        str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@functools.cache
def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="constcl-int8-"))


@pytest.fixture(scope="module")
def int8_export():
    """The tiny model exported int8 once through the CLI: (path, stdout)."""
    out = _folder() / "tiny-int8.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = export_main(["onnx", TINY, "--random-init", "--seed", str(SEED), "--precision", "int8",
                            "--calibration", str(CALIBRATION), str(HELD_OUT), "--calibration-windows", "8", "--out",
                            str(out)])
    assert code == 0, stderr.getvalue()
    yield out, stdout.getvalue()
    shutil.rmtree(_folder(), ignore_errors=True)


@pytest.mark.slow
def test_int8_graph_is_qdq_with_per_channel_weights_and_metadata(int8_export):
    out, stdout = int8_export
    (line,) = stdout.splitlines()
    assert line.startswith(f"wrote {out}: int8 (QDQ") and "top-1 retrieval agreement" in line
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    quantized = [producers[c.input[1]] for c in convs if c.input[1] in producers
                 and producers[c.input[1]].op_type == "DequantizeLinear"]
    assert len(quantized) == len(convs) - 1  # every conv but the stem (kept fp32, see stem_convs)
    for dq in quantized:  # per-channel: one scale per output channel, int8 weights
        scale, weight = (onnx.numpy_helper.to_array(inits[dq.input[i]]) for i in (1, 0))
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],) and weight.shape[0] > 1
        assert {a.name: a.i for a in dq.attribute}.get("axis", 1) == 0
    stem = [c for c in convs if c.input[0] == "clip"]
    assert len(stem) == 1 and stem[0].input[1] in inits  # a plain float weight
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and meta["branch"] == "global" and meta["source"].startswith(TINY)
    calib = json.loads(meta["int8_calibration"])
    assert calib["videos"] == [CALIBRATION.name] and calib["method"] == "minmax" and 0 < calib["windows"] <= 8
    check = json.loads(meta["int8_check"])
    assert check["held_out_videos"] == [HELD_OUT.name] and check["threshold"] == 0.99
    assert 0.99 <= check["mean_cosine"] <= 1 and check["min_cosine"] <= check["mean_cosine"]
    assert 0 <= check["top1_agreement"] <= 1


@pytest.mark.slow
def test_int8_embeddings_match_fp32_torch_on_a_held_out_video(int8_export):
    """Independent of the export's own check: the runtime embedder on every window of the held-out video."""
    out, _ = int8_export
    got = OnnxEmbedder(out).embed(HELD_OUT).embeddings.numpy()
    model = load(TINY, branch="global", pretrained=False, seed=SEED)
    want = model.embed(HELD_OUT, precision="fp32").embeddings.numpy()
    low, mean, agree = compare(got, want)
    assert len(got) == 15 and mean >= 0.99 and low > 0.98
    print(f"int8 vs fp32 torch on {HELD_OUT.name}: mean cosine {mean:.5f}, min {low:.5f}, top-1 agreement {agree:.2f}")


@pytest.mark.slow
def test_impossible_threshold_fails_with_exit_2_and_no_file(capsys, tmp_path):
    out = tmp_path / "m.onnx"
    code, stdout, stderr = _cli(capsys, out, "--int8-min-cosine", "1.01", "--calibration-windows", "2")
    assert code == 2 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith("python -m export onnx: error: int8 vs fp32 PyTorch on 2 held-out windows: mean cosine")
    assert "below --int8-min-cosine 1.01" in line
    assert list(tmp_path.iterdir()) == []  # no output and no temporary file


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "--precision int8 needs --calibration"),
    (["--calibration", str(HELD_OUT)], "--calibration and --held-out are for int8 exports; add --precision int8"),
    (["--precision", "int8", "--external-data", "--calibration", str(HELD_OUT)],
     "--precision int8 does not combine with --external-data"),
    (["--precision", "int8", "--calibration", str(HELD_OUT)], "give two or more --calibration videos"),
    (["--precision", "int8", "--calibration", str(HELD_OUT), "--held-out", str(HELD_OUT)],
     "must not be calibration videos"),
    (["--precision", "int8", "--calibration", str(VIDEOS / "missing.mp4"), str(HELD_OUT)],
     "no file, folder or manifest at"),
    (["--precision", "int8", "--calibration", "EMPTY_FOLDER"], "the folder holds no video file"),
    (["--precision", "int8", "--calibration", "ONE_VIDEO_FOLDER"],
     "give two or more --calibration videos"),  # folder expanded
])
def test_int8_usage_errors(capsys, tmp_path, args, message):
    """--calibration and --held-out take files, folders and manifests, as embed does."""
    folders = tmp_path / "folders"
    (folders / "empty").mkdir(parents=True)
    (folders / "one").mkdir()
    (folders / "one" / HELD_OUT.name).symlink_to(HELD_OUT)
    args = [str(folders / "empty") if a == "EMPTY_FOLDER" else str(folders / "one") if a == "ONE_VIDEO_FOLDER" else a
            for a in args]
    out = tmp_path / "out"
    out.mkdir()
    code = export_main(["onnx", TINY, "--random-init", "--out", str(out / "m.onnx"), *args])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and message in line and list(out.iterdir()) == []


def test_calibration_windows_are_the_embed_windows_spread_over_the_video():
    preprocess = load(TINY, branch="global", pretrained=False).preprocess
    frames, source = frames_of(CALIBRATION)
    every = torch.stack([w.clip for w in iter_windows(frames, preprocess, WindowSpec.from_preprocess(preprocess),
                                                      source)]).numpy()
    assert len(every) == 4
    picked = sample_windows([CALIBRATION], preprocess, 2)
    np.testing.assert_array_equal(picked, every[[0, 3]])  # the first and the last, preprocessed the same way
    assert sample_windows([CALIBRATION, HELD_OUT], preprocess, 3).shape == (3, *every.shape[1:])


def test_compare_reports_cosine_and_top1_agreement():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    assert nearest_neighbours(x).tolist() == [1, 0, 3, 2]
    low, mean, agree = compare(x * 3, x)  # scale does not matter
    assert low == pytest.approx(1) and mean == pytest.approx(1) and agree == 1
    y = x.copy()
    y[1] = [0.2, 0.8]  # window 1's nearest becomes 3; the others keep theirs
    assert nearest_neighbours(y).tolist() == [1, 3, 3, 2]
    low, mean, agree = compare(y, x)
    assert low == pytest.approx(0.26 / np.hypot(0.2, 0.8) / np.hypot(0.9, 0.1)) and agree == 0.75
    assert np.isnan(compare(x[:2], x[:2])[2])  # two windows: no retrieval to compare


def test_float_nodes_are_the_stem_conv_and_the_infinite_pad_with_its_pool():
    inf = helper.make_tensor("neg_inf", TensorProto.FLOAT, [], [-np.inf])
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.ones(12, np.float32))
    nodes = [helper.make_node("Conv", ["clip", "w"], ["a"], name="stem"),
             helper.make_node("Pad", ["a", "pads", "neg_inf"], ["b"], name="pad"),
             helper.make_node("MaxPool", ["b"], ["c"], name="pool", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["d"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("clip", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)], [inf, pads, w])
    proto = helper.make_model(graph)
    assert stem_convs(proto) == ["stem"]
    assert non_finite_consumers(proto) == ["pad", "pool"]
