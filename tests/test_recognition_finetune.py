"""Fine-tuning (``python -m training finetune``) on a small labelled set cut from the real videos: end to end
(metrics.json, confusion.png, a task checkpoint load() reads), exact resume, head-only runs, the clip sampler and
one-line CLI errors. A random-init ``constcl_r3d14_w16`` on 4x48x48 clips: seconds per run on a CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from constcl_zoo import PreprocessConfig, load
from constcl_zoo.tasks.recognition import VideoClassifier
from training.__main__ import main
from training.data.videos import VideoEntry
from training.engine import ConfigError, read_jsonl
from training.tasks.recognition.config import PRESETS, FinetuneConfig
from training.tasks.recognition.finetune import ClipDataset

from .conftest import TINY
from .recognition_data import make_segments

SOURCES = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes x 4 training / 2 validation videos, plus one undecodable file in each split."""
    root = make_segments(tmp_path_factory.mktemp("finetune_data"), segments=6, seg_len=8, sources=SOURCES)
    classes = sorted(p.name for p in (root / "train").iterdir())
    (root / "train" / classes[0] / "broken.mp4").write_bytes(b"not a video" * 100)
    (root / "val" / classes[1] / "broken.mp4").write_bytes(b"not a video" * 100)
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--config", "cpu_small", "--train", str(data / "train"), "--val", str(data / "val"),
            "--model", TINY, "--random-init", "--out", str(out), "-o", "run.progress=false", "-o", "run.steps=4",
            "-o", "run.checkpoint_every=2", "-o", "run.eval_every=2", "-o", "run.keep_checkpoints=5", *extra]


