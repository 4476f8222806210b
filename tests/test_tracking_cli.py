"""``constcl-zoo track``: boxes file, H.264 MP4, progress, one-line errors with exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.cli import main

cv2 = pytest.importorskip("cv2")
av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trk") / "tracker"
    load("constcl_r3d14_w16", task="tracking", pretrained=False,
         head={"exemplar_size": 63, "search_size": 127}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq")
    for i in range(4):
        img = np.full((72, 96, 3), 30, np.uint8)
        img[20:44, 20 + 3 * i:44 + 3 * i] = 220
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), img)
    return folder


def _run(argv):
    return main(["track", *argv])  # through the package CLI: track is one of its COMMANDS


def test_track_writes_boxes_and_mp4(ckpt, frames_dir, tmp_path, capsys):
    out, boxes = tmp_path / "a.mp4", tmp_path / "b.txt"
    rc = _run([str(frames_dir), "--box", "20,20,24,24", "--model", str(ckpt), "--out", str(out),
               "--boxes-out", str(boxes), "--precision", "fp32"])
    assert rc == 0
    lines = boxes.read_text().splitlines()
    assert len(lines) == 4 and lines[0] == "20.00,20.00,24.00,24.00,1.0000"  # x,y,w,h,confidence
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(stream)) == 4
    assert "tracked 4 frames" in capsys.readouterr().err


def test_track_baseline_ncc_follows_the_square(frames_dir, tmp_path):
    boxes = tmp_path / "b.txt"
    assert _run([str(frames_dir), "--box", "20,20,24,24", "--baseline", "ncc", "--boxes-out", str(boxes)]) == 0
    rows = np.array([[float(v) for v in line.split(",")] for line in boxes.read_text().splitlines()])
    assert rows.shape == (4, 5)
    np.testing.assert_allclose(rows[:, 0], [20, 23, 26, 29], atol=1.0)  # the square moves 3 px a frame
    assert (rows[1:, 4] > 0.9).all()  # an unchanged target: confidence near 1


def test_random_init_is_the_one_flag_for_random_weights(frames_dir, tmp_path, capsys):
    from constcl_zoo.workflows.loaders import load_tracker

    fresh = load_tracker("constcl_r3d14_w16", random_init=True, head={"exemplar_size": 63, "search_size": 127})
    again = load_tracker("constcl_r3d14_w16", random_init=True, head={"exemplar_size": 63, "search_size": 127})
    for a, b in zip(fresh.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded
    published = load_tracker("constcl_r3d14_w16")  # a name means its published weights (the package's default)
    encoder = load("constcl_r3d14_w16", branch="region")
    weights = published.encoder.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in encoder.state_dict().items())
    assert not torch.equal(fresh.encoder.backbone.stem.conv.weight, published.encoder.backbone.stem.conv.weight)
    rc = _run([str(frames_dir), "--box", "20,20,24,24", "--random-init", "--boxes-out", str(tmp_path / "b.txt")])
    assert rc == 2 and "tracker as saved" in capsys.readouterr().err


def test_track_baseline_and_model_conflict(ckpt, frames_dir, tmp_path, capsys):
    rc = _run([str(frames_dir), "--box", "20,20,24,24", "--baseline", "ncc", "--model", str(ckpt),
               "--boxes-out", str(tmp_path / "b.txt")])
    assert rc == 2 and "not both" in capsys.readouterr().err


@pytest.mark.parametrize("box, video, message", [
    ("0,0,0,5", None, "is empty"),
    ("500,500,10,10", None, "outside the 96x72 frame"),
    ("1,2,3", None, "expected x,y,w,h"),
    ("1,1,5,5", "missing", "no video file or image folder"),
    ("1,1,5,5", "empty", "no image files"),
    ("1,1,5,5", "corrupt", "frame 1 is not a readable image"),
])
def test_bad_input_is_one_line_exit_2(ckpt, frames_dir, tmp_path, capsys, box, video, message):
    source = frames_dir
    if video == "missing":
        source = tmp_path / "nothing.mp4"
    elif video == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif video == "corrupt":
        source = tmp_path / "corrupt"
        source.mkdir()
        cv2.imwrite(str(source / "0000.jpg"), np.zeros((72, 96, 3), np.uint8))
        (source / "0001.jpg").write_bytes(b"not a jpeg")
    rc = _run([str(source), "--box", box, "--model", str(ckpt), "--boxes-out", str(tmp_path / "b.txt"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("constcl-zoo track: error:") and message in err[0]
    assert not (tmp_path / "b.txt").exists()


def test_empty_video_file(ckpt, tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    rc = _run([str(empty), "--box", "1,1,5,5", "--model", str(ckpt), "--boxes-out", str(tmp_path / "b.txt")])
    assert rc == 2 and "constcl-zoo track: error:" in capsys.readouterr().err
