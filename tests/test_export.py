"""ONNX export (dynamic axes, metadata, self-check), the ONNX Runtime embedder, and the Triton repository."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from constcl_zoo import ClipPreprocess, ModelConfig, load
from export.__main__ import main as export_main
from export.onnx import MIN_OPSET, ExportCheckError, export_onnx, known_export_noise
from export.onnx.encoder import self_check
from export.runtime import OnnxEmbedder, OnnxMetadataError, create_session, read_metadata
from export.triton import write_repository

from .conftest import TINY, random_boxes, tiny_clip
from .test_embed import random_frames

SEED = 5
ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="constcl-export-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


@contextlib.contextmanager
def _torch_log_records() -> Iterator[list[logging.LogRecord]]:
    """Warnings and errors logged under ``torch`` while in the block (torch's logging stops propagation at
    ``torch`` and at ``torch.onnx``, where the exporter logs, each with its own stderr handler)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger("torch"), logging.getLogger("torch.onnx")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@functools.cache
def exported(branch: str = "global", with_rois: bool = False, fp16: bool = False,
             external_data: bool = False) -> Path:
    """The tiny model (seed 5) exported once per variant for the whole test session; the export must be quiet."""
    folder = _TMP / f"{branch}-{with_rois}-{fp16}-{external_data}"
    out = folder / "model.onnx"
    model = load(TINY, branch=branch, pretrained=False, seed=SEED)
    gc.collect()  # finalizers of earlier tests' garbage (an event loop the demo's tests left) warn now, not below
    with warnings.catch_warnings(record=True) as caught, _torch_log_records() as logged:
        warnings.simplefilter("always")
        export_onnx(model, out, with_rois=with_rois, precision="fp16" if fp16 else "fp32",
                    external_data=external_data, source="tiny")
    assert [str(w.message) for w in caught] == [], "the export raised warnings"
    assert [r.getMessage() for r in logged] == [], "the export logged warnings"
    return out