def _step(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:08d}"


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("clips_per_s", "data_wait_fraction")} for r in rows]


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    different = [k for k in a if not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "straight"
    assert main(_args(data, out)) == 0
    return out


def test_finetune_writes_metrics_confusion_and_a_task_checkpoint(straight, data):
    classes = sorted(p.name for p in (data / "train").iterdir())
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["classes"] == classes and metrics["num_videos"] == 2 * SOURCES  # the broken one skipped
    assert set(metrics["per_class_accuracy"]) == set(classes)
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert confusion.shape == (SOURCES, SOURCES) and int(confusion.sum()) == 2 * SOURCES
    assert metrics["top1"] == pytest.approx(float(confusion.trace()) / (2 * SOURCES))
    skipped = metrics["skipped_videos"]
    assert skipped["train"] == 1 and skipped["val"] == 1 and "broken.mp4" in skipped["val_paths"][0][0]
    assert (straight / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["step"] for r in read_jsonl(straight / "eval.jsonl")] == [2, 4]
    assert read_jsonl(straight / "eval.jsonl")[-1]["top1"] == metrics["top1"]

    clf = load(straight / "checkpoint")
    assert isinstance(clf, VideoClassifier) and clf.labels == tuple(classes)
    assert clf.config.head.dropout == 0.5
    pre = clf.config.preprocess
    assert (pre.num_frames, pre.frame_stride, pre.crop_size, pre.resize_short_side) == (4, 2, 48, 56)
    training = clf.config.provenance["training"]
    assert training["command"].startswith("python -m training finetune --config cpu_small --train ")
    assert training["config"]["preset"] == "cpu_small"
    assert training["metrics"]["top1"] == metrics["top1"] and training["steps"] == 4
    # The export is the trained model: every tensor equals the final training checkpoint's.
    exported = load_file(str(straight / "checkpoint" / "model.safetensors"))
    trained = load_file(str(_step(straight, 4) / "model.safetensors"))
    assert all(torch.equal(v, trained[k]) for k, v in exported.items())
    # All layers were trained: the encoder moved away from its (seeded) initial weights.
    init = load(TINY, task="recognition", labels=classes, pretrained=False, seed=0).state_dict()
    assert not torch.equal(init["encoder.backbone.stem.conv.weight"], exported["encoder.backbone.stem.conv.weight"])
    video = next((data / "val" / classes[0]).glob("*_1.mp4"))
    result = clf.classify(video, top_k=2)
    assert len(result.top) == 2 and result.probs.shape == (SOURCES,)


def test_resume_after_half_the_steps_is_bitwise_equal_to_the_straight_run(straight, data, tmp_path):
    out = tmp_path / "resumed"
    assert main(_args(data, out)) == 0
    # What a run stopped after step 2 leaves: its step-2 checkpoint and rows up to step 2, no exports.
    shutil.rmtree(_step(out, 4))
    (out / "checkpoints" / "latest").write_text("step_00000002\n")
    for name in ("metrics.jsonl", "eval.jsonl"):
        rows = [r for r in read_jsonl(out / name) if r["step"] <= 2]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("metrics.json", "confusion.png"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoint")

    assert main(["finetune", "--out", str(out), "--resume"]) == 0
    assert "resumed from" in (out / "train.log").read_text()
    for name in ("model.safetensors", "optimizer.safetensors"):
        _assert_same_tensors(load_file(str(_step(straight, 4) / name)), load_file(str(_step(out, 4) / name)))
    state = [json.loads((_step(o, 4) / "state.json").read_text()) for o in (straight, out)]
    assert state[0]["micro_step"] == state[1]["micro_step"] == 4
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert _without_timing(rows) == _without_timing(read_jsonl(straight / "metrics.jsonl"))
    assert read_jsonl(out / "eval.jsonl") == read_jsonl(straight / "eval.jsonl")
    assert json.loads((out / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    _assert_same_tensors(load_file(str(straight / "checkpoint" / "model.safetensors")),
                         load_file(str(out / "checkpoint" / "model.safetensors")))


def test_freeze_encoder_trains_the_head_only(data, tmp_path):
    out = tmp_path / "head_only"
    assert main(_args(data, out, "-o", "run.steps=3", "-o", "optim.warmup_steps=1",
                       "-o", "model.freeze_encoder=true")) == 0
    classes = sorted(p.name for p in (data / "train").iterdir())
    init = load(TINY, task="recognition", labels=classes, pretrained=False, seed=0).state_dict()
    final = load_file(str(_step(out, 3) / "model.safetensors"))
    encoder = [k for k in init if k.startswith("encoder.")]
    # Weights and BN running statistics of the encoder are untouched (no gradient, kept in eval mode).
    assert encoder and all(torch.equal(init[k], final[k]) for k in encoder), \
        [k for k in encoder if not torch.equal(init[k], final[k])][:3]
    assert not torch.equal(init["head.fc.weight"], final["head.fc.weight"])


def _dataset(data: Path, value_range: tuple[float, float] = (-1.0, 1.0)) -> ClipDataset:
    cfg = PRESETS["cpu_small"]()
    videos = sorted((data / "train").glob("*/*_0.mp4"))
    entries = [VideoEntry(str(p), 8) for p in videos]
    pre = PreprocessConfig(num_frames=4, frame_stride=2, crop_size=48, resize_short_side=56, value_range=value_range)
    return ClipDataset(entries, list(range(len(entries))), cfg, pre)


def test_clips_depend_only_on_the_sample_number(data):
    ds = _dataset(data)
    a, b = ds[(5, 1)], ds[(5, 1)]
    assert a["clip"].shape == (3, 4, 48, 48) and int(a["label"]) == 1 and int(a["skipped"]) == 0
    assert torch.equal(a["clip"], b["clip"])
    assert not torch.equal(a["clip"], ds[(6, 1)]["clip"])  # another sample number: another crop/start/flip
    assert a["clip"].min() >= -1 and a["clip"].max() <= 1 and a["clip"].min() < 0
    unit = _dataset(data, value_range=(0.0, 1.0))[(5, 1)]["clip"]  # the encoder's value range
    torch.testing.assert_close(unit, (a["clip"] + 1) / 2)


def test_a_video_that_fails_at_read_time_is_replaced_and_counted(data):
    ds = _dataset(data)
    broken = next((data / "train").glob("*/broken.mp4"))
    ds.entries = [VideoEntry(str(broken), 8), *ds.entries]
    ds.labels = [7, *ds.labels]
    sample = ds[(0, 0)]
    assert int(sample["skipped"]) == 1 and int(sample["label"]) == 0  # the next video's label


def test_presets_validate():
    small, ucf = PRESETS["cpu_small"](), PRESETS["ucf101"]()
    assert small.model.encoder == TINY and small.run.precision == "fp32"
    assert ucf.optim.momentum == 0.9 and ucf.model.dropout == 0.5 and ucf.data.num_frames == 16
    assert ucf.optim.warmup_steps < ucf.run.steps and ucf.data.format == "ucf101"
    with pytest.raises(ConfigError, match="model.dropout"):
        small.replace(["model.dropout=1.5"])
    assert FinetuneConfig.from_dict(ucf.to_dict()) == ucf


@pytest.mark.parametrize(("extra", "message"), [
    (["-o", "optim.lr=-1"], "config optim.lr=-1.0: must be a positive number"),
    (["-o", "loss.label_smoothing=1"], "loss.label_smoothing"),
    (["-o", "data.nope=1"], "unknown field 'data.nope'"),
])
def test_a_bad_override_is_one_line_and_exit_2(data, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(_args(data, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m training: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_a_missing_train_folder_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "no_such_folder"
    assert main(["finetune", "--config", "cpu_small", "--train", str(missing), "--val", str(tmp_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and "is not a folder" in err and "\n" not in err
    assert not out.exists()  # nothing written: the next attempt needs no --overwrite
    assert main(["finetune", "--config", "cpu_small", "--out", str(out)]) == 2
    assert "give --train" in capsys.readouterr().err
