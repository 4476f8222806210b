"""Tracker training parts: pair geometry, SiamFC labels, balanced / focal loss, a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.tasks.tracking import TrackerConfig
from training.tasks.tracking.datasets import Sequence
from training.tasks.tracking.pairs import PairConfig, SequencePairs, make_pair, response_labels
from training.tasks.tracking.train import TrackTrainConfig, siamfc_loss, train_tracker

cv2 = pytest.importorskip("cv2")


def test_make_pair_puts_target_at_the_shift():
    frames = torch.full((5, 200, 300, 3), 10, dtype=torch.uint8)
    frames[:, 90:110, 140:160] = 255   # a 20x20 target centred at (150, 100)
    cfg = TrackerConfig(exemplar_size=63, search_size=127)
    box = np.array([140.0, 90.0, 20.0, 20.0])
    z, x, shift = make_pair(frames, box, frames, box, cfg, PairConfig(max_scale=1.0), np.random.default_rng(3))
    assert z.shape == (3, 5, 63, 63) and x.shape == (3, 5, 127, 127)
    ys, xs = np.nonzero(x[0, 2].numpy() > 128)
    np.testing.assert_allclose([xs.mean() - 63, ys.mean() - 63], shift.numpy(), atol=1.0)
    ys, xs = np.nonzero(z[0, 2].numpy() > 128)
    np.testing.assert_allclose([xs.mean(), ys.mean()], [31, 31], atol=1.0)


def test_labels_and_balanced_loss():
    labels = response_labels(torch.tensor([[0.0, 0.0], [16.0, 0.0]]), 9, 8, radius=8.0)
    assert labels[0, 0, 4, 4] == 1 and labels[0].sum() == 5 and labels[1, 0, 4, 6] == 1
    logits = torch.zeros(2, 1, 9, 9)
    assert siamfc_loss(logits, labels).item() == pytest.approx(np.log(2))  # half positives, half negatives
    good = labels * 10 - 5
    assert siamfc_loss(good, labels) < 0.01 < siamfc_loss(-good, labels)
    assert siamfc_loss(good, labels, focal=True) < siamfc_loss(-good, labels, focal=True)


def test_short_training_run_writes_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "seq"
    folder.mkdir()
    boxes = []
    for i in range(6):
        img = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        img[30:54, 30 + 4 * i:54 + 4 * i] = (255, 200, 0)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), img)
        boxes.append([30 + 4 * i, 30, 24, 24])
    seq = Sequence("seq", tuple(sorted(folder.glob("*.jpg"))), np.array(boxes, float))
    tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False,
                   head={"exemplar_size": 63, "search_size": 127})
    data = SequencePairs([seq], tracker.tracker_config, PairConfig(max_gap=2, pairs_per_epoch=4))
    before = tracker.head.adjust_x.weight.clone()
    enc_before = tracker.encoder.backbone.stem.conv.weight.clone()
    ckpt = train_tracker(tracker, data, TrackTrainConfig(steps=2, batch_size=2), tmp_path / "run", log=None)
    assert not torch.equal(before, tracker.head.adjust_x.weight)
    assert torch.equal(enc_before, tracker.encoder.backbone.stem.conv.weight)   # frozen backbone
    again = load(str(ckpt))
    assert torch.equal(again.head.adjust_x.weight, tracker.head.adjust_x.weight)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
