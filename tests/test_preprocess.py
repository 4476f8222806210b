from __future__ import annotations

import numpy as np
import pytest
import torch

from constcl_zoo import ClipPreprocess, PreprocessConfig, load

from .conftest import TINY


def test_model_carries_its_preprocessing():
    model = load(TINY, pretrained=False)
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 240, 320, 3), dtype=np.uint8)
    clip = model.preprocess(frames)
    assert clip.shape == (3, 8, 112, 112) and clip.dtype == torch.float32
    assert -1.0 <= clip.min() and clip.max() <= 1.0
    with torch.no_grad():
        assert model(clip[None]).shape == (1, 512)
    assert "crop_size=112" in repr(model.preprocess)


def test_value_range_and_centre_crop_without_resize():
    pre = ClipPreprocess(PreprocessConfig(crop_size=4, resize_short_side=4))
    frames = np.zeros((2, 4, 10, 3), dtype=np.uint8)
    frames[..., 3:, :] = 255  # columns 3.. white
    frames[..., 7:, 1] = 0  # columns 7.. magenta
    clip = pre(frames)  # crop columns 3..6
    assert clip.shape == (3, 2, 4, 4)
    torch.testing.assert_close(clip[:, :, :, :], torch.ones(3, 2, 4, 4))
    frames[..., 3, 0] = 0
    clip = pre(torch.from_numpy(frames))
    assert clip[0, 0, 0, 0] == -1.0 and clip[1, 0, 0, 0] == 1.0


def test_short_side_resize_keeps_aspect_and_is_batched():
    pre = ClipPreprocess(PreprocessConfig(crop_size=112, resize_short_side=128))
    assert pre.output_size(360, 480) == (128, 171)
    assert pre.output_size(480, 360) == (171, 128)
    frames = torch.full((2, 3, 360, 480, 3), 51, dtype=torch.uint8)
    clip = pre(frames)
    assert clip.shape == (2, 3, 3, 112, 112)
    torch.testing.assert_close(clip, torch.full_like(clip, 51 / 255 * 2 - 1))
    assert pre.frame_indices(10)[:3] == [10, 12, 14] and pre.clip_span == 31


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.zeros((8, 32, 32, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((8, 32, 32), dtype=np.uint8), ValueError, r"\[T, H, W, 3\]"),
        (np.zeros((8, 3, 32, 32), dtype=np.uint8), ValueError, r"got shape \(8, 3, 32, 32\)"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), ValueError, "empty"),
        ([[1, 2, 3]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_frames(frames, error, match):
    pre = ClipPreprocess(PreprocessConfig())
    with pytest.raises(error, match=match):
        pre(frames)


def test_crop_larger_than_resize_is_rejected():
    with pytest.raises(ValueError, match="resize_short_side"):
        ClipPreprocess(PreprocessConfig(crop_size=224, resize_short_side=200))
