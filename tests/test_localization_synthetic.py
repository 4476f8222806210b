"""The synthetic AVA-format dataset: files in the AVA formats, deterministic, labels that follow the motion."""

from __future__ import annotations

import numpy as np

from constcl_zoo.formats import ava
from training.tasks.localization.data import AvaClips, collate, key_frame_clip
from training.tasks.localization.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(num_videos=3, val_videos=1, seconds=4, fps=8, width=96, height=64, max_people=2,
                     excluded_fraction=0.34, seed=3)


def test_generator_writes_ava_files_deterministically(tmp_path) -> None:
    a, b = generate(tmp_path / "a", SPEC), generate(tmp_path / "b", SPEC)
    for name in ("ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv",
                 "ava_val_predicted_boxes.csv"):
        assert (a / "annotations" / name).read_text() == (b / "annotations" / name).read_text(), name
    full = ava.read_labelmap(a / "annotations" / "ava_action_list_v2.2.pbtxt")
    evaluated = ava.read_labelmap(a / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    assert len(full) == 7 and [x.id for x in evaluated] == [1, 2, 3, 4, 5, 6]
    rows = ava.read_ava_csv(a / "annotations" / "ava_train_v2.2.csv")
    assert {r.timestamp for r in rows} <= {1, 2, 3}
    for person in ava.group_persons(rows).values():
        for p in person:
            assert not ({1, 2} <= p.actions or {3, 4} <= p.actions or {5, 6} <= p.actions)  # opposite motions
            assert 7 not in p.actions or p.actions == {7}  # "stand still" only alone
    excluded = ava.read_excluded(a / "annotations" / "ava_val_excluded_timestamps_v2.2.csv")
    val_keys = {r.key for r in ava.read_ava_csv(a / "annotations" / "ava_val_v2.2.csv")}
    assert not excluded & val_keys
    people = ava.read_person_boxes(a / "annotations" / "ava_val_predicted_boxes.csv", threshold=0.5)
    assert set(people) == val_keys


def test_clips_around_key_frames(tmp_path) -> None:
    from constcl_zoo import load

    root = generate(tmp_path / "d", SPEC)
    model = load("constcl_r3d14_w16", task="localization", labels=["l", "r", "u", "d", "g", "s"],
                 head={"num_frames": 4, "frame_stride": 2, "short_side": 48}, pretrained=False)
    labels = ava.read_labelmap(root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    data = AvaClips(root / "annotations" / "ava_train_v2.2.csv", root / "videos", labels, model.clip_preprocess)
    sample = data[0]
    assert sample["clip"].shape == (3, 4, 48, 72)  # whole 96x64 frames at short side 48
    video = data._video(sample["video_id"])
    assert len(video.frames) == SPEC.seconds * SPEC.fps + 1
    # the person's box on the key frame covers pixels unlike the background around it
    box = sample["boxes"][0].numpy() * np.array([72, 48, 72, 48])
    frame = video.frames[video.index_at(sample["timestamp"])]
    x1, y1, x2, y2 = box.round().astype(int)
    body = frame[(y1 + y2) // 2 + 2:y2 - 1, x1 + 1:x2 - 1].reshape(-1, 3).mean(0)
    assert np.abs(body - frame.reshape(-1, 3).mean(0)).max() > 20
    assert key_frame_clip(2, 4, 2, 10) == [0, 0, 2, 4] and key_frame_clip(9, 4, 2, 10) == [5, 7, 9, 9]
    batch = collate([data[0], data[1]])
    assert batch["clip"].shape[0] == 2 and batch["mask"].sum() == len(data[0]["boxes"]) + len(data[1]["boxes"])
