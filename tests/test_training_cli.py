"""``python -m training``: user errors are one line and exit status 2 (config values, run folders, TF checkpoints,
export and publish), and the exported model card records no absolute local path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from constcl_zoo import load
from constcl_zoo.checkpoint import save_checkpoint
from training.__main__ import main
from training.pretrain.config import cpu_smoke
from training.release.card import model_card

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process; assert a one-line error with exit status 2 and return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("override", "named"), [
    ("optim.lr=abc", "optim.lr"),
    ("optim.lrr=1", "optim.lrr"),
    ("optimizer.lr=1", "optimizer"),
    ("optim.warmup_steps=40", "optim.warmup_steps"),
    ("optim.lr=-1", "optim.lr"),
    ("run.steps=0", "run.steps"),
    ("data.batch_size=0", "data.batch_size"),
    ("augment.flip_p=2", "augment.flip_p"),
    ("augment.crop_area=[0.9,0.1]", "augment.crop_area"),
    ("loss.local_temperature=0", "loss.local_temperature"),
    ("boxes.method=sift", "boxes.method"),
    ("lr", "section.field=value"),
])
def test_config_errors_name_the_field(capsys, tmp_path, override, named):
    err = _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(tmp_path), "--out",
                          str(tmp_path / "run"), "-o", override])
    assert named in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cpu_smoke().save(run / "config.json")
    err = _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(tmp_path), "--out", str(run)])
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    err = _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(tmp_path), "--out", str(run),
                          "--resume", "--overwrite"])
    assert "contradict" in err
    (run / "config.json").write_text("{not json")
    assert "config.json" in _error(capsys, ["pretrain", "--out", str(run), "--resume"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "not a folder" in _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(tmp_path),
                                             "--out", str(afile)])


def test_a_folder_without_videos_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(tmp_path), "--out",
                          str(tmp_path / "run"), "-o", "run.progress=false"])
    assert str(tmp_path) in err


def test_convert_tf_refusals_are_one_line(capsys, tmp_path):
    bad = tmp_path / "r3d_1x_k400_200ep.tar.gz"
    bad.write_bytes(b"not a tarball at all" * 10)
    _error(capsys, ["convert-tf", str(bad), "--out", str(tmp_path / "out")])
    assert "missing" in _error(capsys, ["convert-tf", str(tmp_path / "missing.index"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "out").exists()


def test_export_checkpoint_errors_are_one_line(capsys, tmp_path):
    assert "config.json" in _error(capsys, ["export-checkpoint", str(tmp_path), "--out", str(tmp_path / "x")])
    run = tmp_path / "run"
    run.mkdir()
    cpu_smoke().save(run / "config.json")
    assert "no checkpoint" in _error(capsys, ["export-checkpoint", str(run), "--out", str(tmp_path / "x")])
    assert "--step 7" in _error(capsys, ["export-checkpoint", str(run), "--out", str(tmp_path / "x"), "--step", "7"])


def test_publish_errors_are_one_line(capsys, tmp_path):
    assert "config.json" in _error(capsys, ["publish", str(tmp_path), "--repo-id", "org/x"])
    folder = save_checkpoint(load("constcl_r3d14_w16", branch="global", pretrained=False), tmp_path / "ckpt")
    err = _error(capsys, ["publish", str(folder), "--repo-id", "org/x", "--endpoint", "http://127.0.0.1:9"])
    assert "org/x" in err and "--endpoint" in err


def test_debug_flag_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training", "pretrain", "--config", "cpu_smoke", "--videos",
                           str(tmp_path), "--out", str(tmp_path / "run"), "-o", "optim.lr=abc", "--debug"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_model_card_records_no_absolute_path(tmp_path):
    cfg = cpu_smoke().replace([f"data.videos={tmp_path / 'my_videos'}"])
    config = load("constcl_r3d14_w16", branch="full", pretrained=False).config.to_dict()
    card = model_card(cfg, 40, [], config)
    assert "`my_videos`" in card and str(tmp_path) not in card


@pytest.mark.skipif(not (SHARED / "data" / "videos" / "tree.avi").is_file(), reason="real videos not found")
def test_a_clip_length_the_backbone_cannot_stride_is_one_line(capsys, tmp_path):
    manifest = tmp_path / "videos.txt"
    manifest.write_text(f"{SHARED / 'data' / 'videos' / 'tree.avi'}\n")
    err = _error(capsys, ["pretrain", "--config", "cpu_smoke", "--videos", str(manifest), "--out",
                          str(tmp_path / "run"), "-o", "data.num_frames=7", "-o", "run.progress=false"])
    assert "data.num_frames=7" in err
