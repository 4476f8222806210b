"""Normalised correlation in the tracker: the ZNCC function, the training-free NCC tracker, the per-frame
confidence, and training-free tracker checkpoints (config.json only) through ``load()``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.tasks.tracking import (
    NCC_CONFIG,
    NCCTracker,
    TrackerConfig,
    normalized_cross_correlation,
)

pytest.importorskip("cv2")


def _brute_zncc(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    hz, wz = z.shape[-2:]
    out = torch.empty(x.shape[0], 1, x.shape[-2] - hz + 1, x.shape[-1] - wz + 1, dtype=torch.float64)
    a = z[0].double().flatten()
    a = a - a.mean()
    for b in range(x.shape[0]):
        for i in range(out.shape[-2]):
            for j in range(out.shape[-1]):
                w = x[b, :, i:i + hz, j:j + wz].double().flatten()
                w = w - w.mean()
                out[b, 0, i, j] = (a @ w) / (a.norm() * w.norm())
    return out


def test_zncc_matches_the_definition_and_ignores_gain_and_offset():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 3, 3, generator=g)
    x = torch.randn(2, 4, 7, 8, generator=g)
    got = normalized_cross_correlation(z, x)
    assert got.shape == (2, 1, 5, 6)
    torch.testing.assert_close(got.double(), _brute_zncc(z, x), atol=1e-5, rtol=1e-5)
    # a window that is an affine copy of the exemplar scores 1; scaling the whole search map changes nothing
    x[1, :, 2:5, 3:6] = 3.0 * z[0] + 7.0
    got = normalized_cross_correlation(z, x)
    assert float(got[1, 0, 2, 3]) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(normalized_cross_correlation(z, 10 * x - 4), got, atol=1e-4, rtol=1e-4)


def test_zncc_of_a_constant_window_is_zero_not_nan():
    z = torch.randn(1, 2, 3, 3)
    x = torch.ones(1, 2, 5, 5)
    assert torch.equal(normalized_cross_correlation(z, x), torch.zeros(1, 1, 3, 3))


def _textured_target_video(n: int = 30, leave_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A textured 24x24 target moving right 2 px a frame over a smooth background; from ``leave_at`` it jumps
    out of the frame. Returns frames ``[n, 120, 160, 3]`` and the true boxes."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    background = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n):
        frame = background.copy()
        x, y = 30 + 2 * i, 48
        if leave_at is None or i < leave_at:
            frame[y:y + 24, x:x + 24] = texture
        frames.append(frame)
        boxes.append((x, y, 24, 24))
    return np.stack(frames), np.array(boxes, dtype=np.float64)


def test_ncc_tracker_follows_a_moving_target():
    frames, truth = _textured_target_video()
    result = NCCTracker().track(frames, truth[0])
    assert len(result) == len(frames)
    assert np.abs(result.boxes[:, :2] - truth[:, :2]).max() < 3.0
    assert result.scores[0] == 1.0 and (result.scores[1:] > 0.9).all()


def test_confidence_drops_when_the_target_leaves():
    frames, truth = _textured_target_video(n=24, leave_at=12)
    scores = NCCTracker().track(frames, truth[0]).scores
    visible, gone = scores[1:12], scores[13:]
    assert visible.min() > gone.max(), (visible, gone)
    assert visible.mean() - gone.mean() > 0.3


def test_pixel_tracker_checkpoint_round_trip(tmp_path):
    config = dataclasses.replace(NCC_CONFIG, num_scales=3, window_influence=0.25)
    NCCTracker(config, {"chosen_on": "test"}).save_pretrained(tmp_path / "ncc")
    data = json.loads((tmp_path / "ncc" / "config.json").read_text())
    assert data["features"] == "pixels" and data["task"] == "tracking"
    tracker = load(tmp_path / "ncc")
    assert isinstance(tracker, NCCTracker) and tracker.tracker_config == config
    assert load(tmp_path / "ncc", task="tracking").config.provenance == {"chosen_on": "test"}
    with pytest.raises(ValueError, match="not 'localization'"):
        load(tmp_path / "ncc", task="localization")
    with pytest.raises(ValueError, match="parameters are fixed"):
        load(tmp_path / "ncc", head={"num_scales": 1})


def test_pixel_tracker_config_refuses_unknown_fields(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"task": "tracking", "features": "pixels",
                                                    "head": {"exemplar_size": 32, "warp_speed": 9}}))
    with pytest.raises(ValueError, match="warp_speed"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({"task": "tracking", "features": "pixels",
                                                    "head": {"correlation": "mean"}}))
    with pytest.raises(ValueError, match="correlation is 'zncc'"):
        load(folder)


def test_tracker_config_refuses_unknown_correlation_and_endpoint():
    with pytest.raises(ValueError, match="correlation"):
        TrackerConfig(correlation="cosine-ish")
    with pytest.raises(ValueError, match="endpoint"):
        TrackerConfig(endpoint="res2")