@functools.cache
def cli_exported() -> tuple[Path, str, str]:
    """``python -m export onnx`` of the tiny region network (seed 5) in a fresh process: (path, stdout, stderr)."""
    out = _TMP / "cli" / "region.onnx"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the warnings a user sees by default
    done = subprocess.run([sys.executable, "-m", "export", "onnx", TINY, "--random-init", "--seed", str(SEED),
                           "--branch", "region", "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, done.stdout, done.stderr


def _output_dims(path: Path) -> list[int | str]:
    proto = onnx.load(str(path), load_external_data=False)
    return [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]


def _rel_err(got: np.ndarray, want: torch.Tensor) -> float:
    want = want.numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_global_export_dynamic_batch_metadata_and_opset():
    path = exported()
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == MIN_OPSET == 18
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 8, 112, 112]
    assert [o.name for o in proto.graph.output] == ["embeddings"] and _output_dims(path) == ["batch", 512]
    meta = read_metadata(path)
    model = load(TINY, branch="global", pretrained=False, seed=SEED)
    assert ModelConfig.from_dict(json.loads(meta["config"])) == model.config
    assert meta["branch"] == "global" and meta["precision"] == "fp32" and meta["output"] == "embeddings"
    assert json.loads(meta["preprocess"]) == {**model.config.to_dict()["preprocess"]}
    assert json.loads(meta["preprocess"])["crop_size"] == 112
    session, provider = create_session(path)
    assert provider == "CPUExecutionProvider"
    for batch in (1, 4):
        clip = tiny_clip(batch=batch, size=112, seed=batch)
        (got,) = session.run(None, {"clip": clip.numpy()})
        with torch.no_grad():
            assert _rel_err(got, model(clip)) <= 1e-4


@pytest.mark.slow
def test_region_with_rois_has_dynamic_box_count():
    path = exported("region", with_rois=True)
    session, _ = create_session(path)
    names = [i.name for i in session.get_inputs()]
    assert names == ["clip", "boxes"]
    assert [i.shape for i in session.get_inputs()] == [["batch", 3, 8, 112, 112], ["batch", "num_boxes", 4]]
    assert _output_dims(path) == ["batch", "num_boxes", 512]
    assert read_metadata(path)["with_rois"] == "true" and read_metadata(path)["output"] == "roi_features"
    model = load(TINY, branch="region", pretrained=False, seed=SEED)
    for batch, n in ((1, 1), (2, 7)):
        clip, boxes = tiny_clip(batch=batch, size=112, seed=n), random_boxes(batch, n, seed=n)
        (got,) = session.run(None, {"clip": clip.numpy(), "boxes": boxes.numpy()})
        assert got.shape == (batch, n, 512)
        with torch.no_grad():
            assert _rel_err(got, model.roi_features(clip, boxes)) <= 1e-4


@pytest.mark.slow
def test_fp16_with_external_data():
    path = exported(fp16=True, external_data=True)
    data = path.with_name("model.onnx.data")
    assert data.is_file() and path.stat().st_size < data.stat().st_size / 10
    proto = onnx.load(str(path))
    conv_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(conv_weights) > 10  # weights are stored in fp16 ...
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # ... I/O stays float32
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _output_dims(path) == ["batch", 512] and read_metadata(path)["precision"] == "fp16"
    embedder = OnnxEmbedder(path)
    clip = tiny_clip(batch=2, size=112, seed=9)
    with torch.no_grad():
        want = load(TINY, branch="global", pretrained=False, seed=SEED)(clip)
    assert _rel_err(embedder.run(clip.numpy()), want) <= 1e-2


def test_export_noise_filter_drops_only_the_two_known_messages():
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    with warnings.catch_warnings(record=True) as caught, _torch_log_records() as logged:
        warnings.simplefilter("always")
        with known_export_noise():
            registry.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            registry.warning("'%s' does not have a 'default' overload", "x::y")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
            warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
        registry.warning("torchvision is not installed. Skipping %s", "after the export")
    assert [str(w.message) for w in caught] == ["another FutureWarning"]
    assert [r.getMessage() for r in logged] == ["'x::y' does not have a 'default' overload",
                                                "torchvision is not installed. Skipping after the export"]


def test_self_check_fails_on_a_wrong_export():
    other = load(TINY, branch="global", pretrained=False, seed=SEED + 1)  # not the exported weights
    with pytest.raises(ExportCheckError, match="above the tolerance"):
        self_check(exported(), other, with_rois=False, tolerance=1e-4)


def test_export_argument_errors(tmp_path):
    model = load(TINY, branch="global", pretrained=False)
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export_onnx(model, tmp_path / "m.onnx", opset=17)
    with pytest.raises(ValueError, match=r"--with-rois needs a region encoder \(--branch region\)"):
        export_onnx(model, tmp_path / "m.onnx", with_rois=True)
    with pytest.raises(ValueError, match="'global' or 'region'"):
        export_onnx(load(TINY, branch="full", pretrained=False), tmp_path / "m.onnx")


@pytest.mark.slow
def test_export_cli_prints_one_line_and_no_warnings():
    out, stdout, stderr = cli_exported()
    assert stderr == ""
    (line,) = stdout.splitlines()
    assert line.startswith(f"wrote {out}: ") and "ONNX Runtime vs PyTorch max abs diff" in line
    assert read_metadata(out)["branch"] == "region" and read_metadata(out)["source"].startswith(TINY)


@pytest.mark.slow
def test_region_features_dynamic_batch_parity():
    out, _, _ = cli_exported()
    assert _output_dims(out) == ["batch", 512, 4, 4, 4]
    session, _ = create_session(out)
    model = load(TINY, branch="region", pretrained=False, seed=SEED)
    for batch in (1, 3):
        clip = tiny_clip(batch=batch, size=112, seed=batch)
        (got,) = session.run(None, {"clip": clip.numpy()})
        assert got.shape == (batch, 512, 4, 4, 4)
        with torch.no_grad():
            assert _rel_err(got, model(clip)) <= 1e-4


def test_runtime_embedder_matches_torch_embed():
    embedder = OnnxEmbedder(exported())
    assert isinstance(embedder.preprocess, ClipPreprocess)  # constcl_zoo's preprocessing, not a copy
    model = load(TINY, branch="global", pretrained=False, seed=SEED)
    assert embedder.preprocess.cfg == model.preprocess.cfg
    frames = random_frames(40, seed=4)
    got = embedder.embed(frames, fps=12.0, batch_size=3)
    want = model.embed(frames, fps=12.0, precision="fp32")
    np.testing.assert_array_equal(got.start_frame, want.start_frame)
    np.testing.assert_allclose(got.end_s, want.end_s)
    assert float((got.embeddings - want.embeddings).abs().max() / want.embeddings.abs().max()) <= 1e-4
    with pytest.raises(ValueError, match=r"clips must have shape \[B, 3, 8, 112, 112\]"):
        embedder.run(np.zeros((1, 3, 8, 64, 64), np.float32))


def test_provider_selection_by_session(tmp_path):
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider: not in this onnxruntime build"):
        create_session(exported(), providers=["CUDAExecutionProvider"])
    _, provider = create_session(exported(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert provider == "CPUExecutionProvider"
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(exported()))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    with pytest.raises(OnnxMetadataError, match="no 'constcl_zoo.config' metadata"):
        OnnxEmbedder(bare)


def test_sessions_without_spinning_give_the_same_outputs():
    spinning = OnnxEmbedder(exported())
    quiet = OnnxEmbedder(exported(), threads=2, spinning=False)
    options = quiet.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ORT's default, spinning
        spinning.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    clips = tiny_clip(batch=2, frames=8, size=112).numpy()
    np.testing.assert_array_equal(quiet.run(clips), spinning.run(clips))


def _parse(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.mark.slow
def test_triton_repository_parses_with_tritons_schema(tmp_path):
    folder = write_repository(exported(), tmp_path / "repo", name="constcl_tiny", max_batch=16)
    config = _parse(folder)
    assert (config.name, config.platform, config.backend) == ("constcl_tiny", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 16
    assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [
        ("clip", [3, 8, 112, 112], model_config_pb2.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in config.output] == [("embeddings", [512])]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert (folder / "1" / "model.onnx").read_bytes() == exported().read_bytes()
    rois = _parse(write_repository(exported("region", with_rois=True), tmp_path / "repo", name="rois"))
    assert [list(i.dims) for i in rois.input] == [[3, 8, 112, 112], [-1, 4]]
    assert [list(o.dims) for o in rois.output] == [[-1, 512]]


@pytest.mark.slow
def test_triton_cli_exports_a_model_name(tmp_path):
    repo = tmp_path / "model_repository"
    assert export_main(["triton", TINY, "--random-init", "--branch", "region", "--out", str(repo),
                        "--name", "region_tiny"]) == 0
    config = _parse(repo / "region_tiny")
    assert [list(o.dims) for o in config.output] == [[512, 4, 4, 4]]
    assert (repo / "region_tiny" / "1" / "model.onnx").is_file()


def test_recognition_checkpoint_exports_clip_to_logits(tmp_path, capsys):
    labels = ["walk", "run", "jump"]
    classifier = load(TINY, task="recognition", labels=labels, pretrained=False, seed=2)
    classifier.save_pretrained(tmp_path / "clf")
    out = tmp_path / "clf.onnx"
    assert export_main(["onnx", str(tmp_path / "clf"), "--out", str(out)]) == 0
    assert "logits" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["task"] == "recognition" and json.loads(meta["labels"]) == labels
    assert json.loads(meta["task_config"])["labels"] == labels and meta["output"] == "logits"
    assert json.loads(meta["config"])["arch"] == TINY  # the encoder's config: the runtime's preprocessing
    assert _output_dims(out) == ["batch", 3]
    session = create_session(out, ["CPUExecutionProvider"])[0]
    clip = tiny_clip(batch=2, size=112)
    (got,) = session.run(None, {"clip": clip.numpy()})
    with torch.no_grad():
        assert _rel_err(got, classifier(clip)) < 1e-4
    # an encoder branch does not apply to a task checkpoint
    assert export_main(["onnx", str(tmp_path / "clf"), "--out", str(tmp_path / "x.onnx"), "--branch", "region"]) == 2
    assert "branch" in capsys.readouterr().err


def test_self_check_line_has_no_nan() -> None:
    """A tracker export measures only the relative difference: its line says so instead of "max abs diff nan"."""
    from export.onnx import ExportReport

    tracker = ExportReport(Path("t"), {}, {}, None, 2.5e-7)
    assert tracker.check_line() == "ONNX Runtime vs PyTorch relative diff 2.5e-07"
    encoder = ExportReport(Path("e"), {}, {}, 1.2e-6, 3e-7)
    assert encoder.check_line() == "ONNX Runtime vs PyTorch max abs diff 1.2e-06 (3e-07 relative)"


def test_precision_flag_and_its_deprecated_spellings(tmp_path, capsys, monkeypatch) -> None:
    """``--precision fp32|fp16|int8`` is the flag; ``--fp16`` and ``--int8`` still work, hidden from ``--help``, each
    with one line on stderr naming its replacement; spellings that disagree are refused in one line."""
    from export.onnx import ExportReport

    asked = []

    def export_from_name(name, out, **options):  # what the command asks for, without exporting
        asked.append(options["precision"])
        return ExportReport(Path(out), {}, {}, 0.0, 0.0)

    monkeypatch.setattr("export.onnx.export_from_name", export_from_name)
    out = str(tmp_path / "m.onnx")
    assert export_main(["onnx", TINY, "--random-init", "--out", out]) == 0
    assert export_main(["onnx", TINY, "--random-init", "--precision", "fp16", "--out", out]) == 0
    assert capsys.readouterr().err == ""
    assert export_main(["onnx", TINY, "--random-init", "--fp16", "--out", out]) == 0
    assert asked == ["fp32", "fp16", "fp16"]
    assert capsys.readouterr().err == "python -m export onnx: warning: --fp16 is deprecated; use --precision fp16\n"
    assert export_main(["onnx", TINY, "--random-init", "--int8", "--out", out]) == 2  # the int8 path: calibration
    note, error = capsys.readouterr().err.splitlines()
    assert note == "python -m export onnx: warning: --int8 is deprecated; use --precision int8"
    assert error.startswith("python -m export onnx: error: --precision int8 needs --calibration")
    assert export_main(["onnx", TINY, "--random-init", "--fp16", "--precision", "fp32", "--out", out]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("python -m export onnx: error: --fp16 and --precision fp32 "
                                                        "disagree: give one --precision")
    assert export_main(["onnx", TINY, "--random-init", "--fp16", "--int8", "--out", out]) == 2
    assert "--fp16 and --int8 disagree" in capsys.readouterr().err
    assert asked == ["fp32", "fp16", "fp16"]
    with pytest.raises(SystemExit):
        export_main(["onnx", "--help"])
    help_text = capsys.readouterr().out
    assert "--precision {fp32,fp16,int8}" in help_text and "--fp16" not in help_text and "--int8 " not in help_text
    with pytest.raises(SystemExit):
        export_main(["serve", "--help"])
    assert "--precision {fp32,fp16}" in capsys.readouterr().out
