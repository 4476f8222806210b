"""localize(): key frames, given or detected boxes, tracks; the detectors; the CLI; the ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from constcl_zoo import cli, load
from constcl_zoo.inference.detection import Detections, HogPersonDetector, OnnxPersonDetector, PersonDetector
from constcl_zoo.inference.visualize import Mp4Writer
from constcl_zoo.tasks.localization.infer import KeyFrameResult, PersonResult, link_tracks

from .conftest import SHARED

LABELS = ["left", "right", "up"]


def _model():
    return load("constcl_r3d14_w16", task="localization", labels=LABELS, pretrained=False,
                head={"num_frames": 4, "frame_stride": 2, "short_side": 48})


def _video(t: int = 30, fps: float = 10.0) -> np.ndarray:
    """A white square moving right on grey: ``[t, 64, 96, 3]``."""
    frames = np.full((t, 64, 96, 3), 90, np.uint8)
    for i in range(t):
        x = 10 + i
        frames[i, 20:44, x:x + 16] = 250
    return frames


class FixedDetector:
    """A detector double: the moving square's true box, so tracks are known."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame: np.ndarray) -> Detections:
        self.calls += 1
        cols = np.nonzero((frame[30] > 200).all(-1))[0]
        box = np.array([[cols.min() / 96, 20 / 64, (cols.max() + 1) / 96, 44 / 64]], np.float32)
        return Detections(box, np.array([0.9], np.float32))


def test_localize_with_detector_and_given_boxes() -> None:
    model = _model()
    frames = _video()
    det = FixedDetector()
    assert isinstance(det, PersonDetector)
    result = model.localize(frames, fps=10.0, detector=det, score_threshold=0.0, top_k=2)
    assert [round(f.time_s, 2) for f in result.frames] == [0.5, 1.5, 2.5] and det.calls == 3
    assert [f.frame_index for f in result.frames] == [5, 15, 25]
    assert result.num_tracks == 1  # the square is linked across key frames
    person = result.frames[1].persons[0]
    assert len(person.actions) == 2 and person.probs.shape == (3,)
    np.testing.assert_allclose(person.box_px, [25, 20, 41, 44], atol=1e-4)
    # the probabilities equal the model's on the same clip (frames 11, 13, 15, 17 centred on key frame 15)
    clip = model.clip_preprocess(frames[[11, 13, 15, 17]], crop=False)[None]
    with torch.no_grad():
        want = torch.sigmoid(model(clip, torch.from_numpy(person.box[None, None])))[0, 0].numpy()
    np.testing.assert_allclose(person.probs, want, rtol=1e-4, atol=1e-5)
    # at the ends the first / last frame repeats; the last key frame's clip is clamped to frame 29
    given = model.localize(frames, fps=10.0, boxes={0.0: [[0.1, 0.3, 0.3, 0.7, 0.8]], 2.9: [[0.5, 0.3, 0.7, 0.7]]},
                           score_threshold=1.0)
    assert [f.frame_index for f in given.frames] == [0, 29]
    assert given.frames[0].persons[0].score == pytest.approx(0.8) and given.frames[0].persons[0].actions == []
    json.dumps(given.to_dict())


def test_localize_rejects_bad_boxes() -> None:
    model = _model()
    with pytest.raises(ValueError, match="normalised"):
        model.localize(_video(), fps=10.0, boxes={1.0: [[10, 20, 30, 40]]})
    with pytest.raises(ValueError, match="times"):
        model.localize(_video(), fps=10.0, boxes=[[[0.1, 0.1, 0.2, 0.2]]])


def test_tracks_link_by_iou_with_motion() -> None:
    def frame(*xs: float) -> KeyFrameResult:
        return KeyFrameResult(0.0, 0, [PersonResult(np.array([x, 0.2, x + 0.1, 0.6], np.float32),
                                                    np.zeros(4), 1.0) for x in xs])

    # two people walking apart, speeding up from 0.04 to 0.08 per key frame: the last step's IoU with the previous
    # box is 0.11 (below the threshold) but the constant-velocity prediction overlaps 0.43; a new person appears
    frames = [frame(0.40, 0.50), frame(0.36, 0.54), frame(0.28, 0.62, 0.9)]
    link_tracks(frames)
    ids = [[p.track_id for p in f.persons] for f in frames]
    assert ids[0] == [0, 1] and ids[2] == [0, 1, 2]


def test_hog_detector_finds_pedestrians() -> None:
    from constcl_zoo.inference.video import iter_video_file

    video = SHARED / "data" / "videos" / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} not found: ../shared/data is not beside this checkout")
    for f in iter_video_file(video):
        if f.index == 100:
            found = HogPersonDetector(min_score=0.5).detect(f.rgb)
            break
    assert len(found) >= 2
    assert (found.boxes[:, 2] > found.boxes[:, 0]).all() and (np.diff(found.scores) <= 0).all()
    heights = (found.boxes[:, 3] - found.boxes[:, 1]) * 576
    assert ((heights > 60) & (heights < 300)).all()  # pedestrian sized


