"""Hostile inputs (issue 20, section 5): each is refused early with one line naming the file, line or option,
instead of a traceback, an exhausted machine or a silently wrong answer. The service rows are in test_serve.py,
the demo's upload cleanup in test_demo.py."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from constcl_zoo import cli, load
from constcl_zoo.checkpoint import CheckpointMismatchError
from constcl_zoo.config import MAX_CONFIG_BYTES, ConfigError
from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.formats import ava
from constcl_zoo.inference.detection import Detections, HogPersonDetector
from constcl_zoo.inference.video import FrameSizeError, image_size, iter_frames
from constcl_zoo.tasks.localization.infer import LocalizationInputError, localize
from training.__main__ import main as training_main
from training.tasks.localization.evaluate import NothingToEvaluateError, frame_map

cv2 = pytest.importorskip("cv2")


def huge_png(path: Path, width: int = 20000, height: int = 20000, rows: int = 4) -> Path:
    """A PNG whose header says ``width`` x ``height`` but which holds only ``rows`` rows: reading its size is cheap,
    decoding it would allocate ``width * height * 3`` bytes before failing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = zlib.compress(b"".join(b"\0" + bytes(3 * width) for _ in range(rows)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def one_line_error(capsys: pytest.CaptureFixture, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:"), err
    return err[0]


# --- image folders and single images: the frame-size limits of videos ---------------------------------------------

@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tif", "webp"])
def test_image_size_from_the_header(tmp_path, ext) -> None:
    path = tmp_path / f"a.{ext}"
    cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
    assert image_size(path) == (37, 53)


def test_oversized_images_are_refused_before_decoding(tmp_path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0000.png"), np.zeros((48, 64, 3), np.uint8))
    huge_png(folder / "0001.png")
    frames = iter_frames(folder)
    assert next(frames).rgb.shape == (48, 64, 3)
    start = time.perf_counter()
    with pytest.raises(FrameSizeError, match=r"0001.png: frame 1: frame size 20000x20000"):
        next(frames)
    with pytest.raises(FrameSizeError, match=r"big.png: frame 0: frame size 20000x20000"):
        next(iter_frames(huge_png(tmp_path / "big.png")))  # a single image: the same check
    assert time.perf_counter() - start < 1.0  # nothing was decoded


def test_track_folder_of_oversized_images_is_one_line(tmp_path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        huge_png(folder / f"{i:04d}.png")
    rc = cli.main(["track", str(folder), "--box", "10,10,20,20", "--no-progress",
                   "--boxes-out", str(tmp_path / "b.txt")])
    assert rc == 2
    assert "0000.png: frame 0: frame size 20000x20000" in one_line_error(capsys, "constcl-zoo track")


# --- localize: bounded options, key frames never outnumber frames --------------------------------------------------

@pytest.mark.parametrize("flag, value, words", [
    ("--hog-short-side", "15000", "--hog-short-side: HOG short side must be 0"),
    ("--hog-short-side", "100000", "from 128 to 4320 px, got 100000"),
    ("--interval", "1e-6", "--interval: interval between key frames must be from 0.001"),
    ("--interval", "nan", "got nan"),
    ("--box-threshold", "inf", "--box-threshold must be a finite number"),
])
def test_localize_option_bounds(tmp_path, capsys, flag, value, words) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")  # never opened: the options are refused first
    start = time.perf_counter()
    assert cli.main(["localize", str(video), "--json", str(tmp_path / "r.json"), "--no-actions", flag, value]) == 2
    assert words in one_line_error(capsys, "constcl-zoo localize")
    assert time.perf_counter() - start < 5


def test_hog_input_size_is_bounded() -> None:
    with pytest.raises(InvalidArgumentError, match="got 15000"):
        HogPersonDetector(short_side=15000)
    with pytest.raises(FrameSizeError, match="HOG detector input"):  # 10:1 frame at short side 4320: 43200 px
        HogPersonDetector(short_side=4320).detect(np.zeros((20, 200, 3), np.uint8))


class CountingDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame: np.ndarray) -> Detections:
        self.calls += 1
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


@pytest.mark.parametrize("interval, expected", [(0.01, 40), (0.001, 40), (0.1, 16)])
def test_key_frames_never_outnumber_frames(interval, expected) -> None:
    """40 frames at 25 fps (1.6 s): key times every ``interval`` from ``interval / 2``; at most one per frame."""
    detector = CountingDetector()
    start = time.perf_counter()
    result = localize(None, np.zeros((40, 32, 32, 3), np.uint8), fps=25.0, detector=detector, interval_s=interval)
    assert len(result.frames) == detector.calls == expected
    indices = [f.frame_index for f in result.frames]
    assert indices == sorted(set(indices))  # at most one key frame per decoded frame
    assert time.perf_counter() - start < 5
    with pytest.raises(LocalizationInputError, match="from 0.001"):
        localize(None, np.zeros((4, 32, 32, 3), np.uint8), fps=25.0, detector=detector, interval_s=1e-6)


# --- AVA files: one line naming file and line; nothing silently lower ----------------------------------------------

LABELS = 'item {\n  name: "a"\n  id: 1\n}\n'
GOOD_GT = "v,0001,0.1,0.1,0.4,0.9,1,0\n"


@pytest.mark.parametrize("which, content, words", [
    ("det", b"v,0001,0.1,0.1,0.4,0.9,1,0.9\n\xff\xfe\x00binary\n", "det.csv:2: not UTF-8 text"),
    ("det", b"v,0001,0.1,0.1,0.4,0.9,1,0.9\nv,00\x0001,0.1\n", "det.csv:2: expected 7 or 8 columns"),
    ("det", b"v," + b"7" * 100_000 + b"\n", "det.csv:1: timestamp '777"),
    ("det", b"v,1e309,0.1,0.1,0.4,0.9,1,0.9\n", "det.csv:1: timestamp '1e309' is not a number of seconds"),
    ("det", b"v,-3,0.1,0.1,0.4,0.9,1,0.9\n", "det.csv:1: timestamp '-3'"),
    ("det", b"v,0001,0.1,0.1,0.4,0.9,1,nan\n", "det.csv:1: the 8th column (score or person_id) 'nan'"),
    ("det", b"v,0001,0.1,0.1,0.4,0.9,1,inf\n", "det.csv:1: the 8th column"),
    ("det", b"v,0001,0.1,0.1,0.4,0.9,1," + b"9" * 100_000 + b"\n", "det.csv:1: the 8th column"),
    ("det", b"v,0001,0.1,0.1,0.4,0.9," + b"1" * 5000 + b",0.5\n", "det.csv:1: cannot parse"),
    ("gt", b"v,0001,0.1,0.1,0.4,0.9,1,0\n" + b"x" * (2 << 20), "gt.csv:2: a line over 1048576 bytes"),
    ("labels", b'item {\n  name: "a"\n  id: 1\n}\n\x89PNG\xff', "labels.pbtxt:5: not UTF-8 text"),
    ("labels", b'item {\n  name: "a"\n  id: -1\n}\n', "labels.pbtxt:1: block 1: id '-1' is not a class id"),
    ("labels", b'item {\n  name: "a"\n  id: 1e20\n}\n', "id '1e20' is not a class id"),
    ("labels", b'item {\n  name: "a"\n  id: 0\n}\n', "id '0' is not a class id"),
    ("gt", b"", "nothing to evaluate: none of the 1 classes"),
    ("gt", b"v,0001\nv,0002,0.1,0.1,0.4,0.9,7,0\n", "nothing to evaluate"),
])
def test_eval_ava_refuses_hostile_files(tmp_path, capsys, which, content, words) -> None:
    files = {"gt": GOOD_GT.encode(), "det": b"v,0001,0.1,0.1,0.4,0.9,1,0.9\n", "labels": LABELS.encode()}
    files[which] = content
    names = {"gt": "gt.csv", "det": "det.csv", "labels": "labels.pbtxt"}
    for key, data in files.items():
        (tmp_path / names[key]).write_bytes(data)
    rc = training_main(["eval-ava", "--gt", str(tmp_path / "gt.csv"), "--detections", str(tmp_path / "det.csv"),
                        "--labelmap", str(tmp_path / "labels.pbtxt")])
    assert rc == 2
    assert words in one_line_error(capsys, "python -m training")


def test_nothing_to_evaluate_in_memory() -> None:
    with pytest.raises(NothingToEvaluateError, match="none of the 1 classes"):
        frame_map([], [], [ava.AvaLabel(1, "a")])


def test_localize_boxes_csv_binary_is_one_line(tmp_path, capsys) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")
    (tmp_path / "boxes.csv").write_bytes(b"\x00\x01\x02\xff" * 100)
    rc = cli.main(["localize", str(video), "--no-actions", "--boxes", str(tmp_path / "boxes.csv"),
                   "--json", str(tmp_path / "r.json")])
    assert rc == 2
    assert "boxes.csv:1: not UTF-8 text" in one_line_error(capsys, "constcl-zoo localize")


# --- checkpoints: config.json and weights -----------------------------------------------------------------------------

@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    return load("constcl_r3d14_w16", branch="global", pretrained=False).save_pretrained(tmp_path / "ckpt")


def _edit_config(folder: Path, change) -> None:
    data = json.loads((folder / "config.json").read_text())
    change(data)
    (folder / "config.json").write_text(json.dumps(data))


def test_deeply_nested_or_huge_config_is_a_config_error(checkpoint) -> None:
    (checkpoint / "config.json").write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(str(checkpoint))
    with open(checkpoint / "config.json", "wb") as f:  # sparse: the size is refused before any byte is parsed
        f.truncate(300 << 20)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"over {MAX_CONFIG_BYTES >> 20} MB"):
        load(str(checkpoint))
    assert time.perf_counter() - start < 2
    (checkpoint / "config.json").write_bytes(b'{"arch": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(str(checkpoint))


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(arch="evil"), "config.arch: 'evil' is not a registered architecture"),
    (lambda d: d.update(arch="cvrl_r3d14_w16"), "config.family: 'constcl', but architecture 'cvrl_r3d14_w16'"),
    (lambda d: d["weights"].update(dtype="int8"), "weights.dtype: 'int8' is not one of ['float32']"),
    (lambda d: d["weights"].update(file="../../etc/passwd"), "weights.file"),
    (lambda d: d["weights"].update(sha256="abc"), "weights.sha256: 'abc' is not a sha256"),
    (lambda d: d["weights"].update(extra=1), "weights: unknown field(s) ['extra']"),
])
@pytest.mark.parametrize("pretrained", [True, False])
def test_unknown_config_values_are_refused(checkpoint, change, words, pretrained) -> None:
    _edit_config(checkpoint, change)
    with pytest.raises(ConfigError, match=None) as info:
        load(str(checkpoint), pretrained=pretrained)
    assert words in str(info.value) and "config.json" in str(info.value)


def test_non_finite_weights_are_refused_at_load(checkpoint) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[3]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(checkpoint / "model.safetensors"))
    _edit_config(checkpoint, lambda d: d["weights"].pop("sha256"))  # the digest would catch the edit first
    with pytest.raises(CheckpointMismatchError, match="NaN or infinite") as info:
        load(str(checkpoint))
    assert name in str(info.value)
