"""Training + evaluation on a synthetic AVA-format set: the trained head's frame-mAP is clearly above a random one's."""

from __future__ import annotations

import pytest

from constcl_zoo import load
from training.tasks.localization.synthetic import SyntheticSpec, generate
from training.tasks.localization.train import LocalizationData, LocalizationTask, LocalizationTrainConfig, train

HEAD = {"type": "transformer", "num_frames": 8, "frame_stride": 1, "short_side": 96}


@pytest.mark.slow
def test_trained_head_beats_random_head(tmp_path) -> None:
    root = generate(tmp_path / "synth", SyntheticSpec(num_videos=8, val_videos=2, seconds=6, seed=1))
    config = LocalizationTrainConfig(data=LocalizationData(str(root)), head=HEAD, steps=200, batch_size=8, lr=1e-3,
                                     warmup_steps=20, freeze_encoder=False, seed=0)
    task = LocalizationTask(config)
    random_map = task.validate(task.build_model()).mean_ap
    _, metrics = train(config, tmp_path / "run", log=False)
    assert metrics["val_frame_mAP"] > random_map + 0.15, (metrics, random_map)
    # the checkpoint loads as a localizer and scores the same
    again = load(tmp_path / "run" / "model")
    assert task.validate(again).mean_ap == pytest.approx(metrics["val_frame_mAP"], abs=1e-6)
