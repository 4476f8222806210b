"""Tracker training parts: pair geometry, SiamFC labels, balanced / focal loss, a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.tasks.tracking import SiamFCTracker, TrackerConfig
from training.tasks.tracking.config import PairConfig, TrackTrainConfig, get_preset
from training.tasks.tracking.data import make_pair, response_labels
from training.tasks.tracking.learner import PairModel, TrackLearner, build_tracker, siamfc_loss, train_tracker

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


def _sequence(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "seq"
    folder.mkdir()
    lines = []
    for i in range(6):
        img = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        img[30:54, 30 + 4 * i:54 + 4 * i] = (255, 200, 0)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), img)
        lines.append(f"{30 + 4 * i},30,24,24")
    (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    return folder


def _cfg(dataset: Path, steps: int = 2) -> TrackTrainConfig:
    return get_preset("cpu_small").replace([f"data.dataset={dataset}", f"run.steps={steps}", "optim.warmup_steps=0",
                                            "data.batch_size=2", "pairs.max_gap=2", "run.progress=false",
                                            "run.checkpoint_every=1"])


def test_track_train_on_the_engine_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    folder = _sequence(tmp_path)
    tracker = build_tracker(_cfg(folder))
    enc_before = tracker.encoder.backbone.stem.conv.weight.clone()
    ckpt = train_tracker(_cfg(folder), tmp_path / "run")
    again = load(str(ckpt))
    assert isinstance(again, SiamFCTracker)
    assert not torch.equal(again.head.adjust_x.weight, tracker.head.adjust_x.weight)  # the head trained
    assert torch.equal(again.encoder.backbone.stem.conv.weight, enc_before)  # the backbone stayed frozen
    assert again.head.norm.running_var.item() != 1.0  # the response BatchNorm learned its statistics
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and "peak_in_positive" in rows[0]
    # --resume continues the run to the new step count (the engine's exact resume) and re-exports
    train_tracker(_cfg(folder, steps=3), tmp_path / "run", resume=True)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_frozen_backbone_stays_in_eval_mode():
    tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False,
                   head={"exemplar_size": 63, "search_size": 127})
    PairModel(tracker, freeze_encoder=True).train()
    assert not tracker.encoder.training and tracker.head.training
    assert not any(p.requires_grad for p in tracker.encoder.parameters())


def test_the_head_trains_the_response_scale():
    """The logistic loss must move: on fixed features a few SGD steps take it well below log 2 (a mean correlation
    with a unit output scale left the logits ~0 and the loss at 0.69 whatever the features)."""
    torch.manual_seed(0)
    tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False,
                   head={"exemplar_size": 63, "search_size": 127})
    head = tracker.head.train()
    c = head.adjust_z.in_channels
    z = torch.rand(4, c, 8, 8)
    x = torch.rand(4, c, 16, 16) * 0.5
    x[:, :, 4:12, 4:12] = z  # the exemplar sits at the centre of each search map
    labels = response_labels(torch.zeros(4, 2), 9, 8, radius=8.0)
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(20):
        loss = siamfc_loss(head(z, x), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 < np.log(2) - 0.1 and loss.item() < 0.75 * first


def test_config_needs_a_pair_source(tmp_path):
    from training.engine import ConfigError

    with pytest.raises(ConfigError, match="only one of data.videos"):
        get_preset("cpu_small").replace(["data.videos=a", "data.dataset=b"])
    with pytest.raises(ConfigError, match="give --videos"):
        TrackLearner(get_preset("cpu_small"))._dataset(None)