def test_onnx_person_detector(tmp_path) -> None:
    class Tiny(torch.nn.Module):  # a "detector": the brightest column band's box, score = its brightness
        def forward(self, image: torch.Tensor):
            col = image.mean(dim=(0, 1, 2))
            x = col.argmax().float() / image.shape[-1]
            box = torch.stack([x, x * 0 + 0.1, x + 0.1, x * 0 + 0.9])[None]
            return box, col.max()[None]

    path = tmp_path / "det.onnx"
    torch.onnx.export(Tiny(), (torch.rand(1, 3, 64, 96),), str(path), input_names=["image"],
                      output_names=["boxes", "scores"], dynamic_axes={"image": {2: "h", 3: "w"}}, dynamo=False)
    det = OnnxPersonDetector(path, min_score=0.1)
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[:, 48] = 255
    found = det.detect(frame)
    np.testing.assert_allclose(found.boxes, [[0.5, 0.1, 0.6, 0.9]], atol=1e-6)
    assert found.scores[0] == pytest.approx(1.0)
    bad = tmp_path / "bad.onnx"
    torch.onnx.export(Tiny(), (torch.rand(1, 3, 64, 96),), str(bad), input_names=["x"],
                      output_names=["boxes", "scores"], dynamo=False)
    with pytest.raises(RuntimeError, match="one input 'image'"):
        OnnxPersonDetector(bad)


def _cli(argv: list[str]) -> int:
    return cli.main(["localize", *argv])  # the console script's entry point (COMMANDS lists localize)


def test_cli_writes_video_and_json(tmp_path, capsys) -> None:
    video = tmp_path / "square.mp4"
    with Mp4Writer(video, fps=10) as w:
        for f in _video():
            w.write(f)
    model = _model()
    model.save_pretrained(tmp_path / "loc")
    (tmp_path / "boxes.csv").write_text("square,0001,0.2,0.3,0.5,0.7,,0.9\nsquare,0002,0.4,0.3,0.7,0.7,,0.2\n")
    rc = _cli([str(video), "--model", str(tmp_path / "loc"), "--boxes", str(tmp_path / "boxes.csv"),
               "--box-threshold", "0.5", "--score-threshold", "0", "--out", str(tmp_path / "out.mp4"),
               "--json", str(tmp_path / "out.json"), "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert [k["time_s"] for k in result["key_frames"]] == [1.0]
    assert result["key_frames"][0]["persons"][0]["actions"][0]["label"] in LABELS
    import av

    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 30
    assert "1 key frames" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["missing.mp4", "--out", "o.mp4"], "no video file at missing.mp4"),
    (["{video}", "--out", "o.avi"], "written as .mp4"),
    (["{video}", "--json", "o.json", "--boxes", "nope.csv"], "--boxes: no file at nope.csv"),
    (["{video}"], "nothing to write"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, message) -> None:
    video = tmp_path / "v.mp4"
    with Mp4Writer(video, fps=10) as w:
        w.write(_video(1)[0])
    argv = [a.format(video=video) for a in argv]
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("constcl-zoo localize: error:") and message in err and "\n" not in err


def test_onnx_export_of_a_localization_checkpoint(tmp_path, capsys) -> None:
    """`python -m export onnx CHECKPOINT` dispatches a localization checkpoint to the localizer graph: clip + boxes
    -> scores with a dynamic box count, self-checked, labels in the metadata."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from export.__main__ import main as export_main

    model = _model()
    model.save_pretrained(tmp_path / "loc")
    assert export_main(["onnx", str(tmp_path / "loc"), "--out", str(tmp_path / "loc.onnx")]) == 0
    assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "loc.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["clip", "boxes"]
    assert session.get_outputs()[0].shape[1:] == ["num_boxes", 3]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["constcl_zoo.labels"]) == LABELS and meta["constcl_zoo.task"] == "localization"
    clip = np.random.default_rng(0).uniform(-1, 1, (1, 3, 4, 48, 64)).astype(np.float32)
    boxes = np.array([[[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.9, 0.8], [0, 0, 1, 1], [0.2, 0.2, 0.3, 0.3],
                       [0.6, 0.1, 0.7, 0.5], [0.3, 0.3, 0.6, 0.6], [0.1, 0.5, 0.2, 0.9]]], np.float32)
    (got,) = session.run(None, {"clip": clip, "boxes": boxes})
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(clip), torch.from_numpy(boxes))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # encoder-only flags are refused in one line
    assert export_main(["onnx", str(tmp_path / "loc"), "--precision", "fp16", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "action localizer" in err and "--precision fp16" in err and "\n" not in err


def test_encoder_model_with_labels_keeps_its_weights_unless_random_init(tmp_path, capsys) -> None:
    """One convention: a named or saved encoder given to localize --model means its weights; --random-init (the
    one flag for random weights) gives the seeded random init."""
    from constcl_zoo.workflows.loaders import load_localizer

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        mine, reference = a.state_dict(), b.state_dict()
        assert mine.keys() == reference.keys()
        return all(torch.equal(mine[k], reference[k]) for k in mine)

    saved = load("constcl_r3d14_w16", branch="region", pretrained=False, seed=5)
    saved.save_pretrained(tmp_path / "enc")
    assert same(load_localizer(str(tmp_path / "enc"), LABELS).encoder, saved)  # its saved weights
    published = load("constcl_r3d14_w16", branch="region")
    assert same(load_localizer("constcl_r3d14_w16", LABELS).encoder, published)  # the published ones
    random = load_localizer("constcl_r3d14_w16", LABELS, random_init=True, seed=2).encoder
    assert same(random, load("constcl_r3d14_w16", branch="region", pretrained=False, seed=2))
    assert not same(random, published)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")
    assert _cli([str(video), "--random-init", "--json", str(tmp_path / "r.json")]) == 2
    assert "--random-init needs --model" in capsys.readouterr().err
    assert _cli([str(video), "--model", "constcl_r3d50", "--labels", "a,b", "--json", str(tmp_path / "r.json")]) == 2
    assert "Use --random-init for a random init" in capsys.readouterr().err
