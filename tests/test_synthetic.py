"""The synthetic benchmark generators (:mod:`training.synthetic`): real layouts that the project's readers take,
truthful boxes and labels, and the same output for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.synthetic.recognition import CLASSES, RecognitionSpec, generate_recognition
from training.synthetic.scene import SceneSpec, background, random_people, render, texture
from training.synthetic.tracking import TrackingSpec, generate_tracking

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def test_render_boxes_are_where_the_people_are_drawn() -> None:
    spec = SceneSpec()
    rng = np.random.default_rng(0)
    back = background(spec, rng, [])
    people = random_people(spec, rng, 2, 3, [])
    for frame, boxes in render(spec, back, people, 31):
        assert boxes.shape == (2, 4)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= spec.width and 0 <= y1 < y2 <= spec.height  # planned to stay inside
            inner = frame[round(y1) + 2:round(y2) - 2, round(x1) + 2:round(x2) - 2].astype(int)
            outside = back[round(y1) + 2:round(y2) - 2, round(x1) + 2:round(x2) - 2].astype(int)
            assert np.abs(inner - outside).mean() > 5  # the person covers its box


def test_textures_come_from_the_source_videos() -> None:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip("../shared/data/videos is missing (CI has it)")
    sources = sorted(SHARED_VIDEOS.iterdir())
    a = texture(np.random.default_rng(1), sources)
    b = texture(np.random.default_rng(1), [])
    assert a.shape == b.shape == (48, 48, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)


def test_tracking_sequences_read_back_and_repeat_with_the_seed(tmp_path) -> None:
    from training.tasks.tracking.data import read_dataset

    spec = TrackingSpec(num_sequences=2, seconds=2, seed=5)
    generate_tracking(tmp_path / "a", spec)
    generate_tracking(tmp_path / "b", spec)
    sequences = read_dataset(tmp_path / "a")
    assert [s.name for s in sequences] == ["synth_track000", "synth_track001"]
    for seq in sequences:
        assert len(seq) == 2 * spec.scene.fps + 1
        boxes = np.asarray(seq.boxes)
        assert boxes.shape == (len(seq), 4) and (boxes[:, 2:] > 5).all()
        assert np.abs(np.diff(boxes[:, :2], axis=0)).max() <= spec.scene.speed / spec.scene.fps * 2 + 1e-6
    for name in ("synth_track000/groundtruth.txt", "list.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    other = generate_tracking(tmp_path / "c", TrackingSpec(num_sequences=1, seconds=2, seed=6))
    assert (other / "synth_track000/groundtruth.txt").read_text() != (
        tmp_path / "a/synth_track000/groundtruth.txt").read_text()


def test_recognition_videos_move_the_way_their_class_says(tmp_path) -> None:
    from training.tasks.recognition.data import load_splits

    out = generate_recognition(tmp_path / "rec", RecognitionSpec(train_per_class=1, val_per_class=1, seconds=2))
    train, val = load_splits("folder", out / "train", out / "val", None, 1)
    assert train.classes == tuple(sorted(CLASSES)) and len(train.paths) == len(val.paths) == len(CLASSES)
    # The label is the truth: render the same people as the generator does and check their motion.
    spec = RecognitionSpec().scene
    for name, motion in CLASSES.items():
        from training.synthetic.recognition import _person

        person = _person(spec, np.random.default_rng(0), motion, 2, [], (200, 50, 50))
        boxes = np.stack([b[0] for _, b in render(spec, background(spec, np.random.default_rng(0), []), [person],
                                                    21, plan=False)])
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        shift = centre[-1] - centre[0]
        assert np.allclose(np.sign(shift.round(3)), motion[:2]), name
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= spec.width).all() and (boxes[:, 3] <= spec.height
                                                                                        ).all()
